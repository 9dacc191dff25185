"""Tests for seethrough.core.stats: streaming mean, (block) covariance and top-k, and their merges.

Oracles: numpy (``mean``, ``cov``, ``corrcoef``) on the whole data for the running moments, a
slow pure-Python sort for `TopK`, and chunking invariance (hypothesis draws the split points).
Merging (issue #9): states built over disjoint shards merge into the state of the whole, checked
against the same oracles, with the shards merged in any order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seethrough.core import (
    InputError,
    Mergeable,
    NotFittedError,
    RunningBlockCovariance,
    RunningCovariance,
    RunningMean,
    TopK,
)

# Both sides accumulate in float64 and differ only in summation order, so they agree to about
# 1e-13 relative; 1e-10 leaves room for the 1e4 offset below without hiding a wrong formula.
F64 = {"rtol": 1e-10, "atol": 1e-10}
HYPOTHESIS = settings(max_examples=25, deadline=None, derandomize=True)
N_ROWS, N_UNITS = 40, 4


def _correlated(n: int = N_ROWS, d: int = N_UNITS, seed: int = 0, offset: float = 1e4) -> np.ndarray:
    """Correlated float64 rows far from the origin (a naive E[x²] − E[x]² would lose ~8 digits)."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((d, d))
    return rng.standard_normal((n, d)) @ mixing + offset + np.arange(d)


def _chunks(x: np.ndarray, cuts: list[int]) -> list[torch.Tensor]:
    return [torch.from_numpy(part) for part in np.split(x, sorted(cuts))]


def _fitted(stat_cls: type, x: np.ndarray, cuts: list[int]) -> RunningMean | RunningCovariance:
    stat = stat_cls()
    for chunk in _chunks(x, cuts):
        stat.update(chunk)
    return stat


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


# -- RunningMean -------------------------------------------------------------------------------


def test_running_mean_matches_numpy() -> None:
    x = _correlated()
    m = _fitted(RunningMean, x, [7, 14, 21, 28, 35])
    assert m.count == N_ROWS
    assert m.mean.dtype == torch.float64
    torch.testing.assert_close(m.mean, _t(x.mean(0)), **F64)


def test_running_mean_of_float32_is_float64() -> None:
    x = np.random.default_rng(1).standard_normal((10, 3)).astype(np.float32)
    m = RunningMean()
    m.update(torch.from_numpy(x[:4]))
    m.update(torch.from_numpy(x[4:]))
    assert m.mean.dtype == torch.float64
    torch.testing.assert_close(m.mean, _t(x.astype(np.float64).mean(0)), **F64)


def test_running_mean_does_not_keep_the_graph() -> None:
    x = torch.randn(5, 2, requires_grad=True)
    m = RunningMean()
    m.update(x)
    assert not m.mean.requires_grad
    torch.testing.assert_close(m.mean, x.detach().double().mean(0))


@HYPOTHESIS
@given(cuts=st.lists(st.integers(0, N_ROWS), max_size=8))
def test_running_mean_is_invariant_to_chunking(cuts: list[int]) -> None:
    x = _correlated()
    whole = _fitted(RunningMean, x, [])
    split = _fitted(RunningMean, x, cuts)  # repeated cuts make empty chunks, which must be harmless
    assert split.count == whole.count == N_ROWS
    torch.testing.assert_close(split.mean, whole.mean, **F64)


# -- RunningCovariance ---------------------------------------------------------------------------


@pytest.mark.parametrize("ddof", [0, 1, 2])
def test_running_covariance_matches_numpy_cov(ddof: int) -> None:
    x = _correlated()
    c = _fitted(RunningCovariance, x, [1, 9, 10, 30])
    assert c.count == N_ROWS
    torch.testing.assert_close(c.mean, _t(x.mean(0)), **F64)
    torch.testing.assert_close(c.covariance(ddof=ddof), _t(np.cov(x, rowvar=False, ddof=ddof)), **F64)


def test_running_covariance_default_is_unbiased() -> None:
    x = _correlated(seed=2)
    c = _fitted(RunningCovariance, x, [20])
    torch.testing.assert_close(c.covariance(), _t(np.cov(x, rowvar=False)), **F64)


def test_running_covariance_correlation_matches_numpy_corrcoef() -> None:
    x = _correlated(seed=3)
    c = _fitted(RunningCovariance, x, [5, 17])
    corr = c.correlation()
    torch.testing.assert_close(corr, _t(np.corrcoef(x, rowvar=False)), **F64)
    torch.testing.assert_close(corr.diagonal(), torch.ones(N_UNITS, dtype=torch.float64), **F64)


