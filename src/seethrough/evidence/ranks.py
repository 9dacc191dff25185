"""Rank statistics shared by the games: AUROC (Mann–Whitney U) and Spearman's rho, row by row.

Both use average ranks for ties and work on the last axis, so a ``(rows, n)`` array gives one
value per row (an attribution map per image) and a ``(n,)`` array one float.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

from ..core.errors import InputError

__all__ = ["auroc", "spearman"]


def _array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def _out(values: Any) -> Any:
    """A float for one row (numpy returns a 0-d scalar there), the array for many."""
    values = np.asarray(values)
    return float(values) if values.ndim == 0 else values


def auroc(scores: Any, labels: Any) -> Any:
    """AUROC of ``scores`` (last axis) for binary ``labels``: ties count half (Mann–Whitney U).

    Raises:
        InputError: labels that are all one class, or do not match the scores' last axis.

    Example:
        >>> auroc([0.9, 0.8, 0.1, 0.5], [1, 1, 0, 0])
        1.0
        >>> auroc([[0.1, 0.9, 0.5, 0.5]], [0, 1, 1, 0]).tolist()
        [0.875]
    """
    s, y = _array(scores), _array(labels).reshape(-1) > 0.5
    if s.shape[-1] != y.size:
        raise InputError(f"auroc: {y.size} labels for scores whose last axis has {s.shape[-1]} values.")
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        raise InputError("auroc needs at least one positive and one negative label.")
    u = rankdata(s, axis=-1)[..., y].sum(-1) - pos * (pos + 1) / 2
    return _out(u / (pos * neg))


def spearman(a: Any, b: Any) -> Any:
    """Spearman's rho of ``a`` and ``b`` along the last axis; 0 (no ranking) where either is constant.

    Example:
        >>> spearman([1.0, 2, 3], [10.0, 30, 20])
        0.5
        >>> spearman([1.0, 1, 1], [1.0, 2, 3])
        0.0
    """
    ra, rb = (rankdata(_array(v), axis=-1) for v in (a, b))
    ra, rb = ra - ra.mean(-1, keepdims=True), rb - rb.mean(-1, keepdims=True)
    denom = np.sqrt((ra**2).sum(-1) * (rb**2).sum(-1))
    return _out(np.where(denom > 0, (ra * rb).sum(-1) / np.where(denom > 0, denom, 1.0), 0.0))
