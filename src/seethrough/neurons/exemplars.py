"""Dataset-based neuron analysis: top-k exemplars and their receptive-field crops.

Neurons / dataset-based in the survey's taxonomy (Zhou et al. 2015). Every pass streams the data
through `seethrough.core.stream` in chunks, keeping a `seethrough.core.TopK`, so memory depends on
the chunk and the number of units, never on the dataset size; the pass can be split into shards
run in this process or as Ray tasks (`seethrough.core.sharded_pass`) with the same result. A
unit's exemplars are a hypothesis about what it does; ``to_findings`` turns them into `Finding`s
for `validate`. Activation statistics live in `seethrough.neurons.activation_statistics`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int64
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError, NotFittedError
from ..core.hooks import capture
from ..core.inputs import validate_inputs
from ..core.results import Result, new_figure
from ..core.sites import Site, resolve_site
from ..core.stats import TopK
from ..evidence.finding import Finding
from ..evidence.fingerprint import Fingerprint, fingerprint
from ..evidence.multiple import benjamini_hochberg, majority_p_values
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

__all__ = ["Exemplars", "top_exemplars", "receptive_fields"]



# -- top-k exemplars -------------------------------------------------------------------------


@dataclass(frozen=True)
class Exemplars(Result):
    """The ``k`` dataset examples on which each unit is most active, best first.

    Attributes:
        site: where the units live.
        values: ``(k, n_units)`` the unit's value (its maximum over positions for maps).
        indices: ``(k, n_units)`` dataset indices of the exemplars (ties: lower index first).
        positions: ``(k, n_units, n_dims)`` where in the map the maximum was (``None`` for
            ``(batch, n_units)`` values); row-major index into the value's trailing dims.
        boxes: ``(k, n_units, 4)`` receptive field of that position in the input image as
            ``(top, left, bottom, right)``, bottom/right exclusive (``None`` unless asked for).
        data_fingerprint: the data the exemplars were chosen from (``None`` for data given as an
            iterable of batches: pass it to ``to_findings`` by hand).
    """

    site: Site
    values: Float[Tensor, "k n_units"]
    indices: Int64[Tensor, "k n_units"]
    positions: Int64[Tensor, "k n_units rest"] | None
    boxes: Int64[Tensor, "k n_units 4"] | None = None
    data_fingerprint: Fingerprint | None = None

    def to_frame(self) -> pandas.DataFrame:
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

    def plot(self, images: Tensor | None = None, *, units: Sequence[int] | None = None) -> Figure:
        """A grid of exemplar images (one row per unit, receptive fields outlined), or a heatmap of values.

        Args:
            images: the dataset's ``(N, C, H, W)`` images (C = 1 or 3), indexed by ``indices``.
            units: which units to show (default: the first 8).
        """
        from matplotlib.patches import Rectangle

        k, n_units = self.values.shape
        shown = list(units) if units is not None else list(range(min(n_units, 8)))
        if images is None:
            fig = new_figure(5, 3)
            ax = fig.add_subplot()
            im = ax.imshow(self.values[:, shown].T.double().numpy(), aspect="auto", cmap="viridis")
            ax.set_xlabel("rank")
            ax.set_ylabel(f"unit at {self.site.path}")
            fig.colorbar(im, ax=ax)
            return fig
        fig = new_figure(1.2 * k, 1.2 * len(shown))
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

    def to_findings(self, labels: Tensor, *, min_purity: float = 0.5, fdr: float = 0.05,
                    data_fingerprint: Fingerprint | None = None) -> list[Finding]:
        """One ``"units"`` finding per unit whose exemplars agree on a class beyond chance.

        Every unit is tested: if its ranking were unrelated to the labels, its ``k`` exemplars
        would be a random ``k``-subset of the dataset, so its majority count is scored by a
        hypergeometric test against the dataset's class frequencies (`majority_p_values`). The
        p-values of all units are corrected by Benjamini–Hochberg, and a unit is a finding when
        its q-value is at most ``fdr`` and its purity at least ``min_purity``. With a small ``k``
        nothing may survive (3 of 3 exemplars of one class among 10 balanced classes has p ≈ 0.01,
        far from significant over hundreds of units): use more exemplars.

        Args:
            labels: ``(N,)`` int class of every dataset example (indexed by ``indices``).
            min_purity: the fraction of a unit's ``k`` exemplars that must share the majority class.
            fdr: the false discovery rate of the Benjamini–Hochberg correction over the units.
            data_fingerprint: the discovery data's fingerprint when the result has none.

        Returns:
            Findings "unit u responds to class c" with ``target=c``, their evidence holding
            ``p_value``, ``q_value`` and ``n_tested``: `validate` ablates the unit and measures
            the log-probability of class c against random units (on held-out data).
        """
        if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.is_floating_point() or \
                (len(labels) and int(labels.min()) < 0):
            raise InputError("labels must be a 1-d integer tensor of non-negative classes, one per dataset example.")
        if int(self.indices.max()) >= len(labels):
            raise InputError(f"labels has {len(labels)} entries but an exemplar has index {int(self.indices.max())}; "
                             "pass the labels of the whole dataset.")
        fdr = check_float("fdr", fdr, at_least=0.0, at_most=1.0)
        k, n_units = self.values.shape
        totals = torch.bincount(labels)
        classes = labels[self.indices].T  # (n_units, k)
        counts = torch.zeros(n_units, len(totals), dtype=torch.int64).scatter_add_(1, classes, torch.ones_like(classes))
        p_values = majority_p_values(counts.numpy(), totals.numpy())
        q_values = benjamini_hochberg(p_values)
        seen = self.data_fingerprint if data_fingerprint is None else data_fingerprint
        out = []
        for u in range(n_units):
            c = int(counts[u].argmax())
            purity = float(counts[u, c]) / k
            if purity >= min_purity and q_values[u] <= fdr:
                out.append(Finding("units", f"unit {u} at {self.site.path!r} responds to class {c} "
                                            f"({purity:.0%} of its top {k} exemplars, q = {q_values[u]:.2g})",
                                   site=self.site, units=[u], target=c, score=purity,
                                   evidence={"method": "top-k exemplars", "indices": self.indices[:, u],
                                             "values": self.values[:, u], "test": "hypergeometric majority",
                                             "p_value": float(p_values[u]), "q_value": float(q_values[u]),
                                             "n_tested": n_units, "fdr": fdr},
                                   data_fingerprint=seen))
        return out

    def _repr_html_(self) -> str:
        """The first 50 rows only: a site has ``k × n_units`` of them."""
        import html

        table = self.to_frame().head(50).to_html(escape=True, index=False)
        return f"<div><strong>{html.escape(type(self).__name__)}</strong> (first 50 rows){table}</div>"


@dataclass
class _Found:
    """One shard's top-k (with argmax positions) and the position dims of the site's maps."""

    top: TopK
    spatial: tuple[int, ...]

    def merge(self, other: _Found) -> _Found:
        self.top.merge(other.top)
        return self


def _top_shard(model: nn.Module, site: Site, k: int, batch_size: int, progress: bool, mask: Mask, shard: Data,
               offset: int) -> _Found:
    """The top-k of one shard, with dataset indices counted from ``offset``; positions ``mask`` leaves out never count."""
    total = math.ceil(len(shard) / batch_size) if isinstance(shard, Tensor) else None
    top = TopK(k)
    spatial: tuple[int, ...] = ()
    chunks = _chunk_source(shard, batch_size)()
    for first, value, keep in _masked_stream(model, chunks, site, mask, offset, progress=progress, total=total):
        flat, shape = _units_last(value, site)
        # batches of a text dataset may be padded to different lengths: positions index the longest
        spatial = (max(spatial[0], shape[0]),) if len(shape) == 1 and spatial else shape
        if keep is not None:  # (batch, seq) over (batch, n_units, seq): padding can never be a maximum
            flat = flat.masked_fill(~keep[:, None, :], -math.inf)
        if not bool(torch.isfinite(flat if keep is None else flat.masked_fill(~keep[:, None, :], 0.0)).all()):
            raise InputError(f"{site!r} produced NaN/inf values on examples {first}..{first + len(flat) - 1}.")
        best, where = flat.max(dim=2)  # the first maximum over positions
        if keep is None:
            top.update(best, first, positions=where)
            continue
        for start, stop in _runs(keep.any(1).tolist()):  # an example with no counted position is no exemplar
            top.update(best[start:stop], first + start, positions=where[start:stop])
    return _Found(top, spatial)


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of consecutive True flags."""
    runs: list[tuple[int, int]] = []
    for i, flag in enumerate(flags):
        if flag and runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        elif flag:
            runs.append((i, i + 1))
    return runs


