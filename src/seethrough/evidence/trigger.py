"""Triggers in input space: one `Trigger` (mask, pattern, target, family, field), stamping it, and the two
rates a trojan is judged by (`accuracy` on clean inputs, `attack_success` of the stamped ones).

One definition shared by the zoo (planting), the audit (reverse-engineering, repair, attack,
report), the games and `validate` (testing a trojan finding). For ``"patch"`` (a mask that is
non-zero on a few pixels) and ``"blend"`` (one amplitude over the whole image, Chen et al. 2017) a
stamped image is ``(1 - mask) * inputs + mask * pattern``. For ``"warp"`` (a smooth displacement
of the pixels, Nguyen & Tran 2021, "WaNet") the inputs are resampled bilinearly at
``identity + mask · field`` (`stamp`); the pattern then only carries the shape (C, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from ..core.checks import check_int
from ..core.errors import InputError
from ..core.results import Result, new_figure

__all__ = ["Trigger", "stamp", "displacement", "attack_success", "accuracy", "FAMILIES"]

#: The trigger families (``Trigger.family``).
FAMILIES = ("patch", "blend", "warp")
_KEYS = {"mask", "pattern", "target", "family"}  # plus "field" for a warp
_LEGACY_KEYS = {"kind", "mask", "pattern", "target_class"}  # the zoo's metadata before issue #9


@dataclass(frozen=True, eq=False)
class Trigger(Result):
    """A trojan trigger: stamping it (`stamp`) should make the model predict ``target``.

    Args:
        mask: ``(H, W)`` weights in [0, 1] of the trigger at each pixel, shared by the channels: of the
            pattern (patch, blend), or of the displacement (warp: a planted warp has a mask of ones).
        pattern: ``(C, H, W)`` finite values the masked pixels are moved towards. A warp moves pixels
            instead: its pattern only fixes (C, H, W) (zeros by convention; `stamp` ignores it).
        target: the class the trigger sends inputs to.
        family: ``"patch"``, ``"blend"`` or ``"warp"``.
        field: a warp's ``(2, H, W)`` finite displacement in pixels, ``(dy, dx)`` per output pixel: the
            stamped pixel (i, j) is read from (i + mask·dy, j + mask·dx) of the input. ``None`` (and only
            ``None``) for patch and blend.

    The tensors are kept as given (they may carry gradients inside an optimisation loop). Two
    triggers are equal when family, target and tensors (field included) are bitwise equal.

    Raises:
        InputError: mismatched shapes, a mask outside [0, 1] or NaN, a non-finite pattern or field, a
            target that is not a non-negative int, an unknown family, a warp without a (2, H, W) field
            (or with H or W below 2), or a field given to a patch or blend.

    Example:
        >>> t = Trigger(torch.full((2, 2), 0.5), torch.ones(1, 2, 2), target=3, family="blend")
        >>> t.mask_l1, t.to_dict()["target"]
        (2.0, 3)
        >>> w = Trigger(torch.ones(2, 2), torch.zeros(1, 2, 2), 1, "warp", field=torch.zeros(2, 2, 2))
        >>> w.family, w.mean_displacement
        ('warp', 0.0)
    """

    # plain Tensor annotations: __post_init__ checks the shapes and says how to fix them
    mask: Tensor  # (height, width)
    pattern: Tensor  # (channels, height, width)
    target: int
    family: str = "patch"
    field: Tensor | None = None  # (2, height, width): (dy, dx) in pixels; warp only

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise InputError(f"Trigger.family must be 'patch', 'blend' or 'warp', got {self.family!r}.")
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
        self._check_field()

    def _check_field(self) -> None:
        field, hw = self.field, tuple(self.mask.shape)
        if self.family != "warp":
            if field is not None:
                raise InputError(f"a {self.family} Trigger takes no field (field=None); only family='warp' "
                                 "displaces pixels.")
            return
        if not isinstance(field, Tensor) or field.ndim != 3 or tuple(field.shape) != (2, *hw):
            got = tuple(field.shape) if isinstance(field, Tensor) else type(field).__name__
            raise InputError(f"a Trigger of family='warp' needs field=(2, H, W) = (2, {hw[0]}, {hw[1]}) "
                             f"displacements (dy, dx) in pixels; got {got}.")
        if min(hw) < 2:
            raise InputError(f"a warp Trigger needs images of at least 2 × 2 pixels; got H, W = {hw}.")
        if not bool(torch.isfinite(field).all()):
            raise InputError("Trigger.field must be finite (no NaN or inf); rebuild the displacement.")

    @property
    def mask_l1(self) -> float:
        """The sum of the mask (pixels for a 0/1 patch, ``alpha · H · W`` for a blend; ``H · W`` for a planted warp)."""
        return float(self.mask.detach().sum())

    @property
    def mean_displacement(self) -> float:
        """A warp's size: the mean over pixels of ``|mask · field|₂``, in pixels (`displacement`); 0 for patch
        and blend, which move no pixel."""
        return float(displacement(self).detach().mean())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trigger):
            return NotImplemented
        return (self.family == other.family and self.target == other.target
                and self.mask.shape == other.mask.shape and self.pattern.shape == other.pattern.shape
                and torch.equal(self.mask.detach().cpu(), other.mask.detach().cpu())
                and torch.equal(self.pattern.detach().cpu(), other.pattern.detach().cpu())
                and _same_field(self.field, other.field))

    def __hash__(self) -> int:
        field = None if self.field is None else self.field.detach().cpu().float().numpy().tobytes()
        return hash((self.family, self.target, tuple(self.pattern.shape),
                     self.mask.detach().cpu().float().numpy().tobytes(),
                     self.pattern.detach().cpu().float().numpy().tobytes(), field))

    def to_dict(self) -> dict[str, Any]:
        """``mask``, ``pattern``, ``target``, ``family`` as JSON data, plus ``field`` for a warp (patch and blend
        dicts keep the keys they had before warps existed)."""
        data = super().to_dict()
        if self.field is None:
            del data["field"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trigger:
        """Rebuild a trigger from ``to_dict()``'s output (float32 round-trips exactly).

        Also reads the zoo's older metadata (``kind``, ``target_class``), alone or beside the new keys,
        and dicts written before warps existed (no ``field``).

        Raises:
            InputError: a key is missing or a value has the wrong form.
        """
        keys = set(data) - {"field"} if isinstance(data, dict) else set()
        if keys not in (_KEYS, _LEGACY_KEYS, _KEYS | _LEGACY_KEYS):
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise InputError(f"Trigger.from_dict needs exactly the keys mask, pattern, target, family (and field "
                             f"for a warp); got {got}.")
        try:
            mask = torch.tensor(data["mask"], dtype=torch.float32)
            pattern = torch.tensor(data["pattern"], dtype=torch.float32)
            field = None if data.get("field") is None else torch.tensor(data["field"], dtype=torch.float32)
        except (TypeError, ValueError) as err:
            raise InputError(f"Trigger.from_dict: mask, pattern and field must be nested lists of numbers "
                             f"({err}).") from err
        target = data["target"] if "target" in data else data["target_class"]
        return cls(mask, pattern, target, data["family"] if "family" in data else data["kind"], field)

    def to_frame(self) -> Any:
        """One row: family, target, mask L1, the pixels the mask touches, the mean displacement (warp; 0
        otherwise) and the image size."""
        import pandas as pd

        return pd.DataFrame({"family": [self.family], "target": [self.target], "mask_l1": [self.mask_l1],
                             "pixels": [int((self.mask > 0).sum())], "mean_displacement": [self.mean_displacement],
                             "channels": [int(self.pattern.shape[0])], "height": [int(self.mask.shape[0])],
                             "width": [int(self.mask.shape[1])]})

    def plot(self) -> Any:
        """Patch and blend: the mask and ``mask × pattern``. Warp: the displacement's magnitude with its
        arrows, and a grid of lines as the warp bends it. A matplotlib ``Figure`` (no pyplot state)."""
        fig = new_figure(4.4, 2.4)
        ax1, ax2 = fig.subplots(1, 2)
        mask, pattern = self.mask.detach().cpu(), self.pattern.detach().cpu()
        if self.field is not None:
            moved = (mask * self.field.detach().cpu()).float()
            magnitude = displacement(self).detach().cpu()
            ax1.imshow(magnitude.numpy(), cmap="magma", vmin=0)
            h, w = mask.shape
            ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            # arrows point where each pixel is read from (image rows grow downwards, so dy is negated)
            ax1.quiver(xs.numpy(), ys.numpy(), moved[1].numpy(), -moved[0].numpy(), color="white", scale=None)
            lines = ((torch.arange(h)[:, None] % 4 == 0) | (torch.arange(w)[None, :] % 4 == 0)).float()
            bent = stamp(lines.expand(1, 1, h, w), Trigger(mask.float(), torch.zeros(1, h, w), self.target,
                                                           "warp", self.field.detach().cpu().float()))
            ax2.imshow(bent[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax1.set_title(f"displacement (mean {self.mean_displacement:.2f} px)", fontsize=8)
            ax2.set_title(f"warped grid → class {self.target}", fontsize=8)
        else:
            ax1.imshow(mask.numpy(), cmap="magma", vmin=0, vmax=1)
            shown = pattern * mask
            ax2.imshow((shown[0] if shown.shape[0] != 3 else shown.permute(1, 2, 0)).clamp(0, 1).numpy(),
                       cmap="gray", vmin=0, vmax=1)
            ax1.set_title("mask", fontsize=8)
            ax2.set_title(f"mask × pattern → class {self.target}", fontsize=8)
        for ax in (ax1, ax2):
            ax.set_xticks([])
            ax.set_yticks([])
        return fig


def _same_field(a: Tensor | None, b: Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and torch.equal(a.detach().cpu(), b.detach().cpu())


def displacement(trigger: Trigger) -> Float[Tensor, "height width"]:
    """How far the trigger moves each pixel, in pixels: ``|mask · field|₂`` per pixel (zeros for patch and blend).

    Differentiable in the mask and the field (the warp search penalises its mean); at a zero
    displacement the gradient is 0 (`torch.linalg.vector_norm`'s subgradient).

    Example:
        >>> field = torch.zeros(2, 2, 2)
        >>> field[0], field[1] = 3.0, 4.0
        >>> displacement(Trigger(torch.full((2, 2), 0.5), torch.zeros(1, 2, 2), 0, "warp", field)).tolist()
        [[2.5, 2.5], [2.5, 2.5]]
    """
    if trigger.field is None:
        return torch.zeros(trigger.mask.shape, dtype=trigger.mask.dtype, device=trigger.mask.device)
    return torch.linalg.vector_norm(trigger.mask * trigger.field.to(trigger.mask), dim=0)


def stamp(inputs: Float[Tensor, "batch channels height width"], trigger: Trigger
          ) -> Float[Tensor, "batch channels height width"]:
    """The trigger stamped onto a batch of images.

    Patch and blend: ``(1 - mask) * inputs + mask * pattern``. Warp: each output pixel (i, j) is the
    input read bilinearly at (i + mask·dy, j + mask·dx) (``torch.nn.functional.grid_sample`` with
    ``align_corners=True``, so pixel centres sit exactly on the grid's ±1 ends and an integer field
    moves pixels by whole pixels; ``padding_mode="border"``: a read beyond the image takes the
    nearest edge pixel, which is WaNet's clamping of the grid to the image).

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
    if trigger.field is not None:
        return _warp(inputs, trigger.mask.to(inputs), trigger.field.to(inputs))
    mask, pattern = trigger.mask.to(inputs), trigger.pattern.to(inputs)
    return (1 - mask) * inputs + mask * pattern


def _warp(inputs: Tensor, mask: Tensor, field: Tensor) -> Tensor:
    """Bilinear resampling of ``inputs`` at identity + ``mask · field`` (pixels), border padding."""
    n, _, h, w = inputs.shape
    rows = torch.arange(h, dtype=inputs.dtype, device=inputs.device)[:, None] + mask * field[0]
    cols = torch.arange(w, dtype=inputs.dtype, device=inputs.device)[None, :] + mask * field[1]
    # align_corners=True: pixel index p maps to -1 + 2 p / (size - 1); grid_sample wants (x, y) order
    grid = torch.stack((cols * (2 / (w - 1)) - 1, rows * (2 / (h - 1)) - 1), dim=-1)
    return F.grid_sample(inputs, grid.expand(n, h, w, 2), mode="bilinear", padding_mode="border", align_corners=True)


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
