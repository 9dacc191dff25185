"""Dataset-based neuron analysis: top-k exemplars, receptive-field crops and activation statistics.

Neurons / dataset-based in the survey's taxonomy (Zhou et al. 2015; Bau et al. 2017). Every pass
streams the data through `seethrough.core.stream` in chunks, so memory depends on the chunk and
the number of units, never on the dataset size. A unit's exemplars or its class selectivity is a
hypothesis about what it does; ``to_findings`` turns it into `Finding`s for `validate`.
Exact quantiles with bounded memory come from `_order_statistics`, a few histogram-refinement
passes that `seethrough.neurons.dissection` reuses for its thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int64
from torch import Tensor, nn

from ..core.batching import batches, stream
from ..core.errors import InputError, InputTypeError
from ..core.hooks import capture
from ..core.inputs import batch_size_of, validate_inputs
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from ..evidence.finding import Finding

__all__ = ["Exemplars", "top_exemplars", "receptive_fields", "ActivationStats", "activation_stats"]

Data = Inputs | Iterable[Inputs]


# -- data handling ---------------------------------------------------------------------------


def _check_int(name: str, value: Any, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{name} must be an int ≥ {low}, got {value!r}.")


def _chunk_source(data: Data, batch_size: int, *, passes: int = 1) -> Callable[[], Iterable[Inputs]]:
    """A function returning a fresh iterable of chunks; refuses one-shot iterators when passes > 1."""
    _check_int("batch_size", batch_size)
    if isinstance(data, (Tensor, tuple, Mapping)):
        return lambda: batches(data, batch_size)
    if not isinstance(data, Iterable) or isinstance(data, (str, bytes)):
        raise InputTypeError(f"data must be model inputs (a tensor, tuple or dict) or an iterable of input batches, "
                             f"got {type(data).__name__}.")
    if passes > 1 and iter(data) is data:
        raise InputError(f"this method reads the data {passes} or more times, but got a one-shot iterator "
                         f"({type(data).__name__}); pass a tensor, a list of batches or a DataLoader instead.")
    return lambda: data


def _units_last(value: Tensor, site: Site) -> tuple[Tensor, tuple[int, ...]]:
    """``(batch, n_units, positions)`` view of a site value, and the shape of its positions."""
    if value.ndim < 2:
        raise InputError(f"{site!r} gives values of shape {tuple(value.shape)}; a unit needs (batch, n_units, ...).")
    axis = site.unit_axis(value)
    moved = value.movedim(axis, 1)
    spatial = tuple(moved.shape[2:])
    return moved.reshape(moved.shape[0], moved.shape[1], -1), spatial


# -- top-k exemplars -------------------------------------------------------------------------


@dataclass(frozen=True)
class Exemplars:
    """The ``k`` dataset examples on which each unit is most active, best first.

    Attributes:
        site: where the units live.
        values: ``(k, n_units)`` the unit's value (its maximum over positions for maps).
        indices: ``(k, n_units)`` dataset indices of the exemplars (ties: lower index first).
        positions: ``(k, n_units, n_dims)`` where in the map the maximum was (``None`` for
            ``(batch, n_units)`` values); row-major index into the value's trailing dims.
        boxes: ``(k, n_units, 4)`` receptive field of that position in the input image as
            ``(top, left, bottom, right)``, bottom/right exclusive (``None`` unless asked for).
    """

    site: Site
    values: Float[Tensor, "k n_units"]
    indices: Int64[Tensor, "k n_units"]
    positions: Int64[Tensor, "k n_units rest"] | None
    boxes: Int64[Tensor, "k n_units 4"] | None = None

    def to_frame(self) -> Any:
        """One row per (unit, rank): index, value, and position/box columns when known."""
        import pandas as pd

        k, n_units = self.values.shape
        rows: dict[str, Any] = {"unit": [u for u in range(n_units) for _ in range(k)],
                                "rank": [r for _ in range(n_units) for r in range(k)],
                                "index": self.indices.T.reshape(-1).tolist(),
                                "value": self.values.T.reshape(-1).double().tolist()}
        if self.positions is not None:
            flat = self.positions.permute(1, 0, 2).reshape(k * n_units, -1)
            for d in range(flat.shape[1]):
                rows[f"pos{d}"] = flat[:, d].tolist()
        if self.boxes is not None:
            flat = self.boxes.permute(1, 0, 2).reshape(k * n_units, 4)
            for d, name in enumerate(("top", "left", "bottom", "right")):
                rows[name] = flat[:, d].tolist()
        return pd.DataFrame(rows)

    def plot(self, images: Tensor | None = None, *, units: Sequence[int] | None = None) -> Any:
        """A grid of exemplar images (one row per unit, receptive fields outlined), or a heatmap of values.

        Args:
            images: the dataset's ``(N, C, H, W)`` images (C = 1 or 3), indexed by ``indices``.
            units: which units to show (default: the first 8).
        """
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle

        k, n_units = self.values.shape
        shown = list(units) if units is not None else list(range(min(n_units, 8)))
        if images is None:
            fig = Figure(figsize=(5, 3))
            ax = fig.add_subplot()
            im = ax.imshow(self.values[:, shown].T.double().numpy(), aspect="auto", cmap="viridis")
            ax.set_xlabel("rank")
            ax.set_ylabel(f"unit at {self.site.path}")
            fig.colorbar(im, ax=ax)
            return fig
        fig = Figure(figsize=(1.2 * k, 1.2 * len(shown)))
        axes = fig.subplots(len(shown), k, squeeze=False)
        for row, u in enumerate(shown):
            for r in range(k):
                ax = axes[row][r]
                img = images[int(self.indices[r, u])].detach().double().cpu()
                img = (img - img.min()) / (img.max() - img.min() + 1e-12)
                ax.imshow(img.permute(1, 2, 0).numpy() if img.shape[0] == 3 else img[0].numpy(), cmap="gray")
                if self.boxes is not None:
                    t, left, b, right = self.boxes[r, u].tolist()
                    ax.add_patch(Rectangle((left - 0.5, t - 0.5), right - left, b - t, fill=False, color="red"))
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_ylabel(f"unit {u}")
        return fig

    def to_findings(self, labels: Tensor, *, min_purity: float = 0.5) -> list[Finding]:
        """One ``"units"`` finding per unit whose exemplars are mostly one class.

        Args:
            labels: ``(N,)`` int class of every dataset example (indexed by ``indices``).
            min_purity: the fraction of a unit's ``k`` exemplars that must share the majority class.

        Returns:
            Findings "unit u responds to class c" with ``target=c``: `validate` ablates the unit
            and measures the log-probability of class c against random units.
        """
        if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.is_floating_point():
            raise InputError("labels must be a 1-d integer tensor with one class per dataset example.")
        if int(self.indices.max()) >= len(labels):
            raise InputError(f"labels has {len(labels)} entries but an exemplar has index {int(self.indices.max())}; "
                             "pass the labels of the whole dataset.")
        out = []
        k = self.values.shape[0]
        for u in range(self.values.shape[1]):
            classes = labels[self.indices[:, u]]
            counts = torch.bincount(classes)
            c = int(counts.argmax())
            purity = float(counts[c]) / k
            if purity >= min_purity:
                out.append(Finding("units", f"unit {u} at {self.site.path!r} responds to class {c} "
                                            f"({purity:.0%} of its top {k} exemplars)",
                                   site=self.site, units=[u], target=c, score=purity,
                                   evidence={"method": "top-k exemplars", "indices": self.indices[:, u],
                                             "values": self.values[:, u]}))
        return out

    def _repr_html_(self) -> str:
        return str(self.to_frame().head(50).to_html(index=False))


class _TopKPositions:
    """Running top-k per unit keeping a payload (the argmax position); ties keep the earlier index."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.values: Tensor | None = None
        self.indices: Tensor | None = None
        self.where: Tensor | None = None

    def update(self, values: Tensor, where: Tensor, offset: int) -> None:
        index = torch.arange(offset, offset + values.shape[0], device=values.device)[:, None].expand_as(values)
        if self.values is not None and self.indices is not None and self.where is not None:
            values = torch.cat([self.values, values])
            index = torch.cat([self.indices, index])
            where = torch.cat([self.where, where])
        keep = torch.sort(values, dim=0, descending=True, stable=True).indices[: self.k]
        self.values, self.indices, self.where = values.gather(0, keep), index.gather(0, keep), where.gather(0, keep)


