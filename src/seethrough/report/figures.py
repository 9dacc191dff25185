"""Figures for reports: every case as a dot, a box per method, the chance level and the pass bar.

The bench shows all cases, never the best one (DESIGN.md section 5), so a metric is drawn as a strip
plot with deterministic jitter. Figures are built from `matplotlib.figure.Figure` directly, never
through pyplot, and rendered by Agg on save: making one touches no global matplotlib state (no
backend switch, no current figure, nothing to close). Labels come from untrusted names, so
mathtext and TeX are switched off on every text we draw.
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..core.errors import InputError, InputTypeError

__all__ = ["strip_plot", "figure_to_data_uri"]

_JITTER = 0.18  # half-width of a method's dot cloud, in units of the spacing between methods
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # low-discrepancy offsets: deterministic and evenly spread
_MAX_LABEL = 32  # longer method names are shortened on the axis (the tables keep them whole)
_DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/]+={0,2}")
_PLAIN_TEXT = {"usetex": False, "parse_math": False}  # a '$' in a method name is text, not mathtext


def strip_plot(values_by_method: Mapping[str, Sequence[float]], *, chance: float | None, bar: float | None,
               metric: str, title: str, higher_is_better: bool = True, ax: Axes | None = None) -> Figure:
    """Plot one metric for several methods: a jittered dot per case over a box per method.

    Args:
        values_by_method: method name to its per-case values (one dot each), in display order.
        chance: the metric's chance level, drawn as a dashed line (none if ``None``).
        bar: the pass bar, drawn as a solid line (none if ``None``).
        metric: the metric's name, on the y axis.
        title: the axes' title.
        higher_is_better: which way is good; said on the y axis.
        ax: draw into these axes (e.g. one panel of a larger figure) instead of a new figure.

    Returns:
        The figure holding the plot (``ax``'s root figure when ``ax`` is given).

    Raises:
        InputTypeError: a method's values are not a sequence of numbers.
        InputError: a NaN/inf value (named by method).

    Example:
        >>> fig = strip_plot({"ours": [0.9, 0.8, 0.95], "random": [0.5, 0.45]}, chance=0.5, bar=0.7,
        ...                  metric="auc", title="ablation")
        >>> len(fig.axes), figure_to_data_uri(fig).startswith("data:image/png;base64,")
        (1, True)
    """
    columns = {method: _finite_values(method, values) for method, values in values_by_method.items()}
    if ax is None:
        fig = Figure(figsize=(max(4.0, 1.1 * len(columns) + 2.0), 3.8), layout="constrained")
        ax = fig.add_subplot()
    else:
        parent = ax.figure
        fig = parent if isinstance(parent, Figure) else parent.figure  # a SubFigure knows its root Figure
    positions = np.arange(len(columns), dtype=float)
    filled = [(pos, vals) for pos, vals in zip(positions, columns.values(), strict=True) if vals.size]
    if filled:
        ax.boxplot([vals for _, vals in filled], positions=[pos for pos, _ in filled], widths=0.55,
                   showfliers=False, manage_ticks=False, zorder=2,
                   medianprops={"color": "black", "linewidth": 1.5}, boxprops={"color": "0.35"},
                   whiskerprops={"color": "0.35"}, capprops={"color": "0.35"})
    for i, (pos, vals) in enumerate(zip(positions, columns.values(), strict=True)):
        offsets = ((np.arange(vals.size) * _GOLDEN) % 1.0 - 0.5) * 2.0 * _JITTER
        ax.scatter(pos + offsets, vals, s=22, alpha=0.8, color=f"C{i % 10}", edgecolors="white",
                   linewidths=0.5, zorder=3)
    if chance is not None:
        ax.axhline(chance, linestyle="--", color="0.3", linewidth=1.3, zorder=1, label=f"chance = {chance:.3f}")
    if bar is not None:
        ax.axhline(bar, linestyle="-", color="tab:red", linewidth=1.5, zorder=1, label=f"pass bar = {bar:.3f}")
    if chance is not None or bar is not None:
        ax.legend(loc="best", fontsize="small", framealpha=0.85)
    labels = [f"{_shorten(method)}\n(n={vals.size})" for method, vals in columns.items()]
    slanted = len(columns) > 3 or any(len(method) > 12 for method in columns)  # long labels would overlap
    ax.set_xticks(positions, labels, rotation=25 if slanted else 0, ha="right" if slanted else "center",
                  rotation_mode="anchor", **_PLAIN_TEXT)
    ax.set_xlim(-0.6, max(len(columns), 1) - 0.4)
    ax.set_ylabel(f"{metric} ({'higher' if higher_is_better else 'lower'} is better)", **_PLAIN_TEXT)
    ax.set_title(title, **_PLAIN_TEXT)
    ax.grid(axis="y", alpha=0.3)
    if not columns:
        ax.text(0.5, 0.5, "no cases", transform=ax.transAxes, ha="center", va="center", **_PLAIN_TEXT)
    return fig


def figure_to_data_uri(fig: Figure, *, dpi: int = 100) -> str:
    """Render ``fig`` to PNG (Agg) and return it as a ``data:image/png;base64,...`` URI.

    The PNG carries no metadata (no version string), so the same figure gives the same bytes.
    The result contains only ``[A-Za-z0-9+/=:;,]`` and is safe in an HTML attribute as is.

    Raises:
        InputTypeError: ``fig`` is not a matplotlib `Figure`.
    """
    if not isinstance(fig, Figure):
        raise InputTypeError(f"figure_to_data_uri expects a matplotlib Figure, got {type(fig).__name__}.")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    if not _DATA_URI.fullmatch(uri):  # an invariant of base64, checked because reports embed it unescaped
        raise RuntimeError("the encoded figure is not a plain base64 PNG data URI; this is a bug in seethrough.")
    return uri


def _finite_values(method: str, values: Sequence[float]) -> np.ndarray:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InputTypeError(f"values for method {method!r} must be a sequence of floats, "
                             f"got {type(values).__name__}.")
    try:
        array = np.asarray([float(v) for v in values], dtype=float)
    except (TypeError, ValueError) as err:
        raise InputTypeError(f"values for method {method!r} must be numbers: {err}") from err
    if not np.isfinite(array).all():
        raise InputError(f"values for method {method!r} contain {int((~np.isfinite(array)).sum())} NaN/inf; "
                         "each case needs a finite metric (failed cases belong in the errors list).")
    return array


def _shorten(name: str) -> str:
    return name if len(name) <= _MAX_LABEL else name[: _MAX_LABEL - 1] + "…"
