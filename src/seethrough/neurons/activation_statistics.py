"""Dataset-based neuron analysis: per-unit activation statistics and class selectivity.

Neurons / dataset-based in the survey's taxonomy (Morcos et al. 2018). Every pass streams the data
through `seethrough.core.stream` in chunks and accumulates mergeable states of
`seethrough.core.stats` and `seethrough.core.quantiles`, so memory depends on the chunk and the
number of units, never on the dataset size, and a pass can be split into shards (in this process
or as Ray tasks). A unit's class selectivity is a hypothesis about what it does; ``to_findings``
turns it into `Finding`s for `validate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float, Int64
from torch import Tensor, nn

from ..core.checks import check_float
from ..core.errors import InputError
from ..core.inputs import batch_size_of
from ..core.quantiles import Histogram, OrderStatistics, RunningRange, quantile_ranks
from ..core.results import Result, new_figure
from ..core.sites import Site, resolve_site
from ..core.stats import RunningMean
from ..evidence.finding import Finding
from ..evidence.fingerprint import Fingerprint, fingerprint
from ..evidence.multiple import benjamini_hochberg
from ._datasets import (
    Data,
    Mapper,
    Mask,
    _check_dataset_mask,
    _chunk_source,
    _dataset_pass,
    _masked_stream,
    _units_last,
)

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["ActivationStats", "activation_stats"]


@dataclass(frozen=True)
class ActivationStats(Result):
    """Per-unit statistics of a site's values over a dataset.

    Attributes:
        site: where the units live.
        count: number of observations: examples (those with a counted position, see ``mask``), or
            positions with ``reduce="none"``.
        mean, std: ``(n_units,)`` mean and population standard deviation.
        quantiles: the probabilities asked for; ``quantile_values`` ``(len(quantiles), n_units)``
            the exact quantiles (numpy's default "linear" method; `seethrough.core.quantiles`).
        sparsity: ``(n_units,)`` fraction of examples with value ``≤ eps``.
        class_means: ``(n_classes, n_units)`` mean per class (``None`` without labels).
        selectivity: ``(n_units,)`` Morcos et al.'s class selectivity ``(μ_max − μ_rest) /
            (μ_max + μ_rest)``, where ``μ_max`` is the largest class mean and ``μ_rest`` the mean of
            the other class means; in [0, 1] for non-negative units, 0 where both are 0, NaN for a
            unit with a negative class mean (the index is defined for non-negative activations, e.g.
            after a ReLU; read ``class_means`` for signed sites).
        preferred_class: ``(n_units,)`` the class with the largest mean.
        class_counts: ``(n_classes,)`` examples per class (``None`` without labels).
        data_fingerprint: the data the statistics describe (``None`` for an iterable of batches).
    """

    site: Site
    count: int
    mean: Float[Tensor, " n_units"]
    std: Float[Tensor, " n_units"]
    quantiles: tuple[float, ...]
    quantile_values: Float[Tensor, "k n_units"]
    sparsity: Float[Tensor, " n_units"]
    class_means: Float[Tensor, "n_classes n_units"] | None = None
    selectivity: Float[Tensor, " n_units"] | None = None
    preferred_class: Int64[Tensor, " n_units"] | None = None
    class_counts: Int64[Tensor, " n_classes"] | None = None
    data_fingerprint: Fingerprint | None = None

    def to_frame(self) -> pandas.DataFrame:
        """One row per unit: mean, std, sparsity, each quantile, and selectivity when known."""
        import pandas as pd

        frame = pd.DataFrame({"unit": range(len(self.mean)), "mean": self.mean.tolist(), "std": self.std.tolist(),
                              "sparsity": self.sparsity.tolist()})
        for q, row in zip(self.quantiles, self.quantile_values, strict=True):
            frame[f"q{q:g}"] = row.tolist()
        if self.selectivity is not None and self.preferred_class is not None:
            frame["selectivity"] = self.selectivity.tolist()
            frame["preferred_class"] = self.preferred_class.tolist()
        return frame

    def plot(self) -> Figure:
        """Per unit: the quantile range as a bar, the mean as a dot (and selectivity, if known)."""
        fig = new_figure(6, 3)
        ax = fig.add_subplot()
        units = range(len(self.mean))
        lo, hi = self.quantile_values.min(0).values, self.quantile_values.max(0).values
        ax.vlines(list(units), lo.tolist(), hi.tolist(), color="0.6", lw=4, label="quantile range")
        ax.scatter(list(units), self.mean.tolist(), s=10, color="black", label="mean", zorder=3)
        ax.set_xlabel(f"unit at {self.site.path}")
        if self.selectivity is not None:
            twin = ax.twinx()
            twin.plot(list(units), self.selectivity.tolist(), "r.", label="selectivity")
            twin.set_ylabel("class selectivity", color="red")
        ax.legend(fontsize=7)
        return fig

    def to_findings(self, *, min_selectivity: float = 0.5, fdr: float = 0.05,
                    data_fingerprint: Fingerprint | None = None) -> list[Finding]:
        """One ``"units"`` finding per unit selective for its preferred class beyond chance.

        Every unit with a defined selectivity is tested: a pooled-variance two-sample t-test of
        its preferred class's mean against the mean over all other examples (one-sided, from the
        streamed means, standard deviation and class counts; parametric: the per-example values
        a permutation test would need are not kept), times the number of classes (the preferred
        class is picked after looking; Bonferroni). Benjamini–Hochberg corrects over the units
        tested; a unit is a finding when its q-value is at most ``fdr`` and its selectivity at
        least ``min_selectivity``.

        Args:
            min_selectivity: the smallest class selectivity reported.
            fdr: the false discovery rate of the Benjamini–Hochberg correction over the units.
            data_fingerprint: the discovery data's fingerprint when the result has none.

        Returns:
            Findings targeting each unit's preferred class, their evidence holding ``p_value``,
            ``q_value`` and ``n_tested``.
        """
        if self.selectivity is None or self.preferred_class is None or self.class_means is None \
                or self.class_counts is None:
            raise InputError("class findings need labels; call activation_stats(..., labels=...).")
        fdr = check_float("fdr", fdr, at_least=0.0, at_most=1.0)
        tested = torch.nonzero(~torch.isnan(self.selectivity)).flatten()
        p_values = self._selectivity_p_values()[tested].numpy()
        q_values = benjamini_hochberg(p_values)
        seen = self.data_fingerprint if data_fingerprint is None else data_fingerprint
        out = []
        for u, p, q in zip(tested.tolist(), p_values.tolist(), q_values.tolist(), strict=True):
            if float(self.selectivity[u]) < min_selectivity or q > fdr:
                continue
            c = int(self.preferred_class[u])
            out.append(Finding("units", f"unit {u} at {self.site.path!r} is selective for class {c} "
                                        f"(selectivity {float(self.selectivity[u]):.2f}, q = {q:.2g})",
                               site=self.site, units=[u], target=c, score=float(self.selectivity[u]),
                               evidence={"method": "class selectivity", "class_means": self.class_means[:, u],
                                         "test": "pooled t-test, preferred class vs rest, x n_classes",
                                         "p_value": p, "q_value": q, "n_tested": len(tested), "fdr": fdr},
                               data_fingerprint=seen))
        return out

    def _selectivity_p_values(self) -> Tensor:
        """Per unit: one-sided pooled t-test p-value of the preferred class vs the rest, times the class count."""
        from scipy.stats import t as student_t

        assert self.class_counts is not None and self.class_means is not None and self.preferred_class is not None
        counts = self.class_counts.double()
        n, n_classes = float(counts.sum()), int((counts > 0).sum())
        units = torch.arange(len(self.mean))
        n_c = counts[self.preferred_class]
        mu, mu_c = self.mean.double(), self.class_means.double()[self.preferred_class, units]
        mu_rest = (n * mu - n_c * mu_c) / (n - n_c).clamp_min(1.0)
        # the two groups' within sum of squares: the total minus the two-group between part
        within = n * self.std.double() ** 2 - n_c * (mu_c - mu) ** 2 - (n - n_c) * (mu_rest - mu) ** 2
        scale = (within.clamp_min(0.0) / max(n - 2.0, 1.0) * (1.0 / n_c + 1.0 / (n - n_c).clamp_min(1.0))).sqrt()
        diff = mu_c - mu_rest
        t = torch.where(scale > 0, diff / torch.where(scale > 0, scale, 1.0),
                        torch.where(diff > 0, math.inf, -math.inf))
        p = torch.as_tensor(student_t.sf(t.numpy(), max(n - 2.0, 1.0)))
        p = torch.where((n_c >= n) | (diff == 0), 1.0, p)  # one class only, or no difference at all
        return (p * n_classes).clamp(max=1.0)


def _reduce(value: Tensor, site: Site, reduce: str, keep: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """``(n_rows, n_units)`` observations of a chunk and the chunk example of each row (None: row i is example i).

    ``keep`` (``(batch, seq)``, see `_masked_stream`) leaves padding out of the means and maxima,
    and out of the rows of ``reduce="none"``; an example with no counted position gives no row.
    """
    flat, spatial = _units_last(value, site)
    if not spatial:
        return flat[:, :, 0], None
    if reduce == "none":
        rows = torch.arange(len(flat), device=flat.device).repeat_interleave(flat.shape[2])
        units = flat.transpose(1, 2).reshape(-1, flat.shape[1])  # example-major, then position
        if keep is None:
            return units, rows
        where = keep.reshape(-1)
        return units[where], rows[where]
    if keep is None:
        return flat.mean(2) if reduce == "mean" else flat.max(2).values, None
    counted = keep[:, None, :]
    if reduce == "mean":
        reduced = flat.masked_fill(~counted, 0.0).sum(2) / counted.sum(2).clamp_min(1)
    else:
        reduced = flat.masked_fill(~counted, -math.inf).max(2).values
    present = keep.any(1)
    return reduced[present], torch.nonzero(present).flatten()


def _unit_values(model: nn.Module, site: Site, reduce: str, batch_size: int, mask: Mask, shard: Data, offset: int,
                 passes: int, progress: bool = False) -> Iterator[tuple[int, int, Tensor, Tensor | None]]:
    """``(dataset index of the chunk, its examples, (n_rows, n_units) float64 values, example of each row)``."""
    chunks = _chunk_source(shard, batch_size, passes=passes)()
    for first, value, keep in _masked_stream(model, chunks, site, mask, offset, progress=progress):
        v, rows = _reduce(value, site, reduce, keep)
        yield first, len(value), v.to(torch.float64), rows


@dataclass
class _FirstPass:
    """Mergeable state of the first pass: moments, range, sparsity and (with labels) class sums."""

    values: RunningMean
    squares: RunningMean
    range: RunningRange
    inactive: Tensor | None = None
    class_sum: Tensor | None = None
    class_count: Tensor | None = None
    examples: int = 0

    def merge(self, other: _FirstPass) -> _FirstPass:
        self.examples += other.examples
        self.values.merge(other.values)
        self.squares.merge(other.squares)
        self.range.merge(other.range)
        self.inactive = _add(self.inactive, other.inactive)
        self.class_sum = _add(self.class_sum, other.class_sum)
        self.class_count = _add(self.class_count, other.class_count)
        return self


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return b if a is None else a if b is None else a + b


def _first_pass(values: Callable[..., Iterator[tuple[int, int, Tensor, Tensor | None]]], site: Site, progress: bool,
                labels: Tensor | None, eps: float, shard: Data, offset: int) -> _FirstPass:
    state = _FirstPass(RunningMean(), RunningMean(), RunningRange())
    for first, n_examples, v, rows in values(shard, offset, 2, progress):
        state.examples += n_examples
        if not len(v):
            continue  # every position of this chunk is padding
        if not bool(torch.isfinite(v).all()):
            raise InputError(f"{site!r} produced NaN/inf values on examples from {first}.")
        state.values.update(v)
        state.squares.update(v * v)
        state.range.update(v)
        state.inactive = _add(state.inactive, (v <= eps).sum(0))
        if labels is not None:
            if first + n_examples > len(labels):
                raise InputError(f"labels has {len(labels)} entries but the data has more examples; pass one "
                                 "label per example.")
            y = labels[first:first + len(v)] if rows is None else labels[first + rows.to(labels.device)]
            y = y.to(torch.int64)
            n_classes = int(labels.max()) + 1
            if state.class_sum is None or state.class_count is None:
                state.class_sum = torch.zeros(n_classes, v.shape[1], dtype=torch.float64)
                state.class_count = torch.zeros(n_classes, dtype=torch.float64)
            state.class_sum.index_add_(0, y, v)
            state.class_count.index_add_(0, y, torch.ones(len(y), dtype=torch.float64))
    return state


def _histogram_pass(values: Callable[..., Iterator[tuple[int, int, Tensor, Tensor | None]]],
                    new_state: Callable[[], Histogram], shard: Data, offset: int) -> Histogram:
    histogram = new_state()
    for _, _, v, _ in values(shard, offset, 2):
        if len(v):
            histogram.update(v)
    return histogram


def activation_stats(model: nn.Module, data: Data, site: Site | str, *, labels: Tensor | None = None,
                     quantiles: Sequence[float] = (0.01, 0.25, 0.5, 0.75, 0.99), eps: float = 0.0,
                     reduce: Literal["mean", "max", "none"] = "mean", batch_size: int = 256,
                     progress: bool = False, n_shards: int = 1, mapper: Mapper = map,
                     mask: Mask = None) -> ActivationStats:
    """Streaming per-unit statistics: mean, std, exact quantiles, sparsity and class selectivity.

    One pass gathers the moments, the extremes, the sparsity and the class means; the quantiles
    are then exact (numpy's "linear" interpolation) from a few more histogram-refinement passes
    (`seethrough.core.OrderStatistics`), all in memory independent of the dataset size. Every
    pass can be split into shards run in this process or as Ray tasks; their states merge into
    the same statistics. Map-shaped units are first reduced over positions (``reduce``).

    Args:
        model: any ``nn.Module`` (left unchanged).
        data: model inputs or a re-iterable collection of input batches (read several times).
        site: where the units live (no unit selection).
        labels: ``(N,)`` integer classes of the examples, in data order, for class selectivity.
        quantiles: probabilities in [0, 1].
        eps: a value ``≤ eps`` counts as inactive for ``sparsity``.
        reduce: ``"mean"`` (as Morcos et al. for conv channels) or ``"max"`` over positions, or
            ``"none"``: every position of every example is one observation (per-token statistics
            of a ``(batch, seq, d)`` site; ``count`` counts positions; no labels).
        batch_size: rows per chunk when ``data`` is one tensor/tuple/dict.
        progress: show a progress bar on the first pass (one per shard).
        n_shards: split every pass into this many contiguous shards (in-memory inputs only).
            Order statistics, counts and class membership are exact whatever the number; sums
            merge in another order, which can move float64 sums by rounding only.
        mapper: runs the shards, a ``map``-like callable: the builtin ``map`` (in this process),
            or `seethrough.bench.executors.ray_map` (Ray tasks; the model is pickled to them).
        mask: which positions count for a ``(batch, seq, d)`` site value (padding does not):
            ``None`` (default) uses the inputs' ``attention_mask`` when they are a dict holding one
            of that sequence length (ignored for images and vectors); ``False`` counts every
            position; a ``(N, seq)`` bool or 0/1 tensor, one row per example in data order, is
            used as given. Means, maxima, quantiles, sparsity and counts then see real positions
            only, so a padded batch gives what each sentence gives alone; an example with no
            counted position is left out (and ``count`` is smaller).

    Raises:
        InputError: bad quantiles, labels not one int per example, one-shot iterator data,
            shards of data that is not in memory.

    Example:
        >>> model = nn.Sequential(nn.Identity())
        >>> s = activation_stats(model, torch.arange(5.0)[:, None], "0", quantiles=(0.5,))
        >>> s.quantile_values, s.sparsity
        (tensor([[2.]]), tensor([0.2000]))

    References:
        Morcos et al., "On the importance of single directions for generalization", 2018.
    """
    resolved, _ = resolve_site(model, site)
    if resolved.selects:
        raise InputError(f"{resolved!r} selects units; activation_stats describes every unit of a site.")
    qs = tuple(float(q) for q in quantiles)
    if not qs or not all(0.0 <= q <= 1.0 for q in qs):
        raise InputError(f"quantiles must be a non-empty list of probabilities in [0, 1], got {list(quantiles)}.")
    if reduce not in ("mean", "max", "none"):
        raise InputError(f"reduce must be 'mean', 'max' or 'none', got {reduce!r}.")
    if reduce == "none" and labels is not None:
        raise InputError("labels are one class per example, but reduce='none' makes every position an observation; "
                         "use reduce='mean' or 'max' for class selectivity.")
    if labels is not None and (not isinstance(labels, Tensor) or labels.ndim != 1 or labels.is_floating_point()
                               or (len(labels) and int(labels.min()) < 0)):
        raise InputError("labels must be a 1-d tensor of non-negative integer classes, one per example.")
    if labels is not None and isinstance(data, (Tensor, tuple, Mapping)):
        if batch_size_of(data) != len(labels):
            raise InputError(f"labels has {len(labels)} entries but the data has {batch_size_of(data)} examples; "
                             "pass one label per example.")
    _chunk_source(data, batch_size, passes=2)  # validates before any forward pass
    _check_dataset_mask(data, mask)
    values = partial(_unit_values, model, resolved, reduce, batch_size, mask)
    first = _dataset_pass(data, partial(_first_pass, values, resolved, progress, labels, eps), n_shards=n_shards, mapper=mapper)
    count = first.range.count
    if labels is not None and first.examples != len(labels):
        raise InputError(f"labels has {len(labels)} entries but the data has {first.examples} examples.")
    if count == 0:
        raise InputError(f"the mask leaves no position of any example at {resolved!r}; nothing to describe.")
    mean = first.values.mean
    std = (first.squares.mean - mean * mean).clamp_min(0.0).sqrt()
    ranks = quantile_ranks(qs, count, method="linear")
    search = OrderStatistics(ranks.targets(len(mean)), first.range.low, first.range.high)
    quantile_values = ranks.combine(search.solve(
        lambda new_state: _dataset_pass(data, partial(_histogram_pass, values, new_state), n_shards=n_shards,
                                        mapper=mapper)))
    class_means = selectivity = preferred = None
    if first.class_sum is not None and first.class_count is not None:
        class_count = first.class_count
        present = class_count > 0
        class_means = (first.class_sum[present] / class_count[present, None]).to(torch.float32)
        classes = torch.nonzero(present).flatten()
        best, arg = class_means.double().max(0)
        rest = (class_means.double().sum(0) - best) / max(1, len(classes) - 1)
        denom = best + rest
        selectivity = torch.where(denom != 0, (best - rest) / torch.where(denom != 0, denom, 1.0), 0.0)
        selectivity = torch.where((class_means.double() < 0).any(0), math.nan, selectivity).float()
        preferred = classes[arg]
        class_means_full = torch.full((len(class_count), len(mean)), math.nan)
        class_means_full[present] = class_means
        class_means = class_means_full
    class_counts = None if first.class_count is None else first.class_count.round().to(torch.int64)
    seen = fingerprint(data) if isinstance(data, (Tensor, tuple, Mapping, list)) else None  # not a one-shot iterable
    return ActivationStats(resolved, count, mean.float(), std.float(), qs, quantile_values.float(),
                           (first.inactive.double() / count).float(), class_means, selectivity, preferred,
                           class_counts, seen)
