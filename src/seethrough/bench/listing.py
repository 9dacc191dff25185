"""The list of games: each game's taxonomy item, methods and metrics, as the README's Markdown table.

`games_markdown` is generated from the registry (`seethrough.bench.games.GAMES`), and
`tests/test_readme.py` fails when the README's table differs from it, so the two cannot drift.
Regenerate the README's table with
``python -c "from seethrough.bench.listing import games_markdown; print(games_markdown(), end='')"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .games import GAMES
from .games.base import Game

__all__ = ["games_markdown"]


def games_markdown(games: Sequence[Game[Any, Any]] | None = None) -> str:
    """The games (all registered ones by default) as a Markdown table, one row per game.

    Columns: the game, its taxonomy item, its methods under test with the baselines in
    parentheses, and every metric as ``name (chance → bar)`` (``→ ≤ bar`` where lower is better).
    This is the README's table (`tests/test_readme.py` compares them).

    Example:
        >>> from seethrough.bench.games import GAMES
        >>> print(games_markdown([GAMES["ablation"]]).splitlines()[2])
        | `ablation` | Neurons / perturbation & ablation | zero-ablation, mean-ablation, resample-ablation (random) | precision_at_k (0.125 → 0.75), validated (0.05 → 0.8) |
    """
    lines = ["| game | taxonomy item | methods (baselines) | metrics (chance → bar) |", "|---|---|---|---|"]
    for game in GAMES.values() if games is None else games:
        tested = [m for m in game.methods if m not in game.baselines]
        baselines = [m for m in game.methods if m in game.baselines]
        methods = ", ".join(tested) + (f" ({', '.join(baselines)})" if baselines else "")
        metrics = ", ".join(f"{m.name} ({m.chance:.3g} → {'' if m.higher_is_better else '≤ '}{m.bar:.3g})"
                            for m in game.metrics)
        lines.append(f"| `{game.name}` | {game.item} | {methods} | {metrics} |")
    return "\n".join(lines) + "\n"
