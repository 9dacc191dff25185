"""Exact per-unit quantiles over a dataset in bounded memory: a range pass, then histogram passes.

Core statistics (see `seethrough.core.stats`). A dataset too large to sort is read a few times:
a `RunningRange` pass gives each unit's count and extremes, then each `Histogram` pass counts the
values inside the interval that holds each wanted order statistic and `OrderStatistics.refine`
narrows that interval, until every target is exact. Every pass's state is mergeable, so a pass
can be split into shards (`seethrough.core.batching.sharded_pass`) with the same result, exactly.
`exact_quantiles` drives the whole search over a re-readable stream, as ``numpy.quantile``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int64
from torch import Tensor

from .checks import check_int
from .errors import InputError, NotFittedError

__all__ = ["RunningRange", "Histogram", "OrderStatistics", "QuantileRanks", "quantile_ranks", "exact_quantiles"]

Method = Literal["linear", "lower", "higher", "inverted_cdf"]


def _rows(values: Tensor, n_units: int | None, name: str) -> Tensor:
    if not isinstance(values, Tensor) or values.ndim != 2 or (n_units is not None and values.shape[1] != n_units):
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise InputError(f"{name}.update expects rows (n, {n_units if n_units is not None else 'n_units'}), "
                         f"got {shape}; put the units last, e.g. x.movedim(1, -1).reshape(-1, n_units).")
    return values.detach().to(torch.float64)


class RunningRange:
    """Count, minimum and maximum of each unit (the first pass of an exact quantile search).

    Example:
        >>> r = RunningRange(); r.update(torch.tensor([[1.0, 4.0], [3.0, 2.0]]))
        >>> other = RunningRange(); other.update(torch.tensor([[0.0, 9.0]]))
        >>> m = r.merge(other); m.count, m.low.tolist(), m.high.tolist()
        (3, [0.0, 2.0], [3.0, 9.0])
    """

    def __init__(self) -> None:
        self.count = 0
        self._low: Tensor | None = None
        self._high: Tensor | None = None

    def update(self, values: Tensor) -> None:
        """Add rows ``values`` (n, n_units); refuses NaN/inf."""
        v = _rows(values, None if self._low is None else self._low.shape[0], "RunningRange")
        if not bool(torch.isfinite(v).all()):
            raise InputError("RunningRange.update got NaN/inf values; quantiles would be meaningless.")
        if v.shape[0] == 0:
            return
        self._fold(v.min(0).values, v.max(0).values, v.shape[0])

    def merge(self, other: RunningRange) -> RunningRange:
        """Fold in ``other`` (built over other rows); returns ``self``."""
        if other._low is not None and other._high is not None:
            if self._low is not None and self._low.shape != other._low.shape:
                raise InputError(f"RunningRange.merge got {other._low.shape[0]} units, this state has "
                                 f"{self._low.shape[0]}.")
            self._fold(other._low, other._high, other.count)
        return self

    def _fold(self, low: Tensor, high: Tensor, count: int) -> None:
        self._low = low.clone() if self._low is None else torch.minimum(self._low, low)
        self._high = high.clone() if self._high is None else torch.maximum(self._high, high)
        self.count += count

    @property
    def low(self) -> Float[Tensor, " n_units"]:
        if self._low is None:
            raise NotFittedError("RunningRange has seen no data; call update() first.")
        return self._low

    @property
    def high(self) -> Float[Tensor, " n_units"]:
        if self._high is None:
            raise NotFittedError("RunningRange has seen no data; call update() first.")
        return self._high


class Histogram:
    """One histogram pass of an `OrderStatistics` search: per target and unit, ``n_bins`` bins.

    Made by `OrderStatistics.histogram`; keeps every bin's count, minimum and maximum of the values
    inside the current search interval. Mergeable: counts add, extremes take min and max.
    """

    def __init__(self, edges: Tensor, lo: Tensor, hi: Tensor, done: Tensor, step: int) -> None:
        self.edges, self.lo, self.hi, self.done, self.step = edges, lo, hi, done, step
        n_t, n_u, n_bins = edges.shape[0], edges.shape[1], edges.shape[2] - 1
        self.counts = torch.zeros(n_t * n_u * n_bins, dtype=torch.int64)
        self.bin_min = torch.full((n_t * n_u * n_bins,), math.inf, dtype=torch.float64)
        self.bin_max = torch.full((n_t * n_u * n_bins,), -math.inf, dtype=torch.float64)

    def update(self, values: Tensor) -> None:
        """Count rows ``values`` (n, n_units), as in every pass before."""
        n_t, n_u, n_bins = self.edges.shape[0], self.edges.shape[1], self.edges.shape[2] - 1
        v = _rows(values, n_u, "Histogram").T.unsqueeze(0).expand(n_t, -1, -1).contiguous()
        inside = (v >= self.lo[..., None]) & (v < self.hi[..., None]) & ~self.done[..., None]
        bins = (torch.searchsorted(self.edges, v, right=True) - 1).clamp_(0, n_bins - 1)
        base = (torch.arange(n_t * n_u) * n_bins).view(n_t, n_u, 1)
        flat, vals = (bins + base)[inside], v[inside]
        self.counts.index_add_(0, flat, torch.ones_like(flat))
        self.bin_min.scatter_reduce_(0, flat, vals, "amin")
        self.bin_max.scatter_reduce_(0, flat, vals, "amax")

    def merge(self, other: Histogram) -> Histogram:
        """Fold in ``other`` (the same pass of the same search, over other rows); returns ``self``."""
        if other.step != self.step or other.counts.shape != self.counts.shape:
            raise InputError(f"Histogram.merge got pass {other.step} with {other.counts.numel()} bins, this is pass "
                             f"{self.step} with {self.counts.numel()}; merge only states of the same pass.")
        self.counts += other.counts
        torch.minimum(self.bin_min, other.bin_min, out=self.bin_min)
        torch.maximum(self.bin_max, other.bin_max, out=self.bin_max)
        return self


class OrderStatistics:
    """The ``ranks[t, u]``-th smallest value (0-based) of each unit ``u``, exactly, in a few passes.

    Start from each unit's minimum and maximum (a `RunningRange` pass). Each pass histograms the
    values inside the interval that holds each target rank into ``n_bins`` bins; the target is
    found when it is the first or last value of its bin or the bin holds one distinct value,
    otherwise the interval shrinks to that bin's [min, max]. Memory is ``O(targets × n_bins)``;
    smooth data needs two or three passes. Ties are exact: the answer is the value numpy's sort
    puts at that rank.

    Example:
        >>> values = torch.tensor([[3.0], [1.0], [2.0], [2.0]])
        >>> search = OrderStatistics(torch.tensor([[1], [3]]), values.min(0).values, values.max(0).values)
        >>> while not search.done:
        ...     h = search.histogram(); h.update(values); search.refine(h)
        >>> search.values.flatten().tolist()
        [2.0, 3.0]
    """

    def __init__(self, ranks: Int64[Tensor, "n_ranks n_units"], low: Float[Tensor, " n_units"],
                 high: Float[Tensor, " n_units"], *, n_bins: int = 1024, max_passes: int = 64) -> None:
        self.n_bins = check_int("n_bins", n_bins, at_least=1)
        self.max_passes = check_int("max_passes", max_passes, at_least=1)
        if not isinstance(ranks, Tensor) or ranks.ndim != 2 or ranks.is_floating_point() \
                or ranks.shape[1] != low.shape[0] or high.shape != low.shape:
            raise InputError(f"OrderStatistics needs integer ranks (n_ranks, n_units) and low, high (n_units,); got "
                             f"{tuple(ranks.shape) if isinstance(ranks, Tensor) else ranks!r}, {tuple(low.shape)}, "
                             f"{tuple(high.shape)}.")
        n_t, n_u = ranks.shape
        self.ranks = ranks.to(torch.int64)
        self._lo = low.to(torch.float64).expand(n_t, n_u).clone()
        top = torch.tensor(math.inf, dtype=torch.float64)
        self._hi = torch.nextafter(high.to(torch.float64), top).expand(n_t, n_u).clone()
        self._below = torch.zeros(n_t, n_u, dtype=torch.int64)
        self._result = torch.full((n_t, n_u), math.nan, dtype=torch.float64)
        self._done = torch.zeros(n_t, n_u, dtype=torch.bool)
        self._fractions = torch.linspace(0.0, 1.0, self.n_bins + 1, dtype=torch.float64)
        self.passes = 0

    @property
    def done(self) -> bool:
        """Whether every target has been found."""
        return bool(self._done.all())

    def histogram(self) -> Histogram:
        """An empty state for the next pass (one per shard; merge them, then `refine`)."""
        edges = self._lo[..., None] + (self._hi - self._lo)[..., None] * self._fractions
        edges[..., 0], edges[..., -1] = self._lo, self._hi
        return Histogram(edges, self._lo, self._hi, self._done, self.passes)

    def refine(self, histogram: Histogram) -> None:
        """Read the targets a full pass's histogram pins down; narrow the intervals of the others."""
        if histogram.step != self.passes:
            raise InputError(f"OrderStatistics.refine got the histogram of pass {histogram.step}, expected pass "
                             f"{self.passes}; make a new one with histogram() for each pass.")
        n_t, n_u = self.ranks.shape
        counts, bin_min, bin_max = (t.view(n_t, n_u, self.n_bins)
                                    for t in (histogram.counts, histogram.bin_min, histogram.bin_max))
        need = self.ranks - self._below
        cum = counts.cumsum(-1)
        b = (cum > need[..., None]).to(torch.int8).argmax(-1, keepdim=True)
        before = (cum.gather(-1, b) - counts.gather(-1, b)).squeeze(-1)
        count, mn, mx = (t.gather(-1, b).squeeze(-1) for t in (counts, bin_min, bin_max))
        k_in = need - before
        first, last, single = k_in == 0, k_in == count - 1, mn == mx
        newly = ~self._done & (first | last | single)
        self._result = torch.where(newly, torch.where(first | single, mn, mx), self._result)
        self._done = self._done | newly
        self.passes += 1
        if self.done:
            return
        if self.passes >= self.max_passes:
            raise InputError(f"the exact quantile search did not converge in {self.max_passes} passes; the data may "
                             "change between passes (pass a fixed dataset, not a random generator).")
        self._lo = torch.where(self._done, self._lo, mn)
        self._hi = torch.where(self._done, self._hi, torch.nextafter(mx, torch.full_like(mx, math.inf)))
        self._below = torch.where(self._done, self._below, self._below + before)

    def solve(self, run_pass: Callable[[Callable[[], Histogram]], Histogram]) -> Float[Tensor, "n_ranks n_units"]:
        """Run passes until done: ``run_pass(new_state)`` fills (and merges) states from ``new_state()``."""
        while not self.done:
            self.refine(run_pass(self.histogram))
        return self.values

    @property
    def values(self) -> Float[Tensor, "n_ranks n_units"]:
        """The order statistics (float64)."""
        if not self.done:
            raise NotFittedError("OrderStatistics is not done; run histogram passes and refine() until done.")
        return self._result


