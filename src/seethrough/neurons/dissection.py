"""Network dissection: label each unit of a conv layer with the concept whose pixel masks it matches.

Neurons / dataset-based in the survey's taxonomy (Bau et al. 2017). Per unit ``k`` a threshold
``T_k`` is its top-quantile activation over every position of every image; the unit's map,
upsampled bilinearly to the masks' resolution and thresholded at ``T_k``, is compared with each
concept's mask by IoU summed over the dataset. Memory is bounded: the thresholds are exact
order statistics from streaming histogram passes (`seethrough.core.OrderStatistics`), then one
more pass counts intersections.
A label is a hypothesis; ``to_findings`` hands it to `validate` as a ``"units"`` finding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from ..core.batching import batches, stream
from ..core.checks import check_int
from ..core.errors import InputError
from ..core.inputs import validate_inputs
from ..core.quantiles import Histogram, OrderStatistics, RunningRange, quantile_ranks
from ..core.results import Result, new_figure
from ..core.sites import Site, resolve_site
from ..evidence.finding import Finding
from ..evidence.fingerprint import Fingerprint, fingerprint

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["Dissection", "dissect"]


@dataclass(frozen=True)
class Dissection(Result):
    """IoU of every unit with every concept, and the resulting labels.

    Attributes:
        site: the dissected layer.
        concepts: concept names, one per mask channel.
        iou: ``(n_units, n_concepts)`` dataset-wide IoU of the thresholded unit maps with the masks.
        thresholds: ``(n_units,)`` each unit's activation threshold ``T_k``.
        labels: ``(n_units,)`` the best concept of each unit, or -1 when its IoU is not above
            ``iou_threshold``.
        quantile: the activation quantile that set the thresholds.
        iou_threshold: the IoU a unit must exceed to be labelled (a "detector").
        data_fingerprint: the probe images the labels were found on.
    """

    site: Site
    concepts: tuple[str, ...]
    iou: Float[Tensor, "n_units n_concepts"]
    thresholds: Float[Tensor, " n_units"]
    labels: tuple[int, ...]
    quantile: float
    iou_threshold: float
    data_fingerprint: Fingerprint | None = None

    @property
    def detectors(self) -> list[int]:
        """Units with a label, in unit order."""
        return [u for u, c in enumerate(self.labels) if c >= 0]

    def to_frame(self) -> pandas.DataFrame:
        """One row per unit: its best concept, that IoU, whether it is a detector, and its threshold."""
        import pandas as pd

        best, arg = self.iou.max(1)
        return pd.DataFrame({"unit": range(len(self.labels)),
                             "concept": [self.concepts[int(a)] for a in arg],
                             "iou": best.tolist(),
                             "detector": [c >= 0 for c in self.labels],
                             "threshold": self.thresholds.tolist()})

    def plot(self) -> Figure:
        """Heatmap of the IoU matrix, labelled units marked."""
        n_units, n_concepts = self.iou.shape
        fig = new_figure(0.4 * n_concepts + 2, 0.22 * n_units + 1.5)
        ax = fig.add_subplot()
        im = ax.imshow(self.iou.double().numpy(), aspect="auto", cmap="magma")
        for u, c in enumerate(self.labels):
            if c >= 0:
                ax.scatter([c], [u], marker="o", facecolors="none", edgecolors="cyan", s=30)
        ax.set_xticks(range(n_concepts), self.concepts, rotation=90, fontsize=7)
        ax.set_ylabel(f"unit at {self.site.path}")
        ax.set_title(f"IoU (detector: IoU > {self.iou_threshold:g}, circled)", fontsize=8)
        fig.colorbar(im, ax=ax)
        return fig

    def to_findings(self, targets: Mapping[int, int] | None = None) -> list[Finding]:
        """One ``"units"`` finding per detector: "unit u detects concept c".

        Args:
            targets: concept index → model output class, for concepts the model's output names
                (e.g. a "red" detector in a model that classifies colours). A finding then has
                that ``target`` and `validate` measures its log-probability; for other concepts
                pass ``metric=`` to `validate` (e.g. the class's score on images showing the concept).

        Not corrected for multiple testing: an IoU has no cheap honest p-value (pixels are
        spatially dependent, and an image-level permutation needs per-image intersections the
        bounded-memory pass does not keep). ``evidence["n_tested"]`` says how many unit-concept
        pairs the labels were chosen from; validate each finding on held-out images.
        """
        out = []
        for u in self.detectors:
            c = self.labels[u]
            out.append(Finding("units", f"unit {u} at {self.site.path!r} detects {self.concepts[c]!r} "
                                        f"(IoU {float(self.iou[u, c]):.3f})",
                               site=self.site, units=[u], target=None if targets is None else targets.get(c),
                               score=float(self.iou[u, c]),
                               evidence={"method": "network dissection", "concept": self.concepts[c],
                                         "concept_index": c, "iou": float(self.iou[u, c]),
                                         "threshold": float(self.thresholds[u]), "quantile": self.quantile,
                                         "n_tested": int(self.iou.numel())},
                               data_fingerprint=self.data_fingerprint))
        return out


def dissect(model: nn.Module, images: Float[Tensor, "batch channels height width"],
            concept_masks: Tensor, site: Site | str, *,
            concepts: Sequence[str] | None = None, quantile: float = 0.995, iou_threshold: float = 0.04,
            batch_size: int = 256) -> Dissection:
    """Label the units of a ``(batch, C, h, w)`` site by IoU with concept masks (Network Dissection).

    ``T_k`` is the ``quantile`` of unit ``k``'s activations over all images and positions
    (numpy's ``method="higher"``: an actual activation value, exact). Each unit's map is
    upsampled bilinearly (``align_corners=False``) to the masks' ``(H, W)``, ``M_k = map ≥ T_k``
    (``map > T_k`` when ``T_k`` is the unit's minimum: a constant unit, or a ReLU unit silent on
    more than ``quantile`` of the positions, is never "on" everywhere),
    and ``IoU_{k,c} = Σ|M_k ∩ L_c| / Σ|M_k ∪ L_c|`` with sums over the dataset. A unit is
    labelled with its best concept if that IoU exceeds ``iou_threshold``. Dissection takes image
    maps only, so unlike `top_exemplars` and `activation_stats` it has no padding to mask.

    Args:
        model: any ``nn.Module`` (left unchanged).
        images: the probe images.
        concept_masks: boolean pixel masks, one channel per concept, at the images' resolution
            (or any resolution: maps are upsampled to the masks' size).
        site: the layer whose channels are dissected (no unit selection).
        concepts: names of the concepts (default ``"concept 0"``, ...).
        quantile: the activation quantile of the thresholds (Bau et al.: 0.995, the top 0.5%).
        iou_threshold: the IoU above which a unit is labelled (Bau et al.: 0.04).
        batch_size: images per chunk.

    Raises:
        InputError: masks that do not match the images, bad quantile/threshold, a site value that
            is not ``(batch, C, h, w)``.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 1))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.tensor([[[[1.0]]], [[[-1.0]]]])); _ = model[0].bias.zero_()
        >>> x = torch.zeros(4, 1, 4, 4); x[:, :, :2, :2] = 1.0
        >>> d = dissect(model, x, x.bool(), "0", concepts=["corner"], quantile=0.5)
        >>> d.labels, round(float(d.iou[0, 0]), 2)
        ((0, -1), 1.0)

    References:
        Bau et al., "Network dissection: quantifying interpretability of deep visual
        representations", CVPR 2017.
    """
    resolved, _ = resolve_site(model, site)
    if resolved.selects:
        raise InputError(f"{resolved!r} selects units; dissect labels every unit of a layer.")
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise InputError(f"images must be one (N, C, H, W) tensor, got "
                         f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}.")
    if not isinstance(concept_masks, Tensor) or concept_masks.dtype != torch.bool or concept_masks.ndim != 4 \
            or concept_masks.shape[0] != images.shape[0]:
        raise InputError(f"concept_masks must be a bool tensor (N, n_concepts, H, W) with N = {images.shape[0]} "
                         f"(the number of images); got "
                         f"{tuple(concept_masks.shape) if isinstance(concept_masks, Tensor) else concept_masks!r}"
                         f"{'' if not isinstance(concept_masks, Tensor) else ' ' + str(concept_masks.dtype)}. "
                         "Convert float masks with masks > 0.5.")
    n_concepts = concept_masks.shape[1]
    names = tuple(concepts) if concepts is not None else tuple(f"concept {c}" for c in range(n_concepts))
    if len(names) != n_concepts:
        raise InputError(f"concepts names {len(names)} concepts but the masks have {n_concepts} channels.")
    if not 0.0 < quantile < 1.0:
        raise InputError(f"quantile must be in (0, 1), got {quantile!r} (Bau et al. use 0.995).")
    if not 0.0 <= iou_threshold < 1.0:
        raise InputError(f"iou_threshold must be in [0, 1), got {iou_threshold!r} (Bau et al. use 0.04).")
    check_int("batch_size", batch_size, at_least=1)
    validate_inputs(model, images[:1])

    def maps() -> Iterator[tuple[int, Tensor]]:
        for offset, values in stream(model, batches(images, batch_size), [resolved]):
            value = values[resolved]
            if value.ndim != 4:
                raise InputError(f"{resolved!r} gives values of shape {tuple(value.shape)}; dissection needs "
                                 "(batch, C, h, w) maps.")
            if not bool(torch.isfinite(value).all()):
                raise InputError(f"{resolved!r} produced NaN/inf values on images from {offset}.")
            yield offset, value

    def unit_rows(value: Tensor) -> Tensor:  # (batch · h · w, n_units): every position of every image
        return value.movedim(1, -1).reshape(-1, value.shape[1])

    # pass 1: extremes and size; then exact thresholds (numpy's "higher" quantile) by histogram refinement
    extent = RunningRange()
    for _, value in maps():
        extent.update(unit_rows(value))
    low = extent.low
    rank = quantile_ranks([quantile], extent.count, method="higher")

    def histogram_pass(new_state: Callable[[], Histogram]) -> Histogram:
        histogram = new_state()
        for _, value in maps():
            histogram.update(unit_rows(value))
        return histogram

    search = OrderStatistics(rank.targets(len(low)), low, extent.high)
    thresholds = search.solve(histogram_pass)[0]

    # a unit whose threshold is its minimum (constant, or silent on more than the quantile) is
    # "on" only above it, never everywhere
    floor = thresholds <= low
    # last pass: intersections and mask sizes
    size = concept_masks.shape[2:]
    inter = torch.zeros(len(low), n_concepts, dtype=torch.float64)
    unit_area = torch.zeros(len(low), dtype=torch.float64)
    concept_area = concept_masks.sum(dim=(0, 2, 3)).double()
    for offset, value in maps():
        up = F.interpolate(value.double(), size=tuple(size), mode="bilinear", align_corners=False)
        t = thresholds.view(1, -1, 1, 1)
        on = torch.where(floor.view(1, -1, 1, 1), up > t, up >= t).to(torch.float64)
        masks = concept_masks[offset:offset + len(value)].to(torch.float64)
        inter += torch.einsum("buhw,bchw->uc", on, masks)  # float64: exact counts
        unit_area += on.sum(dim=(0, 2, 3))
    union = unit_area[:, None] + concept_area[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1.0), 0.0)
    best, arg = iou.max(1)
    labels = tuple(int(a) if float(b) > iou_threshold else -1 for a, b in zip(arg, best, strict=True))
    return Dissection(resolved, names, iou.float(), thresholds.float(), labels, float(quantile), float(iou_threshold),
                      fingerprint(images))
