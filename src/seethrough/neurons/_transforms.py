"""Image machinery of feature synthesis: parametrisations, random transformations, regularisers.

Private helpers of `seethrough.neurons.synthesis`, kept apart so that file stays one concept.
Images are ``(batch, channels, height, width)`` tensors inside a box ``[lo, hi]``. The Fourier
parametrisation follows Olah et al. 2017 ("Feature Visualization", Distill): the image is
``lo + (hi - lo) * sigmoid(irfft2(spectrum * scale))`` with ``scale = 1 / max(f, 1/size) ** decay``,
so every step of gradient ascent moves low frequencies more than high ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.checks import check_float, check_int
from ..core.errors import InputError

__all__ = ["Transforms"]

_EPS = 1e-4  # keeps logit() finite when an init image touches the box


@dataclass(frozen=True)
class Transforms:
    """Random transformations applied to the images at every synthesis step (transformation robustness).

    Each image gets its own draw: an integer shift of up to ``jitter`` pixels along each axis,
    a scale factor in ``[1 - scale, 1 + scale]`` and a rotation in ``[-rotate, rotate]`` degrees,
    applied with one ``affine_grid``/``grid_sample`` (bilinear, border padding). All zero (the
    default) is the identity and draws nothing.

    Example:
        >>> x = torch.rand(2, 1, 5, 5)
        >>> torch.equal(Transforms().apply(x, torch.Generator().manual_seed(0)), x)
        True

    References:
        Mordvintsev, Olah and Tyka, "Inceptionism", 2015; Olah, Mordvintsev and Schubert,
        "Feature Visualization", Distill 2017.
    """

    jitter: int = 0
    scale: float = 0.0
    rotate: float = 0.0

    def __post_init__(self) -> None:
        check_int("Transforms.jitter (pixels)", self.jitter, at_least=0)
        if not 0.0 <= check_float("Transforms.scale", self.scale) < 1.0:
            raise InputError(f"Transforms.scale must be in [0, 1), got {self.scale!r}; pass a fraction below 1.")
        check_float("Transforms.rotate (degrees)", self.rotate, at_least=0.0, at_most=180.0)

    @property
    def identity(self) -> bool:
        """Whether every strength is zero."""
        return self.jitter == 0 and self.scale == 0 and self.rotate == 0

    def apply(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Transform each image of ``x`` (N, C, H, W) with its own random draw (differentiable in ``x``)."""
        if self.identity:
            return x
        if x.ndim != 4:
            raise InputError(f"transformations need images (N, C, H, W); got shape {tuple(x.shape)}. "
                             "Pass transforms=Transforms() for other inputs.")
        n, _, h, w = x.shape
        shift = torch.randint(-self.jitter, self.jitter + 1, (n, 2), generator=generator).double()
        factor = 1.0 + (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * self.scale
        angle = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * math.radians(self.rotate)
        return affine(x, angle, factor, shift)


def affine(x: Tensor, angle: Tensor, factor: Tensor, shift: Tensor) -> Tensor:
    """Rotate by ``angle`` (radians), zoom by ``factor`` and shift by ``shift`` = (dx, dy) pixels, per image.

    A positive shift moves the content right/down. Sampling is bilinear with border padding on
    pixel centres (``align_corners=False``), so the identity reproduces ``x``.
    """
    n, _, h, w = x.shape
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    # theta maps output coordinates in [-1, 1] to input coordinates: x_in = A x_out + t.
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, 0, 2] = -2.0 * shift[:, 0] / w
    theta[:, 1, 2] = -2.0 * shift[:, 1] / h
    grid = F.affine_grid(theta.to(x), [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def fourier_scale(h: int, w: int, decay: float) -> Tensor:
    """``1 / max(f, 1/max(h, w)) ** decay`` on the ``rfft2`` grid (h, w // 2 + 1)."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    freq = torch.sqrt(fy**2 + fx**2).clamp(min=1.0 / max(h, w))
    return freq.pow(-decay)


def fourier_to_image(spectrum: Tensor, scale: Tensor, size: tuple[int, int], lo: float, hi: float) -> Tensor:
    """Images from the real view ``(..., h, w//2+1, 2)`` of a scaled spectrum (see the module docstring)."""
    z = torch.fft.irfft2(torch.view_as_complex(spectrum) * scale.to(spectrum), s=size, norm="ortho")
    return lo + (hi - lo) * torch.sigmoid(z)


def image_to_fourier(x: Tensor, scale: Tensor, lo: float, hi: float) -> Tensor:
    """The inverse of `fourier_to_image` for images strictly inside the box (clipped by ``_EPS`` otherwise)."""
    unit = ((x - lo) / (hi - lo)).clamp(_EPS, 1 - _EPS)
    z = torch.logit(unit)
    return torch.view_as_real(torch.fft.rfft2(z, norm="ortho") / scale.to(z)).contiguous()


def total_variation(x: Tensor) -> Tensor:
    """Per-image mean absolute difference of neighbouring pixels (anisotropic L1 total variation)."""
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dy + dx


def blur3(x: Tensor) -> Tensor:
    """A 3×3 binomial blur ([1, 2, 1] / 4 along each axis) per channel, replicate padding."""
    c = x.shape[1]
    k1 = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device) / 4
    kernel = (k1[:, None] * k1[None, :]).expand(c, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
