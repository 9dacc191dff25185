"""Multiple testing: per-unit p-values and Benjamini–Hochberg q-values over the units tested.

Evidence, shared by every observational ``to_findings``. A method that scores every unit of a
site tests as many hypotheses as there are units; at 1,536 units a per-unit 5% level makes about
77 false "findings" from noise alone. `benjamini_hochberg` turns per-unit p-values into q-values,
and a finding is emitted only where ``q <= fdr``, which keeps the expected share of false
findings among those emitted at most ``fdr`` (independent or positively dependent tests).
`majority_p_values` is the per-unit test of label agreement among a unit's top examples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import InputError

__all__ = ["benjamini_hochberg", "majority_p_values"]


def benjamini_hochberg(p_values: Any) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values) of a 1-d array of p-values, in their order.

    ``q_(i) = min_{j >= i} min(1, p_(j) m / j)`` over the p-values sorted ascending
    (``scipy.stats.false_discovery_control(p, method="bh")`` computes the same). Rejecting every
    hypothesis with ``q <= fdr`` is the BH procedure at level ``fdr``.

    Raises:
        InputError: p-values that are not a 1-d array of numbers in [0, 1] (NaN included).

    Example:
        >>> benjamini_hochberg([0.01, 0.04, 0.03, 0.2]).round(3).tolist()
        [0.04, 0.053, 0.053, 0.2]

    References:
        Benjamini & Hochberg, "Controlling the false discovery rate", JRSS B, 1995.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or not bool(np.all((p >= 0.0) & (p <= 1.0))):
        raise InputError(f"p-values must be a 1-d array of numbers in [0, 1] (no NaN); got shape {p.shape}, "
                         f"range [{np.nanmin(p) if p.size else 'empty'}, {np.nanmax(p) if p.size else 'empty'}].")
    m = len(p)
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    q = np.empty(m)
    q[order] = adjusted
    return q


def majority_p_values(counts: Any, class_totals: Any) -> np.ndarray:
    """P-values of each row's majority count under random draws without replacement (hypergeometric).

    Row ``u`` of ``counts`` counts the classes among ``k = counts[u].sum()`` distinct examples
    picked from a dataset with ``class_totals[c]`` examples of class ``c`` (e.g. a unit's top-k
    exemplars). Under the null hypothesis that the pick is unrelated to the labels, the count of
    class ``c`` is hypergeometric ``(N, class_totals[c], k)``. The majority class is chosen after
    looking, so the p-value of the majority count ``x`` is the union bound
    ``min(1, Σ_c P(count_c ≥ x))`` over classes: valid (never below the exact probability that
    some class reaches ``x``), conservative by at most the number of classes able to reach ``x``.

    Args:
        counts: ``(n_units, n_classes)`` non-negative integer counts.
        class_totals: ``(n_classes,)`` examples of each class in the whole dataset.

    Raises:
        InputError: shapes that do not match, or counts above a class's total.

    Example:
        >>> majority_p_values([[3, 0], [2, 1]], [50, 50]).round(3).tolist()  # 3 of 3 vs 2 of 3, balanced
        [0.242, 1.0]
    """
    from scipy.stats import hypergeom

    c = np.asarray(counts, dtype=np.int64)
    totals = np.asarray(class_totals, dtype=np.int64)
    if c.ndim != 2 or totals.shape != (c.shape[1],) or bool((c < 0).any()) or bool((c > totals).any()):
        raise InputError(f"counts must be (n_units, n_classes) with 0 <= count <= class total; got counts of shape "
                         f"{c.shape} and class_totals of shape {totals.shape}.")
    n, k = int(totals.sum()), c.sum(1, keepdims=True)
    x = c.max(1, keepdims=True)
    tails = hypergeom.sf(x - 1, n, totals[None, :], k)  # P(count_c >= x) per class
    return np.minimum(tails.sum(1), 1.0)
