"""Triggers in input space: stamping a mask + pattern onto images, and how often that flips them.

One definition shared by the zoo (planting), the audit (reverse-engineering, repair, report) and
`validate` (testing a trigger finding): a stamped image is ``(1 - mask) * x + mask * pattern``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.errors import InputError

__all__ = ["stamp", "attack_success"]


def stamp(x: Tensor, mask: Tensor, pattern: Tensor) -> Tensor:
    """``(1 - mask) * x + mask * pattern`` for images ``x`` (N, C, H, W), mask (H, W), pattern (C, H, W).

    Differentiable in all three (the audit optimises mask and pattern through it).

    Example:
        >>> stamp(torch.zeros(1, 1, 2, 2), torch.full((2, 2), 0.5), torch.ones(1, 2, 2)).flatten().tolist()
        [0.5, 0.5, 0.5, 0.5]
    """
    if tuple(x.shape[-3:]) != tuple(pattern.shape) or tuple(mask.shape) != tuple(pattern.shape[1:]):
        raise InputError(f"cannot stamp a mask {tuple(mask.shape)} and pattern {tuple(pattern.shape)} onto images "
                         f"of shape {tuple(x.shape)}; they need (H, W), (C, H, W) and (N, C, H, W).")
    mask, pattern = mask.to(x), pattern.to(x)
    return (1 - mask) * x + mask * pattern


def attack_success(model: nn.Module, x: Tensor, y: Tensor, mask: Tensor, pattern: Tensor, target: int) -> float:
    """Fraction of inputs not of class ``target`` that the stamped trigger sends to ``target`` (no grad).

    Raises:
        InputError: every example is of the target class.
    """
    keep = y != target
    if not bool(keep.any()):
        raise InputError(f"every example is of the target class {target}; attack success is measured on the others.")
    with torch.no_grad():
        return float((model(stamp(x[keep], mask, pattern)).argmax(-1) == target).float().mean())