def top_exemplars(model: nn.Module, data: Data, site: Site | str, *, k: int = 9, batch_size: int = 256,
                  crop: bool = False, progress: bool = False) -> Exemplars:
    """Stream ``data`` through ``model`` and keep the ``k`` examples that excite each unit most.

    For map-shaped values (``(batch, C, H, W)`` channels, ``(batch, seq, d_model)`` features) a
    unit's value on an example is its maximum over positions, and the position of the first
    maximum is kept. Memory is ``O(k × n_units)`` beyond one chunk, whatever the dataset size.

    Args:
        model: any ``nn.Module`` (left unchanged).
        data: model inputs (cut into chunks of ``batch_size``) or an iterable of input batches
            (a list, a DataLoader, a generator); indices count examples in iteration order.
        site: where the units live (no unit selection).
        k: exemplars per unit (fewer if the dataset is smaller).
        batch_size: rows per chunk when ``data`` is one tensor/tuple/dict.
        crop: also compute each exemplar's receptive-field box (`receptive_fields`); needs image
            data ``(N, C, H, W)`` as one tensor and a ``(batch, C, H, W)`` site value.
        progress: show a progress bar.

    Returns:
        An `Exemplars` result.

    Raises:
        InputError: ``k`` or ``batch_size`` not positive ints, a site that selects units, or
            ``crop`` without image data.
        SiteNotFoundError: unknown site (before any forward pass).

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> top_exemplars(model, torch.eye(2).repeat(3, 1), "1", k=2).indices.shape
        torch.Size([2, 3])

    References:
        Zhou et al., "Object detectors emerge in deep scene CNNs", 2015.
    """
    resolved, _ = resolve_site(model, site)
    _check_int("k", k)
    if resolved.selects:
        raise InputError(f"{resolved!r} selects units; top_exemplars scores every unit of a site.")
    if crop and not (isinstance(data, Tensor) and data.ndim == 4):
        raise InputError("crop=True needs the images as one (N, C, H, W) tensor, to find receptive fields.")
    chunks = _chunk_source(data, batch_size)()
    total = math.ceil(len(data) / batch_size) if isinstance(data, Tensor) else None
    top = _TopKPositions(k)
    spatial: tuple[int, ...] = ()
    for offset, values in stream(model, chunks, [resolved], progress=progress, total=total):
        flat, spatial = _units_last(values[resolved], resolved)
        if not bool(torch.isfinite(flat).all()):
            raise InputError(f"{resolved!r} produced NaN/inf values on examples {offset}..{offset + len(flat) - 1}.")
        best, where = flat.max(dim=2)  # the first maximum over positions
        top.update(best, where, offset)
    assert top.values is not None and top.indices is not None and top.where is not None  # stream saw a chunk
    positions = None
    if spatial:
        positions = torch.stack(torch.unravel_index(top.where, spatial), dim=-1).to(torch.int64)
    boxes = None
    if crop:
        if len(spatial) != 2:
            raise InputError(f"crop=True needs a (batch, C, H, W) value at {resolved!r}; it has {len(spatial)} "
                             "position dims.")
        assert positions is not None and isinstance(data, Tensor)
        units = torch.arange(top.values.shape[1]).expand_as(top.indices)
        pairs = torch.cat([units.reshape(-1, 1), positions.reshape(-1, 2)], dim=1)
        unique, inverse = torch.unique(pairs, dim=0, return_inverse=True)
        found = receptive_fields(model, data[:1], resolved, unique[:, 0], unique[:, 1:])
        boxes = found[inverse].reshape(*top.indices.shape, 4)
    return Exemplars(resolved, top.values, top.indices.to(torch.int64), positions, boxes)