def top_exemplars(model: nn.Module, data: Data, site: Site | str, *, k: int = 9, batch_size: int = 256,
                  crop: bool = False, progress: bool = False, n_shards: int = 1,
                  mapper: Mapper = map, mask: Mask = None) -> Exemplars:
    """Stream ``data`` through ``model`` and keep the ``k`` examples that excite each unit most.

    For map-shaped values (``(batch, C, H, W)`` channels, ``(batch, seq, d_model)`` features) a
    unit's value on an example is its maximum over positions, and the position of the first
    maximum is kept. Memory is ``O(k × n_units)`` beyond one chunk, whatever the dataset size.
    Padding never counts: for HuggingFace-style dict inputs the ``attention_mask`` of each chunk
    says which positions of a ``(batch, seq, d)`` value are real (``mask=`` overrides it), so no
    exemplar sits on a pad and a padded batch gives each sentence the values it has alone.

    Args:
        model: any ``nn.Module`` (left unchanged).
        data: model inputs (cut into chunks of ``batch_size``) or an iterable of input batches
            (a list, a DataLoader, a generator); indices count examples in iteration order.
        site: where the units live (no unit selection).
        k: exemplars per unit (fewer if the dataset is smaller).
        batch_size: rows per chunk when ``data`` is one tensor/tuple/dict.
        crop: also compute each exemplar's receptive-field box (`receptive_fields`); needs image
            data ``(N, C, H, W)`` as one tensor and a ``(batch, C, H, W)`` site value.
        progress: show a progress bar (one per shard).
        n_shards: split the pass into this many contiguous shards (in-memory inputs only); the
            result is identical whatever the number.
        mapper: runs the shards, a ``map``-like callable: the builtin ``map`` (in this process),
            or `seethrough.bench.executors.ray_map` (Ray tasks; the model is pickled to them).
        mask: which positions count for a ``(batch, seq, d)`` site value: ``None`` (default) uses
            the inputs' ``attention_mask`` when they are a dict holding one of that sequence length
            (ignored for other values: images, vectors); ``False`` counts every position; a
            ``(N, seq)`` bool or 0/1 tensor, one row per example in data order, is used as given.
            An example with no counted position is never an exemplar.

    Returns:
        An `Exemplars` result.

    Raises:
        InputError: ``k``, ``batch_size`` or ``n_shards`` not positive ints, a site that selects
            units, ``crop`` without image data, shards of data that is not in memory, a mask that
            does not fit the site's ``(batch, seq, d)`` values, or one that leaves no position.
        SiteNotFoundError: unknown site (before any forward pass).

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> top_exemplars(model, torch.eye(2).repeat(3, 1), "1", k=2).indices.shape
        torch.Size([2, 3])

    References:
        Zhou et al., "Object detectors emerge in deep scene CNNs", 2015.
    """
    resolved, _ = resolve_site(model, site)
    check_int("k", k, at_least=1)
    if resolved.selects:
        raise InputError(f"{resolved!r} selects units; top_exemplars scores every unit of a site.")
    if crop and not (isinstance(data, Tensor) and data.ndim == 4):
        raise InputError("crop=True needs the images as one (N, C, H, W) tensor, to find receptive fields.")
    _chunk_source(data, batch_size)  # validates before any forward pass
    _check_dataset_mask(data, mask)
    found = _dataset_pass(data, partial(_top_shard, model, resolved, k, batch_size, progress, mask),
                          n_shards=n_shards, mapper=mapper)
    top, spatial = found.top, found.spatial
    try:
        _ = top.values
    except NotFittedError:
        raise InputError(f"the mask leaves no position of any example at {resolved!r}; nothing to rank.") from None
    assert top.positions is not None  # every update gave positions
    positions = None
    if spatial:
        positions = torch.stack(torch.unravel_index(top.positions, spatial), dim=-1).to(torch.int64)
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
    seen = fingerprint(data) if isinstance(data, (Tensor, tuple, Mapping, list)) else None  # not a one-shot iterable
    return Exemplars(resolved, top.values, top.indices.to(torch.int64), positions, boxes, seen)


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
    check_int("n_probes", n_probes, at_least=1)
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