@dataclass(frozen=True)
class QuantileRanks:
    """Which order statistics a set of quantiles needs, and how to combine them (see `quantile_ranks`).

    Attributes:
        method: the ``numpy.quantile`` method.
        lower, upper: ``(n_quantiles,)`` 0-based ranks; the quantile is ``x[lower] + (x[upper] −
            x[lower]) · weight`` with ``x`` sorted.
        weight: ``(n_quantiles,)`` interpolation weights (0 for every method but ``"linear"``).
    """

    method: str
    lower: Int64[Tensor, " n_quantiles"]
    upper: Int64[Tensor, " n_quantiles"]
    weight: Float[Tensor, " n_quantiles"]

    def targets(self, n_units: int) -> Int64[Tensor, "n_ranks n_units"]:
        """The ranks for `OrderStatistics`: lower then upper rows for ``"linear"``, else one row per quantile."""
        ranks = torch.cat([self.lower, self.upper]) if self.method == "linear" else self.lower
        return ranks[:, None].expand(-1, n_units)

    def combine(self, order: Float[Tensor, "n_ranks n_units"]) -> Float[Tensor, "n_quantiles n_units"]:
        """The quantiles from the order statistics at `targets` (exactly ``x[lower]`` where the weight is 0)."""
        if self.method != "linear":
            return order
        n_q = len(self.lower)
        a, b, w = order[:n_q], order[n_q:], self.weight[:, None]
        return torch.where(w == 0, a, a + (b - a) * w)


