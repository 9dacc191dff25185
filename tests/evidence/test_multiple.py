"""Multiple testing: Benjamini–Hochberg against scipy, majority p-values against enumeration (issue #10, item 5)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from seethrough.core import InputError
from seethrough.evidence import benjamini_hochberg, majority_p_values


@pytest.mark.parametrize("seed", range(5))
def test_benjamini_hochberg_equals_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(size=200), rng.uniform(0, 1e-3, size=20), [0.0, 1.0, 0.5, 0.5]])
    rng.shuffle(p)
    np.testing.assert_allclose(benjamini_hochberg(p), false_discovery_control(p, method="bh"), rtol=1e-12, atol=0)


def test_benjamini_hochberg_on_pure_noise_rejects_about_nothing() -> None:
    rejected = [(benjamini_hochberg(np.random.default_rng(s).uniform(size=1000)) <= 0.05).sum() for s in range(20)]
    assert sum(r > 0 for r in rejected) <= 3  # FWER under the global null is at most fdr (= 0.05 × 20 = 1 expected)


def test_benjamini_hochberg_edge_cases() -> None:
    assert benjamini_hochberg([]).shape == (0,)
    assert benjamini_hochberg([0.3]).tolist() == [0.3]
    with pytest.raises(InputError, match="p-values"):
        benjamini_hochberg([0.1, float("nan")])
    with pytest.raises(InputError, match="p-values"):
        benjamini_hochberg([[0.1]])


def _union_bound_by_enumeration(count: list[int], totals: list[int]) -> float:
    """Σ_c P(count_c ≥ x) by enumerating every k-subset of the dataset (the slow oracle)."""
    labels = [c for c, t in enumerate(totals) for _ in range(t)]
    k, x = sum(count), max(count)
    subsets = list(itertools.combinations(range(len(labels)), k))
    hits = sum(sum(1 for c in range(len(totals)) if sum(labels[i] == c for i in s) >= x) for s in subsets)
    return min(1.0, hits / len(subsets))


@pytest.mark.parametrize("count, totals", [([3, 0], [4, 5]), ([2, 1, 0], [3, 3, 3]), ([1, 1, 1], [2, 3, 4]),
                                           ([4, 0, 0], [4, 2, 3])])
def test_majority_p_values_equal_enumeration(count: list[int], totals: list[int]) -> None:
    assert majority_p_values([count], totals)[0] == pytest.approx(_union_bound_by_enumeration(count, totals),
                                                                  rel=1e-9)


def test_majority_p_values_closed_form_and_errors() -> None:
    # 3 of 3 of one class, two balanced classes of 50: 2 × C(50,3)/C(100,3)
    assert majority_p_values([[0, 3]], [50, 50])[0] == pytest.approx(2 * math.comb(50, 3) / math.comb(100, 3))
    with pytest.raises(InputError, match="counts"):
        majority_p_values([[3, 0]], [2, 5])  # more of class 0 than exist
    with pytest.raises(InputError, match="counts"):
        majority_p_values([3, 0], [2, 5])
