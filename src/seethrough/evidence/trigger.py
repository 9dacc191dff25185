"""Triggers in input space: one `Trigger` (mask, pattern, target, family), stamping it, and the two rates a
trojan is judged by (`accuracy` on clean inputs, `attack_success` of the stamped ones).

One definition shared by the zoo (planting), the audit (reverse-engineering, repair, attack,
report), the games and `validate` (testing a trojan finding): a stamped image is
``(1 - mask) * inputs + mask * pattern``. The family is ``"patch"`` (a mask that is non-zero on a
few pixels) or ``"blend"`` (one amplitude over the whole image, Chen et al. 2017).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..core.checks import check_int
from ..core.errors import InputError
from ..core.results import Result, new_figure

__all__ = ["Trigger", "stamp", "attack_success", "accuracy", "FAMILIES"]

#: The trigger families (``Trigger.family``).
FAMILIES = ("patch", "blend")
_KEYS = {"mask", "pattern", "target", "family"}
_LEGACY_KEYS = {"kind", "mask", "pattern", "target_class"}  # the zoo's metadata before issue #9


@dataclass(frozen=True, eq=False)
class Trigger(Result):
    """A trojan trigger: stamping ``pattern`` through ``mask`` should make the model predict ``target``.

    Args:
        mask: ``(H, W)`` weights in [0, 1] of the pattern at each pixel, shared by the channels.
        pattern: ``(C, H, W)`` finite values the masked pixels are moved towards.
        target: the class the trigger sends inputs to.
        family: ``"patch"`` or ``"blend"``.

    The tensors are kept as given (they may carry gradients inside an optimisation loop). Two
    triggers are equal when family, target and tensors are bitwise equal.

    Raises:
        InputError: mismatched shapes, a mask outside [0, 1] or NaN, a non-finite pattern, a target
            that is not a non-negative int, or an unknown family.

    Example:
        >>> t = Trigger(torch.full((2, 2), 0.5), torch.ones(1, 2, 2), target=3, family="blend")
        >>> t.mask_l1, t.to_dict()["target"]
        (2.0, 3)
    """

    # plain Tensor annotations: __post_init__ checks the shapes and says how to fix them
    mask: Tensor  # (height, width)
    pattern: Tensor  # (channels, height, width)
    target: int
    family: str = "patch"

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise InputError(f"Trigger.family must be 'patch' or 'blend', got {self.family!r}.")
        object.__setattr__(self, "target", check_int("Trigger.target", self.target, at_least=0))
        if not isinstance(self.mask, Tensor) or not isinstance(self.pattern, Tensor):
            raise InputError(f"Trigger needs tensors for mask and pattern; got {type(self.mask).__name__} and "
                             f"{type(self.pattern).__name__}.")
        if self.mask.ndim != 2 or self.pattern.ndim != 3 or tuple(self.pattern.shape[1:]) != tuple(self.mask.shape):
            raise InputError(f"Trigger needs mask (H, W) and pattern (C, H, W) with the same H, W; got mask "
                             f"{tuple(self.mask.shape)} and pattern {tuple(self.pattern.shape)}.")
        if self.mask.numel() and not bool(((self.mask >= 0) & (self.mask <= 1)).all()):  # also false for NaN
            raise InputError(f"Trigger.mask must lie in [0, 1] (no NaN); got values in "
                             f"[{float(self.mask.min())}, {float(self.mask.max())}].")
        if not bool(torch.isfinite(self.pattern).all()):
            raise InputError("Trigger.pattern must be finite (no NaN or inf); clamp or rebuild it.")

    @property
    def mask_l1(self) -> float:
        """The trigger's size: the sum of the mask (pixels for a 0/1 patch, ``alpha · H · W`` for a blend)."""
        return float(self.mask.detach().sum())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trigger):
            return NotImplemented
        return (self.family == other.family and self.target == other.target
                and self.mask.shape == other.mask.shape and self.pattern.shape == other.pattern.shape
                and torch.equal(self.mask.detach().cpu(), other.mask.detach().cpu())
                and torch.equal(self.pattern.detach().cpu(), other.pattern.detach().cpu()))

    def __hash__(self) -> int:
        return hash((self.family, self.target, tuple(self.pattern.shape),
                     self.mask.detach().cpu().float().numpy().tobytes(),
                     self.pattern.detach().cpu().float().numpy().tobytes()))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trigger:
        """Rebuild a trigger from ``to_dict()``'s output (float32 round-trips exactly).

        Also reads the zoo's older metadata (``kind``, ``target_class``), alone or beside the new keys.

        Raises:
            InputError: a key is missing or a value has the wrong form.
        """
        keys = set(data) if isinstance(data, dict) else set()
        if keys not in (_KEYS, _LEGACY_KEYS, _KEYS | _LEGACY_KEYS):
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise InputError(f"Trigger.from_dict needs exactly the keys mask, pattern, target, family; got {got}.")
        try:
            mask = torch.tensor(data["mask"], dtype=torch.float32)
            pattern = torch.tensor(data["pattern"], dtype=torch.float32)
        except (TypeError, ValueError) as err:
            raise InputError(f"Trigger.from_dict: mask and pattern must be nested lists of numbers ({err}).") from err
        target = data["target"] if "target" in data else data["target_class"]
        return cls(mask, pattern, target, data["family"] if "family" in data else data["kind"])

    def to_frame(self) -> Any:
        """One row: family, target, mask L1, the number of pixels the mask touches, and the image size."""
        import pandas as pd

        return pd.DataFrame({"family": [self.family], "target": [self.target], "mask_l1": [self.mask_l1],
                             "pixels": [int((self.mask > 0).sum())], "channels": [int(self.pattern.shape[0])],
                             "height": [int(self.mask.shape[0])], "width": [int(self.mask.shape[1])]})

    def plot(self) -> Any:
        """The mask and ``mask × pattern`` side by side (a matplotlib ``Figure``; no pyplot state)."""
        fig = new_figure(4.4, 2.4)
        ax1, ax2 = fig.subplots(1, 2)
        mask, pattern = self.mask.detach().cpu(), self.pattern.detach().cpu()
        ax1.imshow(mask.numpy(), cmap="magma", vmin=0, vmax=1)
        shown = pattern * mask
        ax2.imshow((shown[0] if shown.shape[0] != 3 else shown.permute(1, 2, 0)).clamp(0, 1).numpy(), cmap="gray",
                   vmin=0, vmax=1)
        ax1.set_title("mask", fontsize=8)
        ax2.set_title(f"mask × pattern → class {self.target}", fontsize=8)
        for ax in (ax1, ax2):
            ax.set_xticks([])
            ax.set_yticks([])
        return fig