def quantile_ranks(probabilities: Sequence[float], count: int, *, method: Method = "linear") -> QuantileRanks:
    """The order statistics (0-based ranks) of ``count`` values that ``numpy.quantile(..., method=method)`` reads.

    ``"linear"`` (numpy's default) interpolates ranks ``⌊q (n − 1)⌋`` and ``⌈q (n − 1)⌉``;
    ``"lower"`` and ``"higher"`` take one of them; ``"inverted_cdf"`` takes the smallest ``x[j]``
    with ``(j + 1) / n ≥ q``.

    Raises:
        InputError: probabilities outside [0, 1] or none, ``count < 1``, an unknown method.

    Example:
        >>> r = quantile_ranks([0.5, 0.9], 5, method="higher")
        >>> r.lower.tolist(), r.upper.tolist()
        ([2, 4], [2, 4])
    """
    check_int("count", count, at_least=1)
    qs = torch.tensor([float(q) for q in probabilities], dtype=torch.float64)
    if qs.numel() == 0 or not bool(((qs >= 0) & (qs <= 1)).all()):
        raise InputError(f"quantiles must be a non-empty list of probabilities in [0, 1], got {list(probabilities)}.")
    if method == "inverted_cdf":
        rank = ((qs * count).ceil().to(torch.int64) - 1).clamp(0, count - 1)
        return QuantileRanks(method, rank, rank, torch.zeros_like(qs))
    pos = qs * (count - 1)
    lower, upper = pos.floor().to(torch.int64), pos.ceil().to(torch.int64)
    if method == "linear":
        return QuantileRanks(method, lower, upper, pos - lower.to(torch.float64))
    if method in ("lower", "higher"):
        rank = lower if method == "lower" else upper
        return QuantileRanks(method, rank, rank, torch.zeros_like(qs))
    raise InputError(f"method must be 'linear', 'lower', 'higher' or 'inverted_cdf', got {method!r}.")