def test_running_covariance_constant_unit_gives_nan_correlation_like_numpy() -> None:
    x = _correlated(seed=4)
    x[:, 2] = 2.0  # exactly representable, so its deviations are exactly zero
    c = _fitted(RunningCovariance, x, [13, 26])
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.corrcoef(x, rowvar=False)
    corr = c.correlation()
    assert torch.isnan(corr[2]).all() and torch.isnan(corr[:, 2]).all()
    torch.testing.assert_close(corr, _t(expected), equal_nan=True, **F64)


def test_running_covariance_single_row_chunks() -> None:
    x = _correlated(n=6, seed=5)
    c = _fitted(RunningCovariance, x, list(range(1, 6)))
    torch.testing.assert_close(c.covariance(), _t(np.cov(x, rowvar=False)), **F64)


@HYPOTHESIS
@given(cuts=st.lists(st.integers(0, N_ROWS), max_size=8))
def test_running_covariance_is_invariant_to_chunking(cuts: list[int]) -> None:
    x = _correlated(seed=6)
    whole = _fitted(RunningCovariance, x, [])
    split = _fitted(RunningCovariance, x, cuts)
    assert split.count == whole.count == N_ROWS
    torch.testing.assert_close(split.mean, whole.mean, **F64)
    torch.testing.assert_close(split.covariance(), whole.covariance(), **F64)
    torch.testing.assert_close(split.correlation(), whole.correlation(), **F64)


# -- TopK --------------------------------------------------------------------------------------


