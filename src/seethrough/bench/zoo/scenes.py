"""Synthetic 16×16 scenes with pixel masks for 12 concepts, and a CNN with planted concept detectors.

The answer key of the dissection game (Neurons / dataset-based). `scenes` draws 1–3 coloured
shapes on a dark background, grain (pixel noise) everywhere, and returns, beside the images, a
boolean pixel mask per concept: six colours of equal intensity and six shapes, so every object
pixel belongs to one colour and one shape. (Positions are not among the concepts: a convolution's
output cannot tell where in the image it is, away from the border, so a position detector could
not be planted in ``conv2``.) `planted_detectors` trains a small CNN on a main task (the scene's
dominant colour) plus an auxiliary loss that makes designated channels of ``conv2`` detect
designated concepts, and the other channels map the grain; the designation is the ground truth.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int64
from torch import Tensor, nn

from seethrough.core import InputError
from seethrough.evidence.ranks import auroc

from ._seeding import derive_seed, generator, materialise
from .cache import cached

__all__ = ["CONCEPTS", "scenes", "SceneCNN", "planted_detectors"]

#: The 12 concepts, in mask-channel order: colours 0–5, shapes 6–11.
CONCEPTS = ("red", "green", "blue", "yellow", "cyan", "magenta", "triangle", "disc", "hbar", "vbar", "cross", "ring")
SIZE = 16
#: Six colours of equal total intensity (each sums to 1.5), so that brightness alone does not
#: single out one colour (a shape detector whose response grew with brightness would fire most
#: on the brightest colour). All values lie in [0.2, 0.8], so jitter and grain need no clipping.
_RGB = np.array([[0.8, 0.35, 0.35], [0.35, 0.8, 0.35], [0.35, 0.35, 0.8], [0.65, 0.65, 0.2], [0.2, 0.65, 0.65],
                 [0.65, 0.2, 0.65]], dtype=np.float32)
N_COLOURS = 6
BACKGROUND, GRAIN = 0.1, 0.1


def _shape_templates() -> list[np.ndarray]:
    yy, xx = np.mgrid[0:5, 0:5]
    triangle = xx <= yy  # a right triangle in a 5×5 box (15 pixels): corners a filled blob lacks
    disc = (yy - 2) ** 2 + (xx - 2) ** 2 <= 5  # a 5×5 disc without its corners (21 pixels)
    hbar, vbar = np.ones((2, 6), dtype=bool), np.ones((6, 2), dtype=bool)
    cross = np.zeros((5, 5), dtype=bool)
    cross[2, :] = cross[:, 2] = True
    ring = np.ones((5, 5), dtype=bool)
    ring[1:4, 1:4] = False
    return [triangle, disc, hbar, vbar, cross, ring]


_SHAPES = _shape_templates()


def scenes(n: int, seed: int) -> tuple[Float[Tensor, "batch 3 16 16"], Bool[Tensor, "batch n_concepts 16 16"],
                                       Int64[Tensor, " batch"]]:
    """``n`` scenes: images in [0, 1], the 12 concept masks (`CONCEPTS`) and the dominant-colour label.

    Each scene holds 1–3 non-overlapping objects, each with a random colour (jittered) and shape
    and place, on a dark background (0.1). Every pixel, object or background, carries grain:
    independent uniform noise in ±0.1 per colour plane. The label is the colour covering the
    most pixels (ties: the lower colour index). Deterministic in ``seed``.

    Raises:
        InputError: ``n`` is not a positive int.

    Example:
        >>> x, masks, y = scenes(4, seed=0)
        >>> tuple(x.shape), tuple(masks.shape), masks.dtype, y.tolist() == masks[:, :6].sum((2, 3)).argmax(1).tolist()
        ((4, 3, 16, 16), (4, 12, 16, 16), torch.bool, True)
    """
    images, masks, labels, _ = _scenes_with_grain(n, seed)
    return images, masks, labels


def _scenes_with_grain(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`scenes` and, fourth, the grain: ``images`` minus the flat colours, i.i.d. uniform in ±`GRAIN`."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive int, got {n!r}.")
    rng = np.random.default_rng(derive_seed(seed, "scenes"))
    flat = np.full((n, 3, SIZE, SIZE), BACKGROUND, dtype=np.float32)
    masks = np.zeros((n, len(CONCEPTS), SIZE, SIZE), dtype=bool)
    for i in range(n):
        occupied = np.zeros((SIZE, SIZE), dtype=bool)
        for _ in range(int(rng.integers(1, 4))):
            colour, shape = int(rng.integers(N_COLOURS)), int(rng.integers(len(_SHAPES)))
            template = _SHAPES[shape]
            h, w = template.shape
            for _attempt in range(20):
                top, left = int(rng.integers(0, SIZE - h + 1)), int(rng.integers(0, SIZE - w + 1))
                pixels = np.zeros((SIZE, SIZE), dtype=bool)
                pixels[top:top + h, left:left + w] = template
                if not (pixels & occupied).any():
                    break
            else:
                continue  # no free place: draw one object fewer
            occupied |= pixels
            flat[i][:, pixels] = (_RGB[colour] + rng.uniform(-0.08, 0.08, size=3))[:, None]
            masks[i, colour] |= pixels
            masks[i, N_COLOURS + shape] |= pixels
    grain = rng.uniform(-GRAIN, GRAIN, size=flat.shape).astype(np.float32)
    images = flat + grain  # within [0, 1] without clipping: colours lie in [0.2, 0.8]
    labels = masks[:, :N_COLOURS].sum(axis=(2, 3)).argmax(axis=1)
    return (torch.from_numpy(images), torch.from_numpy(masks), torch.from_numpy(labels.astype(np.int64)),
            torch.from_numpy(grain))


class SceneCNN(nn.Module):
    """``conv1`` (3→32, 5×5) → ``act1`` → ``conv2`` (32→width, 3×3) → ``act2`` → ``pool`` (mean) → ``head`` (6).

    Padding keeps ``conv2``'s maps at 16×16; a ``conv2`` unit sees a 7×7 window, a whole shape.
    """

    def __init__(self, width: int = 40, *, seed: int = 0) -> None:
        super().__init__()
        with torch.device("meta"):
            self.conv1 = nn.Conv2d(3, 32, 5, padding=2)
            self.act1 = nn.ReLU()
            self.conv2 = nn.Conv2d(32, width, 3, padding=1)
            self.act2 = nn.ReLU()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten()
            self.head = nn.Linear(width, N_COLOURS)
        materialise(self, seed)

    def forward(self, x: Float[Tensor, "batch 3 16 16"]) -> Float[Tensor, "batch 6"]:
        """Logits of the dominant colour."""
        return self.head(self.flatten(self.pool(self.act2(self.conv2(self.act1(self.conv1(x)))))))


_VERSION = 5
_RECIPE: dict[str, Any] = {"n_train": 2000, "epochs": 12, "lr": 5e-3, "batch_size": 64, "width": 40,
                           "n_designated": 8, "aux_weight": 1.0}


def planted_detectors(seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """A `SceneCNN` whose designated ``conv2`` channels were trained to detect designated concepts.

    ``n_designated`` distinct concepts and as many distinct channels of ``conv2`` are drawn from
    ``seed``; training adds to the dominant-colour cross-entropy a squared error between each designated
    channel's pre-activation map and its concept's mask as ±1. Every other channel of ``conv2`` is
    trained to map the scene's grain seen through its own random zero-mean 3×3 filter (`_texture`):
    a real feature, present on objects and background alike, that is none of the concepts (the
    channels of version 4 mapped background noise with the objects blanked, so all of them were
    also "not an object" detectors, and any mixture of them an object detector). With 32 of 40
    channels carrying such features, a random rotation of the channel basis mixes each concept
    into many units. The main task adapts only the designated channels (the others are detached
    before the head), so they do not become colour detectors on the side.

    Returns:
        ``(model, meta)`` with ``meta`` keys ``site`` (``"conv2"``), ``designated`` (``{channel:
        concept index}`` with string keys, as JSON stores them), ``concepts`` (`CONCEPTS`),
        ``accuracy`` (main task, held-out scenes), ``detector_auc`` (per designated channel,
        pixel-level ROC AUC of its map for its concept on held-out scenes), ``texture_r2`` (per
        undesignated channel, R² of its map against its grain target on held-out scenes) and
        ``config``.
    """
    config = {"version": _VERSION, "seed": seed, **_RECIPE}
    rng = np.random.default_rng(derive_seed(seed, "designate"))
    concepts = rng.choice(len(CONCEPTS), size=config["n_designated"], replace=False).tolist()
    channels = rng.choice(config["width"], size=config["n_designated"], replace=False).tolist()
    designated = {int(ch): int(c) for ch, c in zip(channels, concepts, strict=True)}

    def build() -> nn.Module:
        return SceneCNN(config["width"], seed=derive_seed(seed, "init"))

    def train(model: nn.Module) -> dict[str, Any]:
        if not isinstance(model, SceneCNN):
            raise TypeError(f"expected a SceneCNN, got {type(model).__name__}.")
        x, masks, y, grain = _scenes_with_grain(config["n_train"], seed=derive_seed(seed, "train-scenes"))
        is_designated = torch.zeros(config["width"], dtype=torch.bool)
        is_designated[list(designated)] = True
        ch, others = torch.tensor(list(designated)), torch.nonzero(~is_designated).flatten()
        target = masks[:, list(designated.values())].float() * 2.0 - 1.0  # maps of ±1: comparable scales
        filters = _texture_filters(len(others), derive_seed(seed, "texture"))
        texture = _texture(grain, filters)
        gen = generator(seed, "train")
        optimiser = torch.optim.Adam(model.parameters(), lr=config["lr"])
        model.train()
        for _ in range(config["epochs"]):
            for idx in torch.randperm(len(x), generator=gen).split(config["batch_size"]):
                pre = model.conv2(model.act1(model.conv1(x[idx])))
                pooled = model.flatten(model.pool(model.act2(pre)))
                # the main task trains the head on every channel but adapts only the designated ones
                pooled = torch.where(is_designated, pooled, pooled.detach())
                loss = F.cross_entropy(model.head(pooled), y[idx])
                loss = loss + config["aux_weight"] * F.mse_loss(pre[:, ch], target[idx])
                loss = loss + config["aux_weight"] * F.mse_loss(pre[:, others], texture[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        model.eval()
        xt, mt, yt, gt = _scenes_with_grain(500, seed=derive_seed(seed, "test-scenes"))
        with torch.no_grad():
            pre = model.conv2(model.act1(model.conv1(xt)))
            accuracy = float((model(xt).argmax(1) == yt).double().mean())
        aucs = {str(c): auroc(pre[:, c].flatten(), mt[:, k].flatten()) for c, k in designated.items()}
        tt = _texture(gt, filters)
        r2 = 1.0 - ((pre[:, others] - tt) ** 2).mean(dim=(0, 2, 3)) / tt.var(dim=(0, 2, 3))
        return {"site": "conv2", "designated": {str(c): k for c, k in designated.items()},
                "concepts": list(CONCEPTS), "accuracy": accuracy, "detector_auc": aucs,
                "texture_r2": {str(int(c)): float(v) for c, v in zip(others, r2, strict=True)}}

    return cached("planted_detectors", config, build, train)


def _texture_filters(n: int, seed: int) -> Tensor:
    """``n`` random 3×3 filters over the RGB planes, zero-mean per plane (blind to flat colour)."""
    w = torch.randn(n, 3, 3, 3, generator=torch.Generator().manual_seed(seed))
    return w - w.mean(dim=(2, 3), keepdim=True)


def _texture(grain: Tensor, filters: Tensor) -> Tensor:
    """Target maps of the undesignated channels: the grain seen through one random filter each.

    The grain is i.i.d. everywhere, independent of the objects' colours and shapes, so these
    channels carry real features that are none of the 12 concepts (nor "object"). Each map is
    scaled to the standard deviation of a uniform on [-1, 1] (the detectors' targets span ±1).
    """
    maps = F.conv2d(grain, filters, padding=1)
    return maps / maps.std(dim=(0, 2, 3), keepdim=True) / 3 ** 0.5