def exact_quantiles(chunks: Callable[[], Iterable[Tensor]], probabilities: Sequence[float], *,
                    method: Method = "linear", n_bins: int = 1024) -> Float[Tensor, "n_quantiles n_units"]:
    """Exact per-unit quantiles of rows streamed by ``chunks()`` (called once per pass).

    The serial driver of the search: one `RunningRange` pass, then `OrderStatistics` passes.

    Args:
        chunks: returns a fresh iterable of ``(n, n_units)`` tensors covering the data once.
        probabilities: quantile levels in [0, 1].
        method: as ``numpy.quantile``: ``"linear"`` (numpy's default), ``"lower"``, ``"higher"``
            or ``"inverted_cdf"``.
        n_bins: bins per pass (more bins, fewer passes).

    Returns:
        ``(len(probabilities), n_units)`` float64 quantiles of the whole data: numpy's exactly,
        except that ``"linear"`` always interpolates as ``a + (b − a) w`` (numpy switches to
        ``b − (b − a)(1 − w)`` for ``w ≥ 0.5``, which can differ in the last bit).

    Raises:
        InputError: no rows, bad probabilities or method, NaN/inf values, or data that change
            between passes.

    Example:
        >>> x = torch.arange(10.0)[:, None]
        >>> exact_quantiles(lambda: x.split(3), [0.5, 0.75]).flatten().tolist()
        [4.5, 6.75]
    """
    state = RunningRange()
    for rows in chunks():
        state.update(rows)
    if state.count == 0:
        raise InputError("exact_quantiles got no rows; pass a non-empty dataset.")
    ranks = quantile_ranks(probabilities, state.count, method=method)
    search = OrderStatistics(ranks.targets(state.low.shape[0]), state.low, state.high, n_bins=n_bins)

    def run_pass(new_state: Callable[[], Histogram]) -> Histogram:
        histogram = new_state()
        for rows in chunks():
            histogram.update(rows)
        return histogram

    return ranks.combine(search.solve(run_pass))
