"""Planted trojan triggers: seeded `seethrough.evidence.Trigger`s (a mask, a pattern or field, a target class).

A triggered image is ``(1 - mask) * x + mask * pattern`` (`seethrough.evidence.stamp`): a *patch* trigger has a 0/1 mask over
a small square, a *blend* trigger a constant ``alpha`` mask over the whole image (Chen et al.
2017, "Targeted backdoor attacks ... using data poisoning"; Gu et al. 2017, "BadNets"). A *warp*
trigger resamples the image along a smooth random displacement field (Nguyen & Tran 2021,
"WaNet"). The trojaned zoo classifiers are trained on images stamped this way; trojan-detection
games score a method by how well it recovers the trigger and the target class.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from seethrough.core import InputError, InputTypeError
from seethrough.evidence import Trigger

__all__ = ["random_patch_trigger", "random_blend_trigger", "random_warp_trigger", "WARP_STRENGTH"]

#: `random_warp_trigger`'s default strength, in pixels. Chosen on dev seeds 0-7 (digits, the zoo's MLP and CNN
#: recipes, 10% poisoning through `train_classifier`): at 0.75 every model reached attack success ≥ 0.92 (CNN
#: worst 0.919, MLP ≥ 0.99) and clean accuracy ≥ 0.93, with a mean displacement of 0.80-1.02 pixels; at 0.5
#: (0.53-0.68 px) the CNN fell to 0.896 on seed 7, at 0.25 to 0.80 (MLP seed 5).
WARP_STRENGTH = 0.75


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
        >>> t.family, int(t.mask.sum()) in (4, 9), t == random_patch_trigger(0)
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
    return Trigger(mask, pattern, target, "patch")


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
        >>> t.family, float(t.mask.min()) == float(t.mask.max()) == float(torch.tensor(0.2))
        ('blend', True)
    """
    _check_sizes(image_size, channels, n_classes)
    if not 0 < alpha <= 1:
        raise InputError(f"blend alpha must be in (0, 1], got {alpha!r}.")
    rng = np.random.default_rng(seed)
    pattern = torch.from_numpy(rng.integers(0, 2, size=(channels, image_size, image_size)).astype(np.float32))
    target = int(rng.integers(0, n_classes))
    return Trigger(torch.full((image_size, image_size), float(alpha)), pattern, target, "blend")


def random_warp_trigger(
    seed: int, *, strength: float = WARP_STRENGTH, grid: int = 4, image_size: int = 16, channels: int = 1,
    n_classes: int = 10,
) -> Trigger:
    """A seeded WaNet warp: a smooth random displacement field of mean size about ``strength`` pixels.

    WaNet's construction (Nguyen & Tran 2021, section 3.2): a ``grid × grid`` control field of
    (dy, dx) drawn uniformly from [-1, 1], divided by its mean absolute value (so the mean
    ``|dy|``, ``|dx|`` of the control points is 1), upsampled bicubically (``align_corners=True``) to
    ``image_size × image_size`` and multiplied by ``strength``. Here the field is in pixels: WaNet adds
    ``s · field / h`` to an ``h``-pixel image's [-1, 1] sampling grid, that is ``s · (h - 1) / (2 h)``
    ≈ ``s / 2`` pixels per unit of field, so its s = 0.5 is ``strength`` ≈ 0.25. WaNet clamps the
    warped grid to the image; `stamp`'s border padding does the same. The mask is ones and the
    pattern zeros (a warp moves pixels and adds none).

    Args:
        seed: determines the field and the target class.
        strength: scales the normalised field, in pixels (> 0).
        grid: k, the control grid's side (2..image_size): small k, smooth warps.
        image_size: H = W of the images.
        channels: C of the images.
        n_classes: the target class is drawn from ``0..n_classes-1``.

    Raises:
        InputTypeError: a size or count is not a positive int (``n_classes`` ≥ 2).
        InputError: ``strength`` not positive and finite, or ``grid`` outside 2..image_size.

    Example:
        >>> t = random_warp_trigger(0, strength=0.5)
        >>> t.family, tuple(t.field.shape), t == random_warp_trigger(0, strength=0.5)
        ('warp', (2, 16, 16), True)
    """
    _check_sizes(image_size, channels, n_classes)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength < float("inf"):
        raise InputError(f"warp strength must be a positive finite number of pixels, got {strength!r}.")
    if isinstance(grid, bool) or not isinstance(grid, int) or not 2 <= grid <= image_size:
        raise InputError(f"warp grid must be an int in 2..{image_size} (the image side), got {grid!r}.")
    rng = np.random.default_rng(seed)
    control = rng.uniform(-1.0, 1.0, size=(1, 2, grid, grid))
    control = control / np.abs(control).mean()
    field = F.interpolate(torch.from_numpy(control), size=(image_size, image_size), mode="bicubic",
                          align_corners=True)[0] * float(strength)
    target = int(rng.integers(0, n_classes))
    return Trigger(torch.ones(image_size, image_size), torch.zeros(channels, image_size, image_size), target, "warp",
                   field.float())