def _reference_topk(values: np.ndarray, k: int, largest: bool, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Full sort of every column with ties broken by the earlier index: the slow oracle."""
    n, d = values.shape
    keep = min(k, n)
    top_values = np.empty((keep, d), dtype=values.dtype)
    top_indices = np.empty((keep, d), dtype=np.int64)
    for j in range(d):
        order = sorted(range(n), key=lambda i: (-values[i, j] if largest else values[i, j], i))[:keep]
        top_values[:, j] = values[order, j]
        top_indices[:, j] = np.array(order) + offset
    return top_values, top_indices


def _tied(n: int = N_ROWS, d: int = 3, seed: int = 0) -> np.ndarray:
    """Few distinct values, so ties are everywhere."""
    return np.random.default_rng(seed).integers(-2, 3, size=(n, d)).astype(np.float32)


def _topk_over(values: np.ndarray, k: int, largest: bool, cuts: list[int], offset: int = 0) -> TopK:
    top = TopK(k, largest=largest)
    start = offset
    for chunk in _chunks(values, cuts):
        top.update(chunk, offset=start)
        start += chunk.shape[0]
    return top


def test_topk_closed_form_with_ties() -> None:
    column = torch.tensor([[3.0], [5.0], [5.0], [1.0], [5.0]])
    top = TopK(2)
    top.update(column[:2], offset=0)
    top.update(column[2:], offset=2)
    assert top.values.squeeze(1).tolist() == [5.0, 5.0]
    assert top.indices.squeeze(1).tolist() == [1, 2]  # the third 5.0 (index 4) loses the tie
    low = TopK(2, largest=False)
    low.update(column, offset=0)
    assert low.values.squeeze(1).tolist() == [1.0, 3.0]
    assert low.indices.squeeze(1).tolist() == [3, 0]


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_topk_matches_slow_reference(k: int, largest: bool) -> None:
    values = _tied(seed=1)
    top = _topk_over(values, k, largest, [11, 25])
    ref_values, ref_indices = _reference_topk(values, k, largest)
    assert torch.equal(top.values, torch.from_numpy(ref_values))
    assert torch.equal(top.indices, torch.from_numpy(ref_indices))
    assert top.indices.dtype == torch.int64


def test_topk_continuous_values_match_reference() -> None:
    values = np.random.default_rng(2).standard_normal((30, 5)).astype(np.float32)
    top = _topk_over(values, 4, True, [3, 4, 20])
    ref_values, ref_indices = _reference_topk(values, 4, True)
    assert torch.equal(top.values, torch.from_numpy(ref_values))
    assert torch.equal(top.indices, torch.from_numpy(ref_indices))


def test_topk_indices_count_from_offset() -> None:
    values = _tied(n=12, seed=3)
    top = _topk_over(values, 3, True, [5], offset=100)
    ref_values, ref_indices = _reference_topk(values, 3, True, offset=100)
    assert torch.equal(top.values, torch.from_numpy(ref_values))
    assert torch.equal(top.indices, torch.from_numpy(ref_indices))


def test_topk_k_larger_than_data_keeps_everything_sorted() -> None:
    values = _tied(n=4, seed=4)
    top = _topk_over(values, 10, False, [1])
    ref_values, ref_indices = _reference_topk(values, 10, False)
    assert tuple(top.values.shape) == (4, 3)
    assert torch.equal(top.values, torch.from_numpy(ref_values))
    assert torch.equal(top.indices, torch.from_numpy(ref_indices))


@HYPOTHESIS
@given(
    k=st.integers(1, N_ROWS + 3),
    largest=st.booleans(),
    cuts=st.lists(st.integers(0, N_ROWS), max_size=8),
    seed=st.integers(0, 2**16),
)
def test_topk_is_invariant_to_chunking(k: int, largest: bool, cuts: list[int], seed: int) -> None:
    values = _tied(seed=seed)
    whole = _topk_over(values, k, largest, [])
    split = _topk_over(values, k, largest, cuts)
    assert torch.equal(split.values, whole.values)
    assert torch.equal(split.indices, whole.indices)
    ref_values, ref_indices = _reference_topk(values, k, largest)
    assert torch.equal(split.values, torch.from_numpy(ref_values))
    assert torch.equal(split.indices, torch.from_numpy(ref_indices))


# -- merging shard states (issue #9) -----------------------------------------------------------


def _shard_states(make: Callable[[], Mergeable], update: Callable[[Mergeable, np.ndarray, int], None],
                  x: np.ndarray, cuts: list[int], order: list[int] | None = None) -> Mergeable:
    """One state per shard (split at ``cuts``), merged in ``order`` (default: shard order)."""
    bounds = [0, *sorted(cuts), len(x)]
    states = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        state = make()
        if stop > start:
            update(state, x[start:stop], start)
        states.append(state)
    picked = [states[i] for i in (order if order is not None else range(len(states)))]
    merged = picked[0]
    for state in picked[1:]:
        out = merged.merge(state)
        assert out is merged  # merge folds in place and returns the state itself
    return merged


def _shuffled(n: int, seed: int) -> list[int]:
    return [int(i) for i in np.random.default_rng(seed).permutation(n)]


@HYPOTHESIS
@given(cuts=st.lists(st.integers(0, N_ROWS), max_size=6), seed=st.integers(0, 2**16))
def test_running_mean_merge_of_shards_is_the_mean_of_the_whole(cuts: list[int], seed: int) -> None:
    x = _correlated(seed=seed % 7)
    merged = _shard_states(RunningMean, lambda s, part, _: s.update(_t(part)), x, cuts,
                           _shuffled(len(cuts) + 1, seed))
    assert isinstance(merged, RunningMean) and merged.count == N_ROWS
    torch.testing.assert_close(merged.mean, _t(x.mean(0)), **F64)


@HYPOTHESIS
@given(cuts=st.lists(st.integers(0, N_ROWS), max_size=6), seed=st.integers(0, 2**16))
def test_running_covariance_merge_of_shards_is_the_covariance_of_the_whole(cuts: list[int], seed: int) -> None:
    x = _correlated(seed=seed % 7)
    x[:, 1] = 3.0  # a constant unit stays exactly constant through merges of differently shifted shards
    merged = _shard_states(RunningCovariance, lambda s, part, _: s.update(_t(part)), x, cuts,
                           _shuffled(len(cuts) + 1, seed))
    assert isinstance(merged, RunningCovariance) and merged.count == N_ROWS
    torch.testing.assert_close(merged.mean, _t(x.mean(0)), **F64)
    cov = merged.covariance()
    torch.testing.assert_close(cov, _t(np.cov(x, rowvar=False)), **F64)
    assert (cov[1] == 0).all() and (cov[:, 1] == 0).all()


@HYPOTHESIS
@given(cuts=st.lists(st.integers(0, N_ROWS), max_size=6), seed=st.integers(0, 2**16))
def test_block_covariance_merge_gives_numpy_cov_blocks(cuts: list[int], seed: int) -> None:
    x = _correlated(d=5, seed=seed % 7)
    pairs = [(0, 0), (1, 1), (0, 1)]

    def update(state: Mergeable, part: np.ndarray, _: int) -> None:
        assert isinstance(state, RunningBlockCovariance)
        state.update([_t(part[:, :2]), _t(part[:, 2:])])

    merged = _shard_states(lambda: RunningBlockCovariance(pairs), update, x, cuts, _shuffled(len(cuts) + 1, seed))
    assert isinstance(merged, RunningBlockCovariance) and merged.count == N_ROWS
    full = _t(np.cov(x, rowvar=False))
    torch.testing.assert_close(merged.covariance(0, 0), full[:2, :2], **F64)
    torch.testing.assert_close(merged.covariance(1, 1), full[2:, 2:], **F64)
    torch.testing.assert_close(merged.covariance(0, 1), full[:2, 2:], **F64)
    torch.testing.assert_close(merged.covariance(1, 0), full[2:, :2], **F64)  # the transpose of a kept pair
    torch.testing.assert_close(merged.mean(1), _t(x[:, 2:].mean(0)), **F64)
    torch.testing.assert_close(merged.comoment(0, 1), full[:2, 2:] * (N_ROWS - 1), **F64)


@HYPOTHESIS
@given(k=st.integers(1, N_ROWS + 3), largest=st.booleans(), cuts=st.lists(st.integers(0, N_ROWS), max_size=6),
       seed=st.integers(0, 2**16))
def test_topk_merge_of_shards_keeps_the_earlier_index_on_ties(k: int, largest: bool, cuts: list[int],
                                                              seed: int) -> None:
    values = _tied(seed=seed)
    positions = np.arange(values.size).reshape(values.shape)  # a payload that identifies each entry

    def update(state: Mergeable, part: np.ndarray, start: int) -> None:
        assert isinstance(state, TopK)
        state.update(torch.from_numpy(part), offset=start,
                     positions=torch.from_numpy(positions[start:start + len(part)]))

    merged = _shard_states(lambda: TopK(k, largest=largest), update, values, cuts, _shuffled(len(cuts) + 1, seed))
    assert isinstance(merged, TopK)
    ref_values, ref_indices = _reference_topk(values, k, largest)
    assert torch.equal(merged.values, torch.from_numpy(ref_values))
    assert torch.equal(merged.indices, torch.from_numpy(ref_indices))
    assert merged.positions is not None
    assert torch.equal(merged.positions, torch.from_numpy(np.take_along_axis(positions, ref_indices, 0)))


def test_topk_update_out_of_order_still_keeps_the_earlier_index() -> None:
    column = torch.tensor([[5.0], [5.0]])
    top = TopK(1)
    top.update(column[1:], offset=1)
    top.update(column[:1], offset=0)  # the earlier example arrives last
    assert top.indices.item() == 0 and top.positions is None


def test_merging_mismatched_states_is_refused() -> None:
    a, b = RunningMean(), RunningMean()
    a.update(torch.ones(2, 3))
    b.update(torch.ones(2, 4))
    with pytest.raises(InputError, match="merge only states of the same statistic"):
        a.merge(b)
    with pytest.raises(InputError, match="k, largest"):
        TopK(2).merge(TopK(3))
    c, d = RunningCovariance(), RunningCovariance()
    c.update(torch.ones(2, 3))
    d.update(torch.ones(2, 2))
    with pytest.raises(InputError, match="block widths"):
        c.merge(d)
    with pytest.raises(InputError, match="pairs"):
        RunningBlockCovariance([(0, 0)]).merge(RunningBlockCovariance([(0, 1)]))
    t, u = TopK(2), TopK(2)
    t.update(torch.ones(2, 1), offset=0, positions=torch.zeros(2, 1, dtype=torch.int64))
    u.update(torch.ones(2, 1), offset=2)
    with pytest.raises(InputError, match="positions"):
        t.merge(u)
    with pytest.raises(InputError, match="always or never"):
        t.update(torch.ones(1, 1), offset=4)


def test_merging_empty_states_is_neutral() -> None:
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    for make in (RunningMean, RunningCovariance):
        full = make()
        full.update(x)
        merged = make().merge(full).merge(make())
        torch.testing.assert_close(merged.mean, full.mean, rtol=0, atol=0)
        assert merged.count == 6
    top = TopK(2)
    top.update(x, offset=0)
    assert torch.equal(TopK(2).merge(top).merge(TopK(2)).indices, top.indices)


def test_block_covariance_refuses_bad_blocks_and_unkept_pairs() -> None:
    c = RunningBlockCovariance([(0, 0), (1, 1)])
    with pytest.raises(InputError, match="2 float tensors"):
        c.update([torch.ones(3, 2, dtype=torch.float64)])
    with pytest.raises(InputError, match="NaN/inf"):
        c.update([torch.full((3, 2), float("inf"), dtype=torch.float64), torch.ones(3, 1, dtype=torch.float64)])
    assert c.count == 0 and not c.shift  # a refused first batch leaves no trace
    c.update([torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 1, dtype=torch.float64)])
    with pytest.raises(InputError, match="not kept"):
        c.comoment(0, 1)
    with pytest.raises(InputError, match="widths"):
        c.update([torch.ones(3, 3, dtype=torch.float64), torch.ones(3, 1, dtype=torch.float64)])
    with pytest.raises(NotFittedError):
        RunningBlockCovariance([(0, 0)]).mean(0)


# -- errors ------------------------------------------------------------------------------------


Stat = RunningMean | RunningCovariance | TopK


def _stats() -> list[tuple[str, Stat]]:
    return [("RunningMean", RunningMean()), ("RunningCovariance", RunningCovariance()), ("TopK", TopK(2))]


def _update(stat: Stat, x: torch.Tensor) -> None:
    if isinstance(stat, TopK):
        stat.update(x, offset=0)
    else:
        stat.update(x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_non_finite_input_is_refused(which: int, bad: float) -> None:
    name, stat = _stats()[which]
    x = torch.ones(4, 3)
    x[1, 2] = bad
    with pytest.raises(InputError, match="NaN/inf") as info:
        _update(stat, x)
    assert name in str(info.value)


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4)])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_wrong_ndim_is_refused(which: int, shape: tuple[int, ...]) -> None:
    name, stat = _stats()[which]
    with pytest.raises(InputError, match=r"expects shape \(n, ") as info:
        _update(stat, torch.ones(shape))
    assert name in str(info.value)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_column_mismatch_is_refused(which: int) -> None:
    name, stat = _stats()[which]
    _update(stat, torch.ones(4, 3))
    with pytest.raises(InputError) as info:
        _update(stat, torch.ones(4, 5))
    message = str(info.value)
    assert name in message
    assert "5" in message and "3" in message


def test_column_mismatch_message_says_what_was_expected() -> None:
    m = RunningMean()
    m.update(torch.ones(2, 3))
    with pytest.raises(InputError, match="got 5 columns, but earlier batches had 3"):
        m.update(torch.ones(2, 5))
    t = TopK(1)
    t.update(torch.ones(2, 3), offset=0)
    with pytest.raises(InputError, match=r"expects shape \(n, 3\), got \(2, 5\)"):
        t.update(torch.ones(2, 5), offset=2)


@pytest.mark.parametrize(
    ("make", "read"),
    [
        (RunningMean, lambda s: s.mean),
        (RunningCovariance, lambda s: s.mean),
        (RunningCovariance, lambda s: s.covariance()),
        (RunningCovariance, lambda s: s.correlation()),
        (lambda: TopK(3), lambda s: s.values),
        (lambda: TopK(3), lambda s: s.indices),
    ],
)
def test_use_before_update_raises_not_fitted(make: Callable[[], Stat], read: Callable[[Stat], object]) -> None:
    stat = make()
    with pytest.raises(NotFittedError, match="has seen no data; call update\\(\\) first"):
        read(stat)


@pytest.mark.parametrize("stat_cls", [RunningMean, RunningCovariance])
def test_only_empty_batches_is_still_not_fitted(stat_cls: type) -> None:
    stat = stat_cls()
    stat.update(torch.ones(0, 3))
    with pytest.raises(NotFittedError):
        _ = stat.mean


@pytest.mark.parametrize(("n_rows", "ddof"), [(3, 3), (3, 5), (1, 1)])
def test_covariance_ddof_too_large(n_rows: int, ddof: int) -> None:
    c = RunningCovariance()
    c.update(torch.ones(n_rows, 2))
    with pytest.raises(InputError, match=f"ddof={ddof} needs more than {ddof} rows, got {n_rows}"):
        c.covariance(ddof=ddof)


@pytest.mark.parametrize("k", [0, -1, True])
def test_topk_bad_k(k: int) -> None:
    top = TopK(k)  # __init__ stores hyper-parameters unvalidated (scikit-learn contract)
    assert top.k is k
    with pytest.raises(InputError, match="k must be an int ≥ 1"):
        top.update(torch.ones(2, 2), offset=0)
