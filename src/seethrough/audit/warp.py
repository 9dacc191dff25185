"""The warp trigger family for the trigger search: a smooth displacement field from a small control grid.

`WarpParametrisation` is the `seethrough.audit.families.Parametrisation` behind
``family="warp"``: one class's search optimises a ``grid × grid`` control field of (dy, dx) in
pixels, upsampled bicubically to the image (WaNet's construction, Nguyen & Tran 2021), and the
engine (`reverse_engineer_trigger`, `neural_cleanse`) shrinks it while the warp still sends the
inputs to the class. A warp-trojaned model needs an unusually small warp for its target.
`field_correlation` scores a reversed field against a planted one.

Measured on dev seeds 0-7 (zoo MLP and CNN recipes poisoned with ``random_warp_trigger(seed,
strength=0.75)``, 200 test digits, ``neural_cleanse(..., family="warp")``, K-Arm schedule with
full-batch exploits then): the planted target had the smallest reversed warp in 16/16 models,
0.29-0.54 pixels mean displacement against 1.07-1.22 for the smallest class of clean models;
runner-up / smallest 1.97-6.81 (clean models 1.01-1.18, patch models 1.00-1.56; blend models
1.39-3.83, at the blend's target: a small warp also fires a blend backdoor); field correlation with
the planted warp 0.02-0.65 (mean 0.44 MLP, 0.52 CNN). Re-measured with the K-Arm exploit on half
batches (`K_ARM_EXPLOIT_SHRINK`, issue #11; MLP seeds 0-7, CNN seeds 0-2, the audit's 200-digit scan
split, 300 steps): the planted target smallest in 11/11 warp models, runner-up / smallest 2.04-5.30
(clean 1.01-1.29, patch 1.01-1.16, blend 1.31-2.59), for 483-650 forward+backward passes a warp
scan (the full schedule: 2,160-2,970).

References:
    Nguyen & Tran, "WaNet - Imperceptible Warping-based Backdoor Attack", ICLR 2021.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.checks import check_int
from ..core.errors import InputError
from ..evidence.trigger import Trigger, displacement
from .families import PatternRange

__all__ = ["WarpParametrisation", "field_correlation", "upsample_field"]


class WarpParametrisation:
    """``"warp"``: a smooth field ``(2, H, W)`` upsampled from a ``grid × grid`` control field (in pixels).

    The search's one leaf tensor is the control field ``(2, grid, grid)``, drawn near zero (normal,
    standard deviation 0.1 pixel); the trigger's field is its bicubic upsampling to ``(H, W)``
    (``align_corners=True``: the control points sit on pixels), with a mask of ones and a pattern of
    zeros (a warp adds no pixels). ``size`` is the L2,1 norm of the displacement: the sum over pixels
    of each pixel's displacement length ``|(dy, dx)|₂`` (`seethrough.evidence.displacement`), in
    pixels, i.e. ``H · W ×`` the mean displacement (`Trigger.mean_displacement`). Summed over the
    pixels like a patch's mask L1, so the engine's sparsity weight starts on the same scale. It is
    what the scan ranks classes by and the size it reports.

    `trigger` builds triggers for the image shape of the last `init` (the protocol's ``trigger`` is
    not given the shape, and the control field does not fix it); every search of one scan shares it.

    Args:
        grid: the control grid's side k (≥ 2; WaNet's k = 4 by default). A larger grid can reach
            less smooth warps; the images must be at least ``grid`` pixels on each side.

    Example:
        >>> p = WarpParametrisation()
        >>> params = p.init((1, 8, 8), torch.Generator().manual_seed(0))
        >>> t = p.trigger(params, 2, (0.0, 1.0))
        >>> t.family, tuple(t.field.shape), float(p.size(t)) == 64 * t.mean_displacement
        ('warp', (2, 8, 8), True)
    """

    family = "warp"

    def __init__(self, grid: int = 4) -> None:
        self.grid = grid
        self.shape_: tuple[int, int, int] | None = None

    def init(self, shape: tuple[int, int, int], generator: torch.Generator) -> list[Tensor]:
        check_int("grid", self.grid, at_least=2)
        c, h, w = shape
        if min(h, w) < self.grid:
            raise InputError(f"a warp search with a {self.grid} × {self.grid} control grid needs images of at least "
                             f"that many pixels a side; got H, W = {h}, {w}. Pass a smaller grid.")
        self.shape_ = (c, h, w)
        return [torch.randn(2, self.grid, self.grid, generator=generator) * 0.1]

    def trigger(self, params: list[Tensor], target: int, pattern_range: PatternRange) -> Trigger:
        (control,) = params
        if self.shape_ is None:
            raise InputError("WarpParametrisation.trigger needs init(shape, generator) first (it fixes the image size).")
        c, h, w = self.shape_
        return Trigger(torch.ones(h, w, dtype=control.dtype), torch.zeros(c, h, w, dtype=control.dtype), target,
                       "warp", upsample_field(control, (h, w)))

    def size(self, trigger: Trigger) -> Tensor:
        return displacement(trigger).sum()

    def __repr__(self) -> str:
        return f"WarpParametrisation(grid={self.grid})"


def upsample_field(control: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic upsampling (``align_corners=True``) of a control field ``(2, k, k)`` to ``(2, H, W)``."""
    return F.interpolate(control[None], size=size, mode="bicubic", align_corners=True)[0]


def field_correlation(found: Trigger, planted: Trigger) -> float:
    """Pearson correlation of two warps' displacements ``mask · field``, over both components and every pixel.

    1 when the reversed warp is a positive multiple of the planted one (a smaller warp in the same
    direction still counts), about 0 for an unrelated warp. Pixels the planted warp moves by less
    than a tenth of its mean displacement are left out (there the direction is noise).

    Raises:
        InputError: either trigger is not a warp, or their sizes differ.

    Example:
        >>> f = torch.randn(2, 6, 6, generator=torch.Generator().manual_seed(0))
        >>> w = Trigger(torch.ones(6, 6), torch.zeros(1, 6, 6), 0, "warp", f)
        >>> round(field_correlation(Trigger(torch.full((6, 6), 0.3), torch.zeros(1, 6, 6), 0, "warp", f), w), 6)
        1.0
    """
    if found.field is None or planted.field is None or found.mask.shape != planted.mask.shape:
        raise InputError(f"field_correlation needs two warp triggers of one size; got a {found.family} "
                         f"{tuple(found.mask.shape)} and a {planted.family} {tuple(planted.mask.shape)}.")
    a = (found.mask * found.field).detach().double()
    b = (planted.mask * planted.field).detach().double()
    moved = displacement(planted).detach() > 0.1 * planted.mean_displacement
    a, b = a[:, moved].flatten(), b[:, moved].flatten()
    if a.numel() < 2 or float(a.std()) == 0 or float(b.std()) == 0:
        return 0.0
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])
