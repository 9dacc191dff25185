"""Game: label the planted concept detectors of a scene CNN (Neurons / dataset-based, dissection).

Each case is a `planted_detectors` CNN whose designated ``conv2`` channels were trained to detect
designated concepts of the synthetic scenes (`scenes`: 6 colours, 6 shapes) while the other
channels map grain seen through random filters (features that are none of the concepts). A
method labels every channel with a concept or "none" and scores every (channel, concept) pair.
Scores: label accuracy on the designated channels (chance 1/12), detector precision and recall
against the designated set, and Bau et al.'s rotation control: after a random rotation of the
(standardised) channel basis of ``conv2``, unique detected concepts and the best IoU reached for
each designated concept must drop.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ...core.hooks import capture
from ...neurons.dissection import dissect
from ..zoo import derive_seed, generator
from ..zoo.scenes import CONCEPTS, planted_detectors, scenes
from .base import Game, Metric, register

__all__ = ["DissectionPlanted", "Labelling", "DissectionAnswer"]

#: Dissection settings of the game. The scenes' concepts each cover about 2% of the pixels, far
#: more than Broden's typical concept, so the top-0.5% rule of Bau et al. would cap any unit's
#: IoU near 0.25; a 2% top quantile matches the concept sizes, and 0.2 separates the planted
#: detectors from the other channels (≤ 0.06 measured).
QUANTILE, IOU_THRESHOLD, N_PROBE = 0.98, 0.2, 500


def _rotated(model: nn.Module, seed: int, images: Tensor) -> nn.Module:
    """A copy whose ``conv2`` output is ``Q · (conv2(x) − μ) / σ`` for a random orthogonal ``Q``.

    Bau et al.'s control rotates the channel basis. Each channel is first standardised (``μ``,
    ``σ``: its mean and standard deviation over ``images`` and positions), because dissection of
    the unrotated layer is blind to each channel's offset and scale (thresholds are per-unit
    quantiles) and the control must be too: rotating raw channels of unequal scale gives units
    that are each mostly one large channel, a basis still close to the original axes.
    """
    pre = capture(model, images, "conv2")["conv2"].detach()
    mu, sigma = pre.mean(dim=(0, 2, 3)), pre.std(dim=(0, 2, 3)).clamp_min(1e-6)
    width = model.conv2.out_channels
    q, r = torch.linalg.qr(torch.randn(width, width, generator=generator(seed, "rotation"), dtype=torch.float64))
    q = (q * torch.sign(torch.diagonal(r))).to(torch.float32)  # Haar-distributed
    rotated = copy.deepcopy(model)
    with torch.no_grad():
        rotated.conv2.weight.copy_(torch.einsum("ij,jkab->ikab", q / sigma, model.conv2.weight))
        rotated.conv2.bias.copy_(q @ ((model.conv2.bias - mu) / sigma))
    return rotated


@dataclass(frozen=True, eq=False)
class DissectionPlanted:
    """One case: the scene CNN, its rotated twin, the probe scenes with concept masks, and the key."""

    model: nn.Module
    rotated: nn.Module  # `_rotated(model)`: the control's random rotation of conv2's standardised channels
    inputs: Tensor  # the probe scenes
    masks: Tensor  # (n_probe, n_concepts, H, W) concept masks of the probe scenes
    designated: Mapping[int, int]  # the key: designated channel to its concept
    quantile: float
    iou_threshold: float


@dataclass(frozen=True, eq=False)
class Labelling:
    """A method's label per channel (-1 for none) and its (channel, concept) scores."""

    labels: tuple[int, ...]
    iou: Tensor  # (n_channels, n_concepts)


@dataclass(frozen=True)
class DissectionAnswer:
    """The method's labelling of the model and of its rotated twin."""

    before: Labelling
    after: Labelling


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "n_probe": N_PROBE, "quantile": QUANTILE, "iou_threshold": IOU_THRESHOLD}]


