"""Game: label the planted concept detectors of a scene CNN (Neurons / dataset-based, dissection).

Each case is a `planted_detectors` CNN whose designated ``conv2`` channels were trained to detect
designated concepts of the synthetic scenes (`scenes`: 6 colours, 6 shapes) while the other
channels map background noise. A method labels every channel with a concept or "none". Scores:
label accuracy on the designated channels (chance 1/12), detector precision and recall against
the designated set, and Bau et al.'s rotation control: after a random rotation of the channel
basis of ``conv2`` the number of unique concepts with a detector must drop.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ...neurons.dissection import dissect
from ..zoo._seeding import derive_seed, generator
from ..zoo.scenes import CONCEPTS, planted_detectors, scenes
from .base import Game, Metric, case_generator

__all__ = ["DissectionGame"]

#: Dissection settings of the game. The scenes' concepts each cover about 2% of the pixels, far
#: more than Broden's typical concept, so the top-0.5% rule of Bau et al. would cap any unit's
#: IoU near 0.25; a 2% top quantile matches the concept sizes, and 0.2 separates the planted
#: detectors (measured IoU 0.27–0.7) from the other channels (≤ 0.06).
QUANTILE, IOU_THRESHOLD, N_PROBE = 0.98, 0.2, 500


def _rotated(model: nn.Module, seed: int) -> nn.Module:
    """A copy whose ``conv2`` output is ``Q · conv2(x)`` for a random orthogonal ``Q`` (Bau et al.'s control)."""
    width = model.conv2.out_channels
    q, r = torch.linalg.qr(torch.randn(width, width, generator=generator(seed, "rotation"), dtype=torch.float64))
    q = (q * torch.sign(torch.diagonal(r))).to(torch.float32)  # Haar-distributed
    rotated = copy.deepcopy(model)
    with torch.no_grad():
        rotated.conv2.weight.copy_(torch.einsum("ij,jkab->ikab", q, model.conv2.weight))
        rotated.conv2.bias.copy_(q @ model.conv2.bias)
    return rotated


class DissectionGame(Game):
    name = "dissection"
    item = "Neurons / dataset-based (dissection)"
    description = ("A CNN on synthetic 16×16 scenes whose designated conv2 channels (8 of 24) were trained to detect "
                   f"designated concepts (of {len(CONCEPTS)}: colours and shapes, with pixel masks). Methods label "
                   "every channel; scored by label accuracy on the designated channels, detector precision and "
                   "recall, and the drop in unique detected concepts after a random rotation of the channel basis.")
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("label_accuracy", chance=1 / len(CONCEPTS), bar=0.5,
               description="fraction of designated channels labelled with their designated concept"),
        Metric("precision", chance=1 / 3, bar=0.8,
               description="fraction of the channels called detectors that are designated (chance: 8 of 24)"),
        Metric("recall", chance=1 / 3, bar=0.6,
               description="fraction of the designated channels called detectors (the random baseline names 8)"),
        Metric("rotation_drop", chance=0.0, bar=0.5,
               description="1 − unique concepts detected after a random rotation of conv2 / before (clipped at 0)"),
    )
    methods = ("dissection", "random")
    baselines = frozenset({"random"})

    def cases(self, seed: int, quick: bool) -> list[dict[str, Any]]:
        return [{"seed": seed, "n_probe": N_PROBE, "quantile": QUANTILE, "iou_threshold": IOU_THRESHOLD}]

    def _labels(self, method: str, model: nn.Module, case: Mapping[str, Any], n_designated: int,
                gen: torch.Generator) -> tuple[int, ...]:
        if method == "dissection":
            x, masks, _ = scenes(case["n_probe"], seed=derive_seed(case["seed"], "probe-scenes"))
            return dissect(model, x, masks, "conv2", concepts=CONCEPTS, quantile=case["quantile"],
                           iou_threshold=case["iou_threshold"]).labels
        width = model.conv2.out_channels  # "random": n_designated random channels with random concepts
        labels = [-1] * width
        for u in torch.randperm(width, generator=gen)[:n_designated].tolist():
            labels[u] = int(torch.randint(len(CONCEPTS), (1,), generator=gen))
        return tuple(labels)

    def play(self, method: str, case: Mapping[str, Any]) -> dict[str, float]:
        self.check_method(method)
        model, meta = planted_detectors(case["seed"])
        designated = {int(k): int(v) for k, v in meta["designated"].items()}
        gen = case_generator(self.name, method, case)
        labels = self._labels(method, model, case, len(designated), gen)
        rotated = self._labels(method, _rotated(model, case["seed"]), case, len(designated), gen)
        found = {u for u, c in enumerate(labels) if c >= 0}
        hits = found & set(designated)
        unique_before = {c for c in labels if c >= 0}
        unique_after = {c for c in rotated if c >= 0}
        drop = max(0.0, 1.0 - len(unique_after) / len(unique_before)) if unique_before else 0.0
        return {"label_accuracy": sum(labels[u] == c for u, c in designated.items()) / len(designated),
                "precision": len(hits) / len(found) if found else 0.0,
                "recall": len(hits) / len(designated),
                "rotation_drop": drop}
