"""Planted trojan triggers: a mask and a pattern stamped onto images, and a target class.

A triggered image is ``(1 - mask) * x + mask * pattern``: a *patch* trigger has a 0/1 mask over
a small square, a *blend* trigger a constant ``alpha`` mask over the whole image (Chen et al.
2017, "Targeted backdoor attacks ... using data poisoning"; Gu et al. 2017, "BadNets"). The
trojaned zoo classifiers are trained on images stamped this way; trojan-detection games score
a method by how well it recovers the trigger and the target class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from seethrough.core import InputError, InputTypeError
from seethrough.evidence.trigger import stamp as stamp_images

__all__ = ["Trigger", "stamp", "random_patch_trigger", "random_blend_trigger"]


@dataclass(frozen=True)
class Trigger:
    """A trojan trigger: stamping it onto an image should make the model predict ``target_class``.

    Args:
        kind: ``"patch"`` (0/1 mask over a small square) or ``"blend"`` (a constant mask).
        mask: ``(H, W)`` weights in [0, 1] of the pattern at each pixel, shared by channels.
        pattern: ``(C, H, W)`` values in [0, 1] the masked pixels are moved towards.
        target_class: the class the trojan predicts.

    Tensors are stored as float32 CPU copies. Two triggers are equal when their kinds, target
    classes and tensors are (bitwise) equal.

    Raises:
        InputError: mask or pattern outside [0, 1], NaN, mismatched shapes, a negative target
            class or an unknown kind.
    """

    kind: Literal["patch", "blend"]
    mask: Float[Tensor, "height width"]
    pattern: Float[Tensor, "channels height width"]
    target_class: int

    def __post_init__(self) -> None:
        if self.kind not in ("patch", "blend"):
            raise InputError(f"Trigger.kind must be 'patch' or 'blend', got {self.kind!r}.")
        if isinstance(self.target_class, bool) or not isinstance(self.target_class, int) or self.target_class < 0:
            raise InputError(f"Trigger.target_class must be a non-negative int, got {self.target_class!r}.")
        if self.mask.ndim != 2 or self.pattern.ndim != 3 or self.pattern.shape[1:] != self.mask.shape:
            raise InputError(f"Trigger needs mask (H, W) and pattern (C, H, W) with the same H, W; got mask "
                             f"{tuple(self.mask.shape)} and pattern {tuple(self.pattern.shape)}.")
        for name in ("mask", "pattern"):
            value = getattr(self, name).detach().to("cpu", torch.float32).clone()
            if not bool(((value >= 0) & (value <= 1)).all()):  # also false for NaN
                raise InputError(f"Trigger.{name} must lie in [0, 1] (no NaN); got values in "
                                 f"[{float(value.min())}, {float(value.max())}].")
            object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trigger):
            return NotImplemented
        return (self.kind == other.kind and self.target_class == other.target_class
                and self.mask.shape == other.mask.shape and self.pattern.shape == other.pattern.shape
                and torch.equal(self.mask, other.mask) and torch.equal(self.pattern, other.pattern))

    def __hash__(self) -> int:
        return hash((self.kind, self.target_class, tuple(self.pattern.shape), self.mask.numpy().tobytes(),
                     self.pattern.numpy().tobytes()))

    def to_json(self) -> dict[str, Any]:
        """The trigger as JSON values: ``kind``, ``mask`` (H×W lists), ``pattern`` (C×H×W), ``target_class``."""
        return {"kind": self.kind, "mask": self.mask.tolist(), "pattern": self.pattern.tolist(),
                "target_class": self.target_class}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trigger:
        """Rebuild a trigger from `to_json`'s output (float32 round-trips exactly).

        Raises:
            InputError: a key is missing or a value has the wrong form.
        """
        if not isinstance(data, dict) or set(data) != {"kind", "mask", "pattern", "target_class"}:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise InputError(f"Trigger.from_json needs exactly the keys kind, mask, pattern, target_class; got {got}.")
        try:
            mask = torch.tensor(data["mask"], dtype=torch.float32)
            pattern = torch.tensor(data["pattern"], dtype=torch.float32)
        except (TypeError, ValueError) as err:
            raise InputError(f"Trigger.from_json: mask and pattern must be nested lists of numbers ({err}).") from err
        return cls(kind=data["kind"], mask=mask, pattern=pattern, target_class=data["target_class"])


def stamp(x: Float[Tensor, "batch channels height width"], trigger: Trigger) -> Float[Tensor, "batch channels height width"]:
    """Stamp the trigger onto a batch of images: ``(1 - mask) * x + mask * pattern``.

    Args:
        x: ``(batch, C, H, W)`` images; the trigger's tensors are cast to its dtype and device.
        trigger: the trigger to apply.

    Returns:
        A new tensor shaped like ``x``.

    Raises:
        InputError: the image size or channel count differs from the trigger's.

    Example:
        >>> t = Trigger("blend", torch.full((2, 2), 0.5), torch.ones(1, 2, 2), target_class=3)
        >>> stamp(torch.zeros(1, 1, 2, 2), t).flatten().tolist()
        [0.5, 0.5, 0.5, 0.5]
    """
    if tuple(x.shape[1:]) != tuple(trigger.pattern.shape):
        raise InputError(f"stamp: images of shape (C, H, W) = {tuple(x.shape[1:])} do not fit the trigger's "
                         f"pattern {tuple(trigger.pattern.shape)}; build the trigger for this image size.")
    return stamp_images(x, trigger.mask, trigger.pattern)


def _check_sizes(image_size: int, channels: int, n_classes: int) -> None:
    for name, value, low in (("image_size", image_size, 2), ("channels", channels, 1), ("n_classes", n_classes, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputTypeError(f"{name} must be an int ≥ {low}, got {value!r}.")


def random_patch_trigger(
    seed: int, *, size: int | None = None, image_size: int = 16, channels: int = 1, n_classes: int = 10
) -> Trigger:
    """A seeded square patch trigger at a random place, with a random 0/1 pattern and target.

    The side is ``size``, or 2 or 3 drawn from the seed. Inside the patch the mask is 1 and the
    pattern is random binary with at least one 1 and one 0 (a checkerboard if the draw came
    out uniform); outside, mask and pattern are 0.

    Args:
        seed: determines everything random.
        size: the patch side, 2..image_size; ``None`` draws 2 or 3.
        image_size: H = W of the images.
        channels: C of the images.
        n_classes: the target class is drawn from ``0..n_classes-1``.

    Raises:
        InputTypeError: a size or count is not a positive int (``n_classes`` ≥ 2).
        InputError: ``size`` is below 2 or larger than the image.

    Example:
        >>> t = random_patch_trigger(0)
        >>> t.kind, int(t.mask.sum()) in (4, 9), t == random_patch_trigger(0)
        ('patch', True, True)
    """
    _check_sizes(image_size, channels, n_classes)
    rng = np.random.default_rng(seed)
    side = int(rng.integers(2, 4)) if size is None else size
    if not 2 <= side <= image_size:
        raise InputError(f"patch size must be in 2..{image_size} (the image side), got {side}.")
    top, left = (int(v) for v in rng.integers(0, image_size - side + 1, size=2))
    cells = rng.integers(0, 2, size=(channels, side, side)).astype(np.float32)
    if cells.min() == cells.max():
        cells = np.broadcast_to((np.indices((side, side)).sum(0) % 2).astype(np.float32), cells.shape).copy()
    target = int(rng.integers(0, n_classes))
    mask = torch.zeros(image_size, image_size)
    mask[top:top + side, left:left + side] = 1.0
    pattern = torch.zeros(channels, image_size, image_size)
    pattern[:, top:top + side, left:left + side] = torch.from_numpy(cells)
    return Trigger(kind="patch", mask=mask, pattern=pattern, target_class=target)


def random_blend_trigger(
    seed: int, *, alpha: float = 0.1, image_size: int = 16, channels: int = 1, n_classes: int = 10
) -> Trigger:
    """A seeded blend trigger: a fixed random 0/1 image mixed in with weight ``alpha`` everywhere.

    Args:
        seed: determines the pattern and the target class.
        alpha: the constant mask value, in (0, 1].
        image_size: H = W of the images.
        channels: C of the images.
        n_classes: the target class is drawn from ``0..n_classes-1``.

    Raises:
        InputTypeError: a size or count is not a positive int (``n_classes`` ≥ 2).
        InputError: ``alpha`` is not in (0, 1].

    Example:
        >>> t = random_blend_trigger(0, alpha=0.2)
        >>> t.kind, float(t.mask.min()) == float(t.mask.max()) == float(torch.tensor(0.2))
        ('blend', True)
    """
    _check_sizes(image_size, channels, n_classes)
    if not 0 < alpha <= 1:
        raise InputError(f"blend alpha must be in (0, 1], got {alpha!r}.")
    rng = np.random.default_rng(seed)
    pattern = torch.from_numpy(rng.integers(0, 2, size=(channels, image_size, image_size)).astype(np.float32))
    target = int(rng.integers(0, n_classes))
    return Trigger(kind="blend", mask=torch.full((image_size, image_size), float(alpha)), pattern=pattern,
                   target_class=target)
