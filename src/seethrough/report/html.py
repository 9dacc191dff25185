"""The bench's HTML report: one self-contained, offline page with every game's table and cases.

Rendered with Jinja2 with autoescape on, so every name, description, error and meta string (all of
which may come from a model, a data set or a user) reaches the page as inert text. Figures are
embedded as base64 PNG data URIs; the page links nothing outside itself (no URLs, scripts, fonts
or style sheets), uses inline CSS only, and forbids anything else with a Content-Security-Policy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from matplotlib.figure import Figure

from ..bench.table import GameSection, MetricRow
from ..core.errors import InputError, InputTypeError
from ..core.io import atomic_write
from .figures import figure_to_data_uri, strip_plot

__all__ = ["write_report"]

_PAGE_INCHES = 11.4  # the page's content width (1140 px) at the figures' 100 dpi


def write_report(directory: str | os.PathLike[str], sections: Sequence[GameSection], *,
                 title: str = "seethrough bench", meta: Mapping[str, str] | None = None) -> Path:
    """Write ``directory/index.html``: a summary table, then one section (table, figure, errors) per game.

    Args:
        directory: where to write (created if missing); an existing ``index.html`` is replaced
            atomically, so a reader never sees half a page.
        sections: the games, in display order; names must be unique.
        title: the page title.
        meta: free-form facts shown under the title (command, date, seeds, ``OMP_WAIT_POLICY``...).

    Returns:
        The path of the written ``index.html``.

    Raises:
        InputTypeError: sections that are not `GameSection`s, or non-string meta.
        InputError: duplicate game names, a row filed under another game, or NaN/inf case values.

    Example:
        >>> import tempfile
        >>> row = MetricRow("ablation", "ours", "auc", 3, 0.9, 0.9, 0.8, 0.82, 0.97, 0.5, 0.7, True)
        >>> game = GameSection("ablation", "Neurons / ablation", "Find the planted dead units.", (row,),
        ...                    {"auc": {"ours": [0.8, 0.9, 1.0]}}, {"auc": True})
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     page = write_report(folder, [game]).read_text(encoding="utf-8")
        >>> page.count("<img "), "0.900" in page
        (1, True)
    """
    if isinstance(sections, (str, bytes)) or not isinstance(sections, Sequence):
        raise InputTypeError(f"sections must be a sequence of GameSection, got {type(sections).__name__}.")
    seen: set[str] = set()
    for section in sections:
        if not isinstance(section, GameSection):
            raise InputTypeError(f"sections must hold GameSection objects, got {type(section).__name__}.")
        if section.name in seen:
            raise InputError(f"game {section.name!r} appears twice in the report; merge its sections.")
        seen.add(section.name)
        strays = sorted({row.game for row in section.rows if row.game != section.name})
        if strays:
            raise InputError(f"section {section.name!r} holds rows of other games {strays}; "
                             "give each game its own GameSection.")
    facts = dict(meta or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in facts.items()):
        raise InputTypeError("meta must map strings to strings; format numbers and dates before passing them.")

    context = {
        "title": title,
        "meta": list(facts.items()),
        "rows": [_format_row(row) for section in sections for row in section.rows],
        "sections": [_section_context(section) for section in sections],
    }
    template = resources.files(__package__).joinpath("templates", "report.html.j2").read_text(encoding="utf-8")
    # autoescape=True, not select_autoescape: the template's suffix is .j2, which select_autoescape
    # would treat as not-HTML and leave unescaped.
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    page = env.from_string(template).render(context)
    target = Path(directory) / "index.html"
    atomic_write(target, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return target


def _section_context(section: GameSection) -> dict[str, Any]:
    return {
        "name": section.name,
        "item": section.item,
        "description": section.description,
        "rows": [_format_row(row) for row in section.rows],
        "image": figure_to_data_uri(_game_figure(section)),
        "alt": f"Per-case results of game {section.name}: one dot per case, a box per method, "
               "chance as a dashed line and the pass bar as a solid line.",
        "errors": list(section.errors),
    }


def _game_figure(section: GameSection) -> Figure:
    """One figure per game, one panel per metric (so the page has exactly one image per game)."""
    metrics = list(section.cases)
    n_methods = max((len(by_method) for by_method in section.cases.values()), default=1)
    panel_width = max(3.6, 0.8 * n_methods + 1.6)
    # as many panels a row as fit the page at 100 dpi without being scaled down (and at least one)
    ncols = max(1, min(len(metrics), int(_PAGE_INCHES // panel_width)))
    nrows = max(1, math.ceil(len(metrics) / ncols))
    fig = Figure(figsize=(ncols * panel_width, 3.9 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics, strict=False):
        rows = [row for row in section.rows if row.metric == metric]
        strip_plot(section.cases[metric], chance=_shared([row.chance for row in rows]),
                   bar=_shared([row.bar for row in rows]), metric=metric, title=metric,
                   higher_is_better=section.higher_is_better.get(metric, True), ax=ax)
    for ax in axes[len(metrics):]:
        ax.set_axis_off()
    if not metrics:
        axes[0].text(0.5, 0.5, "no finished cases", ha="center", va="center", usetex=False, parse_math=False)
    fig.suptitle(section.name, usetex=False, parse_math=False)
    return fig


def _shared(values: Sequence[float | None]) -> float | None:
    """The value every method shares (the line to draw), or ``None`` if absent or they differ."""
    distinct = {v for v in values if v is not None}
    return distinct.pop() if len(distinct) == 1 else None


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _format_row(row: MetricRow) -> dict[str, str]:
    verdict = {True: ("✓", "pass"), False: ("✗", "fail"), None: ("—", "na")}[row.passed]
    return {
        "game": row.game, "method": row.method, "metric": row.metric, "n": str(row.n),
        "mean": _number(row.mean), "median": _number(row.median), "worst": _number(row.worst),
        "ci": f"[{_number(row.ci_low)}, {_number(row.ci_high)}]",
        "chance": _number(row.chance), "bar": _number(row.bar), "verdict": verdict[0], "verdict_class": verdict[1],
    }
