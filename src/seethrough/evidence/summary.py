"""Honest statistics: every case, its mean, median, worst and a bootstrap confidence interval.

The survey's "no cherry-picking" rule in code: a result is a distribution over cases, reported
whole. `summarize` never drops a case; the per-case values travel with the summary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..core.errors import InputError
from ..core.results import Result, new_figure

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["Summary", "summarize", "bootstrap_ci"]


def bootstrap_ci(values: Sequence[float] | np.ndarray, *, confidence: float = 0.95, n_boot: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (resampling cases with replacement).

    With one value the interval is that value. Deterministic for a given ``seed``.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Summary(Result):
    """A distribution over cases: n, mean, median, worst, best, bootstrap CI of the mean, all values."""

    n: int
    mean: float
    median: float
    worst: float
    best: float
    ci_low: float
    ci_high: float
    values: tuple[float, ...]
    higher_is_better: bool = True

    def to_frame(self) -> pandas.DataFrame:
        """One row: n, mean, median, worst, best and the CI bounds (the per-case values are in ``values``)."""
        import pandas as pd

        return pd.DataFrame([{k: getattr(self, k) for k in ("n", "mean", "median", "worst", "best", "ci_low",
                                                             "ci_high")}])

    def plot(self, title: str = "") -> Figure:
        """Every case as a dot, the mean and its CI as a bar."""
        fig = new_figure(4, 2.4)
        ax = fig.add_subplot()
        offsets = (np.arange(self.n) % 7 - 3) * 0.02
        ax.scatter(offsets, self.values, s=14, alpha=0.7, label="cases")
        ax.errorbar([0.15], [self.mean], yerr=[[self.mean - self.ci_low], [self.ci_high - self.mean]], fmt="o",
                    color="black", capsize=4, label="mean, 95% CI")
        ax.set_xticks([])
        ax.set_title(title or f"n={self.n}")
        ax.legend(fontsize=7)
        return fig


def summarize(values: Sequence[float], *, higher_is_better: bool = True, confidence: float = 0.95,
              n_boot: int = 2000, seed: int = 0) -> Summary:
    """Summarise per-case values without dropping any.

    Args:
        values: one number per case (seed, model, example...).
        higher_is_better: decides which extreme is the worst case.
        confidence: level of the bootstrap interval of the mean.

    Raises:
        InputError: no values, or a NaN/inf value (a case that failed is an error, not a number).

    Example:
        >>> s = summarize([0.2, 0.9, 0.7])
        >>> (s.n, round(s.mean, 3), s.median, s.worst, s.best)
        (3, 0.6, 0.7, 0.2, 0.9)
    """
    x = [float(v) for v in values]
    if not x:
        raise InputError("summarize needs at least one value; an empty result cannot be summarised.")
    bad = [v for v in x if not math.isfinite(v)]
    if bad:
        raise InputError(f"summarize got non-finite values {bad[:3]}; record failed cases as errors instead.")
    lo, hi = bootstrap_ci(x, confidence=confidence, n_boot=n_boot, seed=seed)
    arr = np.asarray(x)
    return Summary(
        n=len(x), mean=float(arr.mean()), median=float(np.median(arr)),
        worst=float(arr.min() if higher_is_better else arr.max()),
        best=float(arr.max() if higher_is_better else arr.min()),
        ci_low=lo, ci_high=hi, values=tuple(x), higher_is_better=higher_is_better,
    )
