"""Trigger families as parametrisations: what the trigger search optimises, for each family.

The search engine (`reverse_engineer_trigger`, `neural_cleanse`) is family-generic: a
`Parametrisation` says which leaf tensors one class's search optimises (`init`), how they make a
`Trigger` (`trigger`, differentiable) and what the sparsity weight penalises and the scan ranks
(`size`). ``"patch"`` learns a mask value per pixel, ``"blend"`` one mask value for all pixels
(both: the mask's L1); ``"warp"`` is `seethrough.audit.warp.WarpParametrisation`.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..core.errors import InputError
from ..evidence.trigger import Trigger

__all__ = ["Parametrisation", "PatchParametrisation", "BlendParametrisation", "parametrisation", "PatternRange"]

PatternRange = tuple[float | Tensor, float | Tensor]


@runtime_checkable
class Parametrisation(Protocol):
    """How one trigger family is searched: leaf tensors, the trigger they make, and its size.

    ``init(shape, generator)`` returns the leaf tensors of one class's search for images of
    ``shape = (C, H, W)`` (the engine makes them require grad and owns their optimiser);
    ``trigger(params, target, pattern_range)`` builds the `Trigger` (differentiable in ``params``;
    the pattern stays inside ``pattern_range``); ``size(trigger)`` is a differentiable scalar: what
    the sparsity weight penalises and the scan ranks classes by.
    """

    family: str

    def init(self, shape: tuple[int, int, int], generator: torch.Generator) -> list[Tensor]: ...

    def trigger(self, params: list[Tensor], target: int, pattern_range: PatternRange) -> Trigger: ...

    def size(self, trigger: Trigger) -> Tensor: ...


class _MaskAndPattern:
    """A sigmoid mask (per pixel, or one value) and a sigmoid pattern inside the pattern box."""

    family = "patch"
    _per_pixel = True

    def init(self, shape: tuple[int, int, int], generator: torch.Generator) -> list[Tensor]:
        c, h, w = shape
        # the draws (mask, then pattern) and their scales are Neural Cleanse's start as the engine had it
        mask_logit = torch.randn((h, w) if self._per_pixel else (), generator=generator) * 0.1 - 2.0
        pattern_logit = torch.randn(c, h, w, generator=generator) * 0.1
        return [mask_logit, pattern_logit]

    def trigger(self, params: list[Tensor], target: int, pattern_range: PatternRange) -> Trigger:
        mask_logit, pattern_logit = params
        low, high = pattern_range
        h, w = pattern_logit.shape[1:]
        mask = torch.sigmoid(mask_logit).expand(h, w)
        pattern = low + (high - low) * torch.sigmoid(pattern_logit)
        return Trigger(mask, pattern, target, self.family)

    def size(self, trigger: Trigger) -> Tensor:
        return trigger.mask.sum()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PatchParametrisation(_MaskAndPattern):
    """``"patch"``: a free mask value per pixel (small patches); size = mask L1."""

    family = "patch"
    _per_pixel = True


class BlendParametrisation(_MaskAndPattern):
    """``"blend"``: one mask value ``alpha`` for all pixels (a full-image blend); size = ``alpha · H · W``."""

    family = "blend"
    _per_pixel = False


def parametrisation(family: str) -> Parametrisation:
    """The `Parametrisation` that searches triggers of ``family``.

    Raises:
        InputError: an unknown family (or ``"warp"`` while `seethrough.audit.warp` is missing).

    Example:
        >>> p = parametrisation("blend")
        >>> [tuple(t.shape) for t in p.init((1, 4, 4), torch.Generator().manual_seed(0))]
        [(), (1, 4, 4)]
    """
    if family == "patch":
        return PatchParametrisation()
    if family == "blend":
        return BlendParametrisation()
    if family == "warp":
        try:  # imported on demand: the warp family lives in its own module (seethrough.audit.warp)
            warp = importlib.import_module(".warp", __package__)
        except ImportError as err:
            raise InputError("family 'warp' needs seethrough.audit.warp (WarpParametrisation), which is not "
                             "installed in this tree; search 'patch' or 'blend'.") from err
        found: Parametrisation = warp.WarpParametrisation()
        return found
    raise InputError(f"family must be 'patch', 'blend' or 'warp', got {family!r}.")
