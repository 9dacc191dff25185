"""Engineering use: design a new adversary from what the audit learned, and test it against random ones.

The survey's test of an interpretability result is whether it lets us *do* something predictable.
Here: from a finding (where the trigger sits, how large it is) and the units that carry it
(`trigger_units`), build a new trigger whose pattern is optimised only to drive those units (the
class logits are never used), then measure how often it sends held-out clean inputs to the target
class, against random triggers of the same size (a random binary pattern under the same mask moved
to a random place, or for a blend the same amplitude with a random pattern). Success well above the
controls means the implicated units are a usable handle on the backdoor, not just a correlate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core.checks import check_int
from ..core.errors import InputError
from ..core.hooks import capture, hooks
from ..core.inputs import validate_inputs
from ..core.results import Result, jsonable, new_figure
from ..core.sites import Site
from ..evidence import Trigger, bootstrap_ci, stamp
from ._forward import model_failures
from .internal import check_trigger, per_unit
from .reverse import PatternRange
from .verdict import AuditResult, as_images

__all__ = ["DesignedAttack", "design_attack", "binarise_mask", "attack"]


def binarise_mask(mask: Tensor, family: str) -> Tensor:
    """A 0/1 mask of the ``round(|mask|₁)`` largest pixels (patch), or the mask unchanged (blend).

    Example:
        >>> binarise_mask(torch.tensor([[0.9, 0.6], [0.1, 0.3]]), "patch").tolist()
        [[1.0, 1.0], [0.0, 0.0]]
    """
    if family == "blend":
        return mask.clone()
    k = max(1, int(round(float(mask.sum()))))
    out = torch.zeros(mask.numel(), dtype=mask.dtype)
    out[torch.sort(-mask.flatten(), stable=True).indices[:k]] = 1.0
    return out.view_as(mask)


@dataclass(frozen=True)
class DesignedAttack(Result):
    """The designed `Trigger`, the units it was designed from, its held-out attack success, and the
    random triggers' successes."""

    trigger: Trigger
    site: Site
    units: tuple[int, ...]
    attack_success: float
    ci_low: float
    ci_high: float
    control_success: tuple[float, ...]
    p_value: float

    @property
    def beats_controls(self) -> bool:
        return self.p_value < 0.05 and self.ci_low > max(self.control_success, default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """The ``attack`` record of ``findings.json``."""
        controls = torch.tensor(self.control_success, dtype=torch.float64)
        t = self.trigger
        return jsonable({"status": "designed", "from_units": list(self.units), "site": self.site.path,
                "family": t.family, "target_class": t.target, "mask_pixels": float(t.mask.sum()),
                "attack_success_rate": self.attack_success, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "control_mean": float(controls.mean()) if len(controls) else float("nan"),
                "control_max": float(controls.max()) if len(controls) else float("nan"),
                "n_controls": len(self.control_success), "p_value": self.p_value,
                "beats_controls": self.beats_controls, "trigger_mask": t.mask.tolist(),
                "trigger_pattern": t.pattern.tolist()})

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame({"trigger": ["designed"] + ["random"] * len(self.control_success),
                             "attack_success": [self.attack_success, *self.control_success]})

    def plot(self) -> Any:
        """The random triggers' attack success, with the designed trigger's (and its CI) marked."""
        fig = new_figure(4.5, 2.6)
        ax = fig.add_subplot()
        ax.hist(self.control_success, bins=20, range=(0, 1), color="0.7", label="random triggers")
        ax.axvline(self.attack_success, color="crimson", label=f"designed (p={self.p_value:.3f})")
        ax.axvspan(self.ci_low, self.ci_high, color="crimson", alpha=0.15)
        ax.set_xlabel("attack success on held-out inputs")
        ax.legend(fontsize=7)
        return fig


def _random_control(mask: Tensor, family: str, channels: int, gen: torch.Generator,
                    pattern_range: PatternRange) -> tuple[Tensor, Tensor]:
    h, w = mask.shape
    low, high = pattern_range
    pattern = low + (high - low) * torch.randint(0, 2, (channels, h, w), generator=gen).to(mask.dtype)
    if family == "blend":
        return mask, pattern
    rows, cols = torch.nonzero(mask > 0.5, as_tuple=True)
    top, left = int(rows.min()), int(cols.min())
    height, width = int(rows.max()) - top + 1, int(cols.max()) - left + 1
    new_top = int(torch.randint(0, h - height + 1, (1,), generator=gen))
    new_left = int(torch.randint(0, w - width + 1, (1,), generator=gen))
    moved = torch.zeros_like(mask)
    moved[new_top:new_top + height, new_left:new_left + width] = mask[top:top + height, left:left + width]
    return moved, pattern


def design_attack(model: nn.Module, scan_inputs: Tensor, held_inputs: Tensor, site: Site, units: Sequence[int],
                  trigger: Trigger, *, steps: int = 200, lr: float = 0.1, n_controls: int = 50,
                  pattern_range: PatternRange = (0.0, 1.0), seed: int = 0) -> DesignedAttack:
    """Optimise a trigger pattern under ``trigger``'s mask to drive ``units`` at ``site``; test it held out.

    Args:
        model: the classifier (unchanged).
        scan_inputs: clean images the pattern is optimised on.
        held_inputs: clean held-out images it is measured on (those already predicted as the target
            are left out).
        site, units: the implicated units (e.g. from `trigger_units`); their mean activation is maximised.
        trigger: the found trigger: where the new one goes (its mask, binarised with `binarise_mask`
            for a patch, used as is for a blend), its family, and the class whose hit rate is
            measured (never used in the optimisation); its pattern is not used.
        n_controls: random triggers of the same size.
        pattern_range: ``(low, high)``: the box of the designed pattern and of the controls' random
            binary patterns (floats or per-channel ``(C, 1, 1)`` tensors; the data's range, `data_range`).

    Raises:
        InputError: no units, a warp trigger (it moves pixels: there is no pattern to design), a
            trigger that does not fit the images, or every held-out image already predicted as the target.
    """
    scan_x, held_x = scan_inputs, held_inputs
    family, target = trigger.family, trigger.target
    if family not in ("patch", "blend"):
        raise InputError(f"design_attack designs a pattern under a patch or blend trigger's mask; a {family} trigger "
                         "has no pattern to design.")
    if not units:
        raise InputError("design_attack needs at least one unit to drive.")
    for name, x in (("scan_inputs", scan_x), ("held_inputs", held_x)):
        if not isinstance(x, Tensor) or x.ndim != 4:
            raise InputError(f"{name} must be images (N, C, H, W); got {getattr(x, 'shape', type(x).__name__)}.")
        validate_inputs(model, x)
    where = Site(site) if isinstance(site, str) else site
    check_trigger(model, scan_x, trigger)
    width = int(capture(model, scan_x[:1], [where])[where].shape[1])
    units = tuple(check_int(f"units of {where.path}", u, at_least=0, at_most=width - 1) for u in units)
    unit_index = torch.tensor(list(units))
    m = binarise_mask(trigger.mask.detach().to(scan_x), family)
    gen = torch.Generator().manual_seed(seed)
    low, high = pattern_range
    pattern_logit = (torch.randn(scan_x.shape[1:], generator=gen) * 0.1).requires_grad_(True)
    opt = torch.optim.Adam([pattern_logit], lr=lr)
    drive: list[Tensor] = []

    def record(value: Tensor, _: Site) -> None:
        drive.append(per_unit(value)[:, unit_index].mean())

    batch = min(128, scan_x.shape[0])
    with hooks(model, {where: record}):
        for _ in range(steps):
            index = torch.randint(0, scan_x.shape[0], (batch,), generator=gen)
            drive.clear()
            model(stamp(scan_x[index], Trigger(m, low + (high - low) * torch.sigmoid(pattern_logit), target,
                                               family)))
            (grad,) = torch.autograd.grad(-drive[0], [pattern_logit])
            opt.zero_grad(set_to_none=True)
            pattern_logit.grad = grad
            opt.step()
    pattern = (low + (high - low) * torch.sigmoid(pattern_logit)).detach()
    with torch.no_grad():
        keep = model(held_x).argmax(-1) != target
        x = held_x[keep]
        if x.shape[0] == 0:
            raise InputError(f"every held-out input is already predicted as class {target}; pass other inputs.")
        designed = Trigger(m, pattern, target, family)
        hits = (model(stamp(x, designed)).argmax(-1) == target).double()
        controls = []
        for _ in range(n_controls):
            cm, cp = _random_control(m, family, x.shape[1], gen, pattern_range)
            controls.append(float((model(stamp(x, Trigger(cm, cp, target, family))).argmax(-1) == target)
                                  .double().mean()))
    success = float(hits.mean())
    low, high = bootstrap_ci(hits.numpy(), seed=seed)
    p = (1 + sum(c >= success for c in controls)) / (1 + len(controls))
    return DesignedAttack(designed, where, units, success, float(low), float(high), tuple(controls), float(p))


def attack(result: AuditResult, model: nn.Module, *, seed: int = 0, **kwargs: Any) -> DesignedAttack | None:
    """Design a trigger from the first validated finding's implicated units; test it on the audit's held-out split.

    Args:
        result: what `scan` returned for ``model``.
        model: the audited classifier (unchanged).
        seed: seeds the optimisation and the controls.
        **kwargs: passed on to `design_attack` (``steps``, ``lr``, ``n_controls``).

    Returns:
        The designed attack (its ``site`` named as in ``model``), or ``None`` when no validated
        patch or blend finding has implicated units to design from (a warp moves pixels: it has no
        pattern to design).
    """
    usable = [(f, u) for f, v, u in zip(result.findings, result.validations, result.internal, strict=True)
              if v.validated and u is not None and f.trigger is not None and f.trigger.family in ("patch", "blend")]
    if not usable or result.split is None:
        return None
    finding, units = usable[0]
    assert finding.trigger is not None
    scan_x, held_x = result.split
    vector = bool(result.settings.get("vector_input"))
    if result.pattern_range is not None:
        kwargs.setdefault("pattern_range", result.pattern_range)
    view = as_images(model) if vector else model
    with model_failures(model, held_x, "attack design"):
        designed = design_attack(view, scan_x, held_x, units.site, units.units, finding.trigger, seed=seed, **kwargs)
    if vector:  # the audit scanned a 1 x D view of the model: name the site as the user's model does
        designed = dataclasses.replace(designed, site=dataclasses.replace(
            designed.site, path=designed.site.path.removeprefix("inner.")))
    return designed