def _build(case: Mapping[str, Any]) -> DissectionPlanted:
    model, meta = planted_detectors(case["seed"])
    designated = {int(k): int(v) for k, v in meta["designated"].items()}
    x, masks, _ = scenes(case["n_probe"], seed=derive_seed(case["seed"], "probe-scenes"))
    return DissectionPlanted(model, _rotated(model, case["seed"], x), x, masks, designated, case["quantile"],
                             case["iou_threshold"])


def _dissection(planted: DissectionPlanted, generator: torch.Generator) -> DissectionAnswer:
    def labelling(model: nn.Module) -> Labelling:
        d = dissect(model, planted.inputs, planted.masks, "conv2", concepts=CONCEPTS, quantile=planted.quantile,
                    iou_threshold=planted.iou_threshold)
        return Labelling(tuple(d.labels), d.iou)

    return DissectionAnswer(labelling(planted.model), labelling(planted.rotated))


def _random(planted: DissectionPlanted, generator: torch.Generator) -> DissectionAnswer:
    """As many random channels as designated, each with a random concept, and random scores."""
    def labelling(model: nn.Module) -> Labelling:
        width = model.conv2.out_channels
        labels = [-1] * width
        for u in torch.randperm(width, generator=generator)[:len(planted.designated)].tolist():
            labels[u] = int(torch.randint(len(CONCEPTS), (1,), generator=generator))
        return Labelling(tuple(labels), torch.rand(width, len(CONCEPTS), generator=generator))

    return DissectionAnswer(labelling(planted.model), labelling(planted.rotated))


def _score(answer: DissectionAnswer, planted: DissectionPlanted) -> dict[str, float]:
    designated = planted.designated
    labels = answer.before.labels
    found = {u for u, c in enumerate(labels) if c >= 0}
    hits = found & set(designated)
    unique_before = {c for c in labels if c >= 0}
    unique_after = {c for c in answer.after.labels if c >= 0}
    concepts = sorted(designated.values())
    best_before = float(answer.before.iou[:, concepts].max(0).values.sum())
    best_after = float(answer.after.iou[:, concepts].max(0).values.sum())
    return {"label_accuracy": sum(labels[u] == c for u, c in designated.items()) / len(designated),
            "precision": len(hits) / len(found) if found else 0.0,
            "recall": len(hits) / len(designated),
            "rotation_drop": 1.0 - len(unique_after) / len(unique_before) if unique_before else 0.0,
            "rotation_iou_drop": 1.0 - best_after / best_before if best_before > 0 else 0.0}


GAME = register(Game(
    name="dissection",
    item="Neurons / dataset-based (dissection)",
    description=("A CNN on synthetic 16×16 scenes whose designated conv2 channels (8 of 40) were trained to detect "
                 f"designated concepts (of {len(CONCEPTS)}: colours and shapes, with pixel masks). Methods label "
                 "every channel; scored by label accuracy on the designated channels, detector precision and "
                 "recall, and the drop in unique detected concepts and in each designated concept's best IoU "
                 "after a random rotation of the standardised channel basis."),
    metrics=(
        Metric("label_accuracy", chance=1 / len(CONCEPTS), bar=0.6,
               description="fraction of designated channels labelled with their designated concept"),
        Metric("precision", chance=8 / 40, bar=0.8,
               description="fraction of the channels called detectors that are designated (chance: 8 of 40)"),
        Metric("recall", chance=8 / 40, bar=0.6,
               description="fraction of the designated channels called detectors (the random baseline names 8)"),
        Metric("rotation_drop", chance=0.0, bar=0.4,
               description="1 − unique concepts detected after a random rotation of conv2's standardised "
                           "channels / before (Bau et al.'s count; negative when rotation adds concepts)"),
        Metric("rotation_iou_drop", chance=0.0, bar=0.4,
               description="1 − Σ over designated concepts of the best unit IoU after the rotation / before"),
    ),
    cases=_cases,
    build=_build,
    methods={"dissection": _dissection, "random": _random},
    score=_score,
    baselines=frozenset({"random"}),
    order=30,
))