def stamp(inputs: Float[Tensor, "batch channels height width"], trigger: Trigger
          ) -> Float[Tensor, "batch channels height width"]:
    """``(1 - mask) * inputs + mask * pattern``: the trigger stamped onto a batch of images.

    Differentiable in the inputs and in the trigger's tensors (the audit optimises them through it);
    the trigger's tensors are cast to the inputs' dtype and device.

    Raises:
        InputError: images whose (C, H, W) differ from the trigger's pattern.

    Example:
        >>> t = Trigger(torch.full((2, 2), 0.5), torch.ones(1, 2, 2), target=3, family="blend")
        >>> stamp(torch.zeros(1, 1, 2, 2), t).flatten().tolist()
        [0.5, 0.5, 0.5, 0.5]
    """
    if not isinstance(inputs, Tensor) or inputs.ndim != 4 or tuple(inputs.shape[1:]) != tuple(trigger.pattern.shape):
        raise InputError(f"stamp: images of shape {tuple(getattr(inputs, 'shape', ()))} do not fit the trigger's "
                         f"pattern (C, H, W) = {tuple(trigger.pattern.shape)}; pass (N, C, H, W) images of that size.")
    mask, pattern = trigger.mask.to(inputs), trigger.pattern.to(inputs)
    return (1 - mask) * inputs + mask * pattern


def _predict(model: nn.Module, inputs: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(inputs[i:i + batch_size]).argmax(-1) for i in range(0, len(inputs), batch_size)])


def _check_labels(inputs: Tensor, labels: Tensor) -> None:
    if not isinstance(labels, Tensor) or labels.ndim != 1 or len(inputs) != len(labels) or len(labels) == 0:
        raise InputError(f"need inputs (N, ...) and labels (N,) with N > 0; got inputs "
                         f"{tuple(getattr(inputs, 'shape', ()))} and labels {tuple(getattr(labels, 'shape', ()))}.")


def accuracy(model: nn.Module, inputs: Tensor, labels: Tensor, *, batch_size: int = 1024) -> float:
    """Fraction of ``inputs`` whose argmax prediction is ``labels`` (no grad; modes as they are).

    Raises:
        InputError: mismatched or empty inputs and labels.

    Example:
        >>> accuracy(nn.Identity(), torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([1, 1]))
        0.5
    """
    _check_labels(inputs, labels)
    return float((_predict(model, inputs, batch_size) == labels).double().mean())


def attack_success(model: nn.Module, inputs: Tensor, labels: Tensor, trigger: Trigger, *,
                   batch_size: int = 1024) -> float:
    """Fraction of inputs not of class ``trigger.target`` that the stamped trigger sends there (no grad).

    Raises:
        InputError: mismatched inputs and labels, or every example is of the target class.
    """
    _check_labels(inputs, labels)
    keep = labels != trigger.target
    if not bool(keep.any()):
        raise InputError(f"every example is of the target class {trigger.target}; attack success is measured on "
                         "the others.")
    return float((_predict(model, stamp(inputs[keep], trigger), batch_size) == trigger.target).double().mean())