def receptive_fields(model: nn.Module, example: Float[Tensor, "1 channels height width"], site: Site | str,
                     units: Int64[Tensor, " n_units"], positions: Int64[Tensor, "n_units 2"], *,
                     n_probes: int = 8, max_rows: int = 4096, seed: int = 0) -> Int64[Tensor, "n_units 4"]:
    """The input box each ``(unit, position)`` of a ``(batch, C, H, W)`` site can see, found empirically.

    The box bounds the support of the gradient of the unit's value at that position with
    respect to the input, united over ``n_probes`` Gaussian noise images shaped like
    ``example``: this works on any model, and zero padding at the border clips the box as it
    should. A ReLU or max-pool can hide a pixel on one probe, rarely on all of them. Rows are
    assumed independent (eval-mode batch norm); gradients are read with ``torch.autograd.grad``
    on the probe images only, so no ``.grad`` of the model is touched.

    Returns:
        ``(n, 4)`` boxes ``(top, left, bottom, right)``, bottom/right exclusive; a unit whose
        value does not depend on the input gets ``(0, 0, 0, 0)``.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1))
        >>> receptive_fields(model, torch.zeros(1, 1, 8, 8), "2", torch.tensor([0]), torch.tensor([[0, 4]])).tolist()
        [[0, 2, 3, 7]]
    """
    resolved, _ = resolve_site(model, site)
    _check_int("n_probes", n_probes)
    if not isinstance(example, Tensor) or example.ndim != 4 or not example.is_floating_point():
        raise InputError("example must be one floating image batch of shape (1, C, H, W).")
    if units.ndim != 1 or positions.shape != (len(units), 2):
        raise InputError(f"need units (n,) and positions (n, 2); got {tuple(units.shape)} and "
                         f"{tuple(positions.shape)}.")
    validate_inputs(model, example)
    gen = torch.Generator().manual_seed(seed)
    probes = torch.randn(n_probes, *example.shape[1:], generator=gen).to(example)
    n = len(units)
    per_pass = max(1, max_rows // n_probes)
    boxes = torch.zeros(n, 4, dtype=torch.int64)
    for start in range(0, n, per_pass):
        stop = min(start + per_pass, n)
        c = stop - start
        x = probes.repeat(c, 1, 1, 1).requires_grad_(True)
        with torch.enable_grad():
            value = capture(model, x, [resolved])[resolved]
            if value.ndim != 4:
                raise InputError(f"{resolved!r} gives values of shape {tuple(value.shape)}; receptive fields "
                                 "need (batch, C, H, W).")
            rows = torch.arange(c * n_probes)
            pick = torch.arange(start, stop).repeat_interleave(n_probes)
            chosen = value[rows, units[pick], positions[pick, 0], positions[pick, 1]]
            if not chosen.requires_grad:
                continue  # no path from the input to this site
            (grad,) = torch.autograd.grad(chosen.sum(), [x], allow_unused=True)
        if grad is None:
            continue
        support = grad.detach().abs().reshape(c, n_probes, *grad.shape[1:]).sum(dim=(1, 2)) > 0  # (c, H, W)
        for j in range(c):
            rows_any, cols_any = support[j].any(1).nonzero().flatten(), support[j].any(0).nonzero().flatten()
            if len(rows_any):
                boxes[start + j] = torch.stack([rows_any[0], cols_any[0], rows_any[-1] + 1, cols_any[-1] + 1])
    return boxes


# -- exact order statistics with bounded memory ---------------------------------------------


def _order_statistics(chunks: Callable[[], Iterator[Tensor]], ranks: Tensor, low: Tensor, high: Tensor, *,
                      n_bins: int = 1024, max_passes: int = 64) -> Tensor:
    """The ``ranks[t, u]``-th smallest value (0-based) of unit ``u``, exactly, in a few streaming passes.

    ``chunks()`` yields ``(n_units, m)`` float64 tensors covering every value once per call; ``low``
    and ``high`` are each unit's minimum and maximum. Each pass histograms the values inside the
    interval that holds each target rank into ``n_bins`` bins, keeping every bin's count, minimum
    and maximum; the target is found when it is the first or last value of its bin or the bin
    holds one distinct value, otherwise the interval shrinks to that bin's [min, max]. Memory is
    ``O(targets × n_bins)``; smooth data needs two or three passes.
    """
    n_t, n_u = ranks.shape
    lo = low.to(torch.float64).expand(n_t, n_u).clone()
    hi = torch.nextafter(high.to(torch.float64), torch.tensor(math.inf, dtype=torch.float64)).expand(n_t, n_u).clone()
    below = torch.zeros(n_t, n_u, dtype=torch.int64)
    result = torch.full((n_t, n_u), math.nan, dtype=torch.float64)
    done = torch.zeros(n_t, n_u, dtype=torch.bool)
    fractions = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    for _ in range(max_passes):
        edges = lo[..., None] + (hi - lo)[..., None] * fractions
        edges[..., 0], edges[..., -1] = lo, hi
        counts = torch.zeros(n_t * n_u * n_bins, dtype=torch.int64)
        bin_min = torch.full((n_t * n_u * n_bins,), math.inf, dtype=torch.float64)
        bin_max = torch.full((n_t * n_u * n_bins,), -math.inf, dtype=torch.float64)
        base = (torch.arange(n_t * n_u) * n_bins).view(n_t, n_u, 1)
        for values in chunks():
            v = values.to(torch.float64).unsqueeze(0).expand(n_t, -1, -1).contiguous()
            inside = (v >= lo[..., None]) & (v < hi[..., None]) & ~done[..., None]
            bins = (torch.searchsorted(edges, v, right=True) - 1).clamp_(0, n_bins - 1)
            flat, vals = (bins + base)[inside], v[inside]
            counts.index_add_(0, flat, torch.ones_like(flat))
            bin_min.scatter_reduce_(0, flat, vals, "amin")
            bin_max.scatter_reduce_(0, flat, vals, "amax")
        counts, bin_min, bin_max = (t.view(n_t, n_u, n_bins) for t in (counts, bin_min, bin_max))
        need = ranks - below
        cum = counts.cumsum(-1)
        b = (cum > need[..., None]).to(torch.int8).argmax(-1, keepdim=True)
        before = (cum.gather(-1, b) - counts.gather(-1, b)).squeeze(-1)
        count, mn, mx = (t.gather(-1, b).squeeze(-1) for t in (counts, bin_min, bin_max))
        k_in = need - before
        first, last, single = k_in == 0, k_in == count - 1, mn == mx
        newly = ~done & (first | last | single)
        result = torch.where(newly, torch.where(first | single, mn, mx), result)
        done = done | newly
        if bool(done.all()):
            return result
        lo = torch.where(done, lo, mn)
        hi = torch.where(done, hi, torch.nextafter(mx, torch.full_like(mx, math.inf)))
        below = torch.where(done, below, below + before)
    raise InputError(f"the exact quantile search did not converge in {max_passes} passes; the data may change "
                     "between passes (pass a fixed dataset, not a random generator).")


# -- activation statistics -------------------------------------------------------------------


@dataclass(frozen=True)
class ActivationStats:
    """Per-unit statistics of a site's values over a dataset.

    Attributes:
        site: where the units live.
        count: number of examples.
        mean, std: ``(n_units,)`` mean and population standard deviation.
        quantiles: the probabilities asked for; ``quantile_values`` ``(len(quantiles), n_units)``
            the exact quantiles (numpy's default "linear" method).
        sparsity: ``(n_units,)`` fraction of examples with value ``≤ eps``.
        class_means: ``(n_classes, n_units)`` mean per class (``None`` without labels).
        selectivity: ``(n_units,)`` Morcos et al.'s class selectivity ``(μ_max − μ_rest) /
            (μ_max + μ_rest)``, where ``μ_max`` is the largest class mean and ``μ_rest`` the mean of
            the other class means; in [0, 1] for non-negative units, 0 where both are 0, NaN for a
            unit with a negative class mean (the index is defined for non-negative activations, e.g.
            after a ReLU; read ``class_means`` for signed sites).
        preferred_class: ``(n_units,)`` the class with the largest mean.
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

    def to_frame(self) -> Any:
        import pandas as pd

        frame = pd.DataFrame({"unit": range(len(self.mean)), "mean": self.mean.tolist(), "std": self.std.tolist(),
                              "sparsity": self.sparsity.tolist()})
        for q, row in zip(self.quantiles, self.quantile_values, strict=True):
            frame[f"q{q:g}"] = row.tolist()
        if self.selectivity is not None and self.preferred_class is not None:
            frame["selectivity"] = self.selectivity.tolist()
            frame["preferred_class"] = self.preferred_class.tolist()
        return frame

    def plot(self) -> Any:
        """Per unit: the quantile range as a bar, the mean as a dot (and selectivity, if known)."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 3))
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

    def to_findings(self, *, min_selectivity: float = 0.5) -> list[Finding]:
        """One ``"units"`` finding per unit with selectivity ≥ ``min_selectivity``, targeting its preferred class."""
        if self.selectivity is None or self.preferred_class is None:
            raise InputError("class findings need labels; call activation_stats(..., labels=...).")
        out = []
        for u in torch.nonzero(self.selectivity >= min_selectivity).flatten().tolist():
            c = int(self.preferred_class[u])
            out.append(Finding("units", f"unit {u} at {self.site.path!r} is selective for class {c} "
                                        f"(selectivity {float(self.selectivity[u]):.2f})",
                               site=self.site, units=[u], target=c, score=float(self.selectivity[u]),
                               evidence={"method": "class selectivity", "class_means": self.class_means[:, u]
                                         if self.class_means is not None else None}))
        return out

    def _repr_html_(self) -> str:
        return str(self.to_frame().to_html(index=False))


def _reduce(value: Tensor, site: Site, reduce: str) -> Tensor:
    flat, spatial = _units_last(value, site)
    if not spatial:
        return flat[:, :, 0]
    return flat.mean(2) if reduce == "mean" else flat.max(2).values


def activation_stats(model: nn.Module, data: Data, site: Site | str, *, labels: Tensor | None = None,
                     quantiles: Sequence[float] = (0.01, 0.25, 0.5, 0.75, 0.99), eps: float = 0.0,
                     reduce: Literal["mean", "max"] = "mean", batch_size: int = 256,
                     progress: bool = False) -> ActivationStats:
    """Streaming per-unit statistics: mean, std, exact quantiles, sparsity and class selectivity.

    One pass gathers the moments, the extremes, the sparsity and the class means; the quantiles
    are then exact (numpy's "linear" interpolation) from a few more histogram-refinement passes
    (`_order_statistics`), all in memory independent of the dataset size. Map-shaped units are
    first reduced over positions (``reduce``).

    Args:
        model: any ``nn.Module`` (left unchanged).
        data: model inputs or a re-iterable collection of input batches (read several times).
        site: where the units live (no unit selection).
        labels: ``(N,)`` integer classes of the examples, in data order, for class selectivity.
        quantiles: probabilities in [0, 1].
        eps: a value ``≤ eps`` counts as inactive for ``sparsity``.
        reduce: ``"mean"`` (as Morcos et al. for conv channels) or ``"max"`` over positions.
        batch_size: rows per chunk when ``data`` is one tensor/tuple/dict.
        progress: show a progress bar on the first pass.

    Raises:
        InputError: bad quantiles, labels not one int per example, one-shot iterator data.

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
    if reduce not in ("mean", "max"):
        raise InputError(f"reduce must be 'mean' or 'max', got {reduce!r}.")
    if labels is not None and (not isinstance(labels, Tensor) or labels.ndim != 1 or labels.is_floating_point()
                               or (len(labels) and int(labels.min()) < 0)):
        raise InputError("labels must be a 1-d tensor of non-negative integer classes, one per example.")
    if labels is not None and isinstance(data, (Tensor, tuple, Mapping)):
        if batch_size_of(data) != len(labels):
            raise InputError(f"labels has {len(labels)} entries but the data has {batch_size_of(data)} examples; "
                             "pass one label per example.")
    source = _chunk_source(data, batch_size, passes=2)

    def unit_values(show: bool = False) -> Iterator[tuple[int, Tensor]]:
        for offset, values in stream(model, source(), [resolved], progress=show):
            yield offset, _reduce(values[resolved], resolved, reduce).to(torch.float64)

    count, total, total_sq = 0, None, None
    low, high, inactive = None, None, None
    class_sum: Tensor | None = None
    class_count: Tensor | None = None
    for offset, v in unit_values(progress):
        if not bool(torch.isfinite(v).all()):
            raise InputError(f"{resolved!r} produced NaN/inf values on examples from {offset}.")
        count += len(v)
        total = v.sum(0) if total is None else total + v.sum(0)
        total_sq = (v * v).sum(0) if total_sq is None else total_sq + (v * v).sum(0)
        low = v.min(0).values if low is None else torch.minimum(low, v.min(0).values)
        high = v.max(0).values if high is None else torch.maximum(high, v.max(0).values)
        off = (v <= eps).sum(0)
        inactive = off if inactive is None else inactive + off
        if labels is not None:
            if offset + len(v) > len(labels):
                raise InputError(f"labels has {len(labels)} entries but the data has more examples; pass one "
                                 "label per example.")
            y = labels[offset:offset + len(v)].to(torch.int64)
            n_classes = int(labels.max()) + 1
            if class_sum is None or class_count is None:
                class_sum = torch.zeros(n_classes, v.shape[1], dtype=torch.float64)
                class_count = torch.zeros(n_classes, dtype=torch.float64)
            class_sum.index_add_(0, y, v)
            class_count.index_add_(0, y, torch.ones(len(y), dtype=torch.float64))
    assert total is not None and total_sq is not None and low is not None and high is not None
    assert inactive is not None
    if labels is not None and count != len(labels):
        raise InputError(f"labels has {len(labels)} entries but the data has {count} examples.")
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0.0).sqrt()
    # exact quantiles: numpy's linear rule interpolates the floor and ceil order statistics
    pos = torch.tensor(qs, dtype=torch.float64) * (count - 1)
    lower, upper = pos.floor().to(torch.int64), pos.ceil().to(torch.int64)
    ranks = torch.cat([lower, upper])[:, None].expand(-1, len(mean))
    order = _order_statistics(lambda: (v.T for _, v in unit_values()), ranks, low, high)
    a, b = order[: len(qs)], order[len(qs):]
    frac = (pos - lower.to(torch.float64))[:, None]
    quantile_values = torch.where(frac == 0, a, a + (b - a) * frac)
    class_means = selectivity = preferred = None
    if class_sum is not None and class_count is not None:
        present = class_count > 0
        class_means = (class_sum[present] / class_count[present, None]).to(torch.float32)
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
    return ActivationStats(resolved, count, mean.float(), std.float(), qs, quantile_values.float(),
                           (inactive.double() / count).float(), class_means, selectivity, preferred)
