"""The bench's table types: score rows (`MetricRow`) and the report's per-game sections (`GameSection`).

`seethrough.bench.runner` aggregates the ledger into these types and `seethrough.report` renders
them, so they live here, below the report (the report imports the bench, never the reverse).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["MetricRow", "GameSection"]


@dataclass(frozen=True)
class MetricRow:
    """One line of the bench table: a method's score on one metric of one game, over all its cases.

    Fields follow the ``--json`` rows of DESIGN.md section 6: ``worst`` is the worst case in the
    metric's own direction, ``[ci_low, ci_high]`` the 95% bootstrap CI of the mean, ``chance`` the
    metric's chance level, ``bar`` the pass bar and ``passed`` the verdict (``None``: no bar).
    """

    game: str
    method: str
    metric: str
    n: int
    mean: float
    median: float
    worst: float
    ci_low: float
    ci_high: float
    chance: float | None
    bar: float | None
    passed: bool | None


@dataclass(frozen=True)
class GameSection:
    """One game's part of the report: its rows, its per-case values and its failed cases.

    Attributes:
        name: the game.
        item: the taxonomy item it scores, e.g. ``"Neurons / perturbation & ablation"``.
        description: what the game plants and what counts as finding it.
        rows: the game's table lines (each ``row.game == name``).
        cases: metric name to method name to per-case values (one dot each); one plot panel per metric.
        higher_is_better: the direction of each metric (missing metrics count as higher is better).
        errors: one line per failed case, e.g. ``"ablation/random seed 3: ValueError: ..."``.
    """

    name: str
    item: str
    description: str
    rows: tuple[MetricRow, ...]
    cases: Mapping[str, Mapping[str, Sequence[float]]]
    higher_is_better: Mapping[str, bool]
    errors: tuple[str, ...] = ()
