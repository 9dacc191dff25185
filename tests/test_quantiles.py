"""Tests for seethrough.core.quantiles: exact streaming order statistics and quantiles (issue #9).

Oracles: numpy's sort and ``numpy.quantile`` (methods "lower", "higher", "inverted_cdf" exactly,
"linear" to the last bit) on the whole data, heavy ties included; and merge invariance: the
per-pass states of disjoint shards merge into the states of the whole, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seethrough.core import (
    Histogram,
    InputError,
    NotFittedError,
    OrderStatistics,
    RunningRange,
    exact_quantiles,
    quantile_ranks,
)

HYPOTHESIS = settings(max_examples=25, deadline=None, derandomize=True)


def _data(n: int, seed: int) -> torch.Tensor:
    """``(n, 4)`` float64 rows: three Gaussian units and one with heavy ties."""
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(n, 3, generator=gen, dtype=torch.float64),
                      torch.randint(0, 3, (n, 1), generator=gen).double()], dim=1)


def _search(x: torch.Tensor, ranks: torch.Tensor, cuts: list[int], n_bins: int) -> OrderStatistics:
    """Run the search with every pass split at ``cuts`` into shards whose states are merged."""
    parts = [p for p in np.split(np.arange(len(x)), sorted(cuts)) if len(p)]
    search = OrderStatistics(ranks, x.min(0).values, x.max(0).values, n_bins=n_bins)
    while not search.done:
        states = []
        for part in parts:
            h = search.histogram()
            h.update(x[part])
            states.append(h)
        merged = states[0]
        for h in states[1:]:
            merged = merged.merge(h)
        search.refine(merged)
    return search


@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_order_statistics_are_exact(n: int) -> None:
    # moved from tests/neurons/test_exemplars.py with the search itself
    x = _data(n, seed=n)
    ranks = torch.tensor([[0, n // 3, n // 2, n - 1]]).T.expand(4, 4).contiguous()
    got = _search(x, ranks, [], n_bins=8).values  # few bins: forces several refinement passes
    expect = x.sort(0).values[ranks[:, 0]]
    assert torch.equal(got, expect)


@HYPOTHESIS
@given(n=st.integers(1, 60), cuts=st.lists(st.integers(0, 60), max_size=5), seed=st.integers(0, 2**16),
       n_bins=st.sampled_from([2, 3, 16]))
def test_sharded_passes_give_the_exact_order_statistics(n: int, cuts: list[int], seed: int, n_bins: int) -> None:
    x = _data(n, seed)
    ranks = torch.randint(0, n, (3, 4), generator=torch.Generator().manual_seed(seed))
    whole = _search(x, ranks, [], n_bins)
    split = _search(x, ranks, [c for c in cuts if c <= n], n_bins)
    expect = x.sort(0).values.gather(0, ranks)
    assert torch.equal(whole.values, expect) and torch.equal(split.values, expect)
    assert split.passes == whole.passes


def test_histogram_of_merged_shards_is_the_histogram_of_the_whole() -> None:
    x = _data(200, seed=5)
    search = OrderStatistics(torch.tensor([[10, 100, 150, 199]]), x.min(0).values, x.max(0).values, n_bins=16)
    whole, left, right = search.histogram(), search.histogram(), search.histogram()
    whole.update(x)
    left.update(x[120:])  # merge order does not matter either
    right.update(x[:120])
    merged = left.merge(right)
    assert torch.equal(merged.counts, whole.counts)
    assert torch.equal(merged.bin_min, whole.bin_min) and torch.equal(merged.bin_max, whole.bin_max)
    assert int(whole.counts.sum()) == 200 * 4


def test_running_range_merges_to_the_range_of_the_whole() -> None:
    x = _data(50, seed=1)
    whole, a, b = RunningRange(), RunningRange(), RunningRange()
    whole.update(x)
    a.update(x[:17])
    b.update(x[17:])
    merged = a.merge(b).merge(RunningRange())  # an empty state is neutral
    assert merged.count == whole.count == 50
    assert torch.equal(merged.low, torch.from_numpy(x.numpy().min(0)))
    assert torch.equal(merged.high, torch.from_numpy(x.numpy().max(0)))
    empty = RunningRange().merge(a)
    assert torch.equal(empty.low, a.low) and empty.count == a.count


@pytest.mark.parametrize("method", ["lower", "higher", "inverted_cdf"])
@pytest.mark.parametrize("n", [1, 5, 101])
def test_exact_quantiles_equal_numpy(method: str, n: int) -> None:
    x = _data(n, seed=n)
    qs = [0.0, 0.01, 0.25, 0.5, 0.9, 0.995, 1.0]
    got = exact_quantiles(lambda: x.split(7), qs, method=method, n_bins=4)  # type: ignore[arg-type]
    expect = np.quantile(x.numpy(), qs, axis=0, method=method)
    assert np.array_equal(got.numpy(), expect)


def test_linear_quantiles_equal_numpy_to_the_last_bit() -> None:
    x = _data(301, seed=3)
    qs = [0.0, 0.1, 0.333, 0.5, 0.93, 1.0]
    got = exact_quantiles(lambda: x.split(16), qs).numpy()
    expect = np.quantile(x.numpy(), qs, axis=0)
    # numpy interpolates as b - (b - a)(1 - w) for w ≥ 0.5, we as a + (b - a) w: the same real
    # number, rounded apart by at most a few ulps of the values
    np.testing.assert_allclose(got, expect, rtol=4 * np.finfo(np.float64).eps, atol=0)
    assert np.array_equal(got[:, 3], expect[:, 3])  # the tied unit: every quantile is a value


def test_quantile_ranks_follow_numpy_definitions() -> None:
    r = quantile_ranks([0.0, 0.25, 0.5, 1.0], 5)
    assert r.lower.tolist() == [0, 1, 2, 4] and r.upper.tolist() == [0, 1, 2, 4] and r.weight.tolist() == [0.0] * 4
    r = quantile_ranks([0.1], 5)
    assert (r.lower.item(), r.upper.item()) == (0, 1) and r.weight.item() == pytest.approx(0.4)
    assert r.targets(3).shape == (2, 3)
    r = quantile_ranks([0.0, 0.2, 0.21, 1.0], 5, method="inverted_cdf")
    assert r.lower.tolist() == [0, 0, 1, 4] and r.targets(3).shape == (4, 3)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(InputError, match="probabilities in \\[0, 1\\]"):
        quantile_ranks([1.5], 10)
    # the type-checking import hook of the test run may refuse the literal first (a TypeError)
    with pytest.raises((InputError, TypeError), match="method"):
        quantile_ranks([0.5], 10, method="nearest")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="count must be an int ≥ 1"):
        quantile_ranks([0.5], 0)
    with pytest.raises(InputError, match="no rows"):
        exact_quantiles(lambda: iter([]), [0.5])
    with pytest.raises(InputError, match="NaN/inf"):
        RunningRange().update(torch.tensor([[float("nan")]]))
    with pytest.raises(InputError, match="rows \\(n, 2\\)"):
        r = RunningRange()
        r.update(torch.zeros(3, 2))
        r.update(torch.zeros(3, 5))
    with pytest.raises(NotFittedError):
        _ = RunningRange().low
    x = _data(20, seed=0)
    search = OrderStatistics(torch.tensor([[3, 3, 3, 3]]), x.min(0).values, x.max(0).values, n_bins=2)
    with pytest.raises(NotFittedError, match="not done"):
        _ = search.values
    stale = search.histogram()
    stale.update(x)
    search.refine(stale)
    assert not search.done  # two bins cannot pin rank 3 of 20 distinct values in one pass
    with pytest.raises(InputError, match="histogram of pass 0, expected pass 1"):
        search.refine(stale)  # a histogram of an earlier pass
    with pytest.raises(InputError, match="same pass"):
        stale.merge(search.histogram())


def test_data_that_change_between_passes_stop_with_a_clear_error() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 1, dtype=torch.float64)
    search = OrderStatistics(torch.tensor([[250]]), x.min(0).values - 10, x.max(0).values + 10, n_bins=2,
                             max_passes=3)
    with pytest.raises(InputError, match="did not converge in 3 passes"):
        search.solve(lambda new: _fill(new(), torch.randn(500, 1, generator=gen, dtype=torch.float64)))


def _fill(h: Histogram, rows: torch.Tensor) -> Histogram:
    h.update(rows)
    return h
