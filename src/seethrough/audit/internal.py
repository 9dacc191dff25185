"""Internal evidence for a reversed trigger: the units that respond to it and not to clean data.

A reverse-engineered trigger is input-space evidence. The audit pairs it with evidence from inside
the model: at one site (by default the input of the last linear layer, the features the classifier
reads), each unit's response to stamped inputs is compared with its response to the same inputs
clean, in units of its clean standard deviation. The ``k`` units that rise most are the hypothesis
"these units carry the backdoor"; `seethrough.evidence.validate` tests it by mean-ablating them on
stamped inputs and comparing the drop in the target's log-probability with ``k`` random units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core.checks import check_int
from ..core.errors import InputError
from ..core.hooks import capture
from ..core.inputs import validate_inputs
from ..core.results import Result, new_figure
from ..core.sites import Site, resolve_site
from ..evidence import Finding, Trigger, Validation, stamp, validate

__all__ = ["TriggerUnits", "trigger_units", "default_feature_site"]


def check_trigger(model: nn.Module, inputs: Tensor, trigger: Trigger) -> None:
    """Refuse a trigger that does not fit the images, or a target the model has no logit for (one probe forward)."""
    if not isinstance(trigger, Trigger):
        raise InputError(f"trigger must be a seethrough.evidence.Trigger, got {type(trigger).__name__}.")
    if tuple(inputs.shape[1:]) != tuple(trigger.pattern.shape):
        raise InputError(f"the trigger's pattern (C, H, W) = {tuple(trigger.pattern.shape)} does not fit images of "
                         f"shape {tuple(inputs.shape)}; build the trigger for this image size.")
    with torch.no_grad():
        width = int(model(inputs[:1]).shape[-1])
    check_int("trigger.target", trigger.target, at_most=width - 1)


def default_feature_site(model: nn.Module) -> Site:
    """The input of the model's last ``nn.Linear`` (in registration order): the features a classifier reads.

    Raises:
        InputError: the model has no ``nn.Linear``; pass a site.
    """
    last = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not last:
        raise InputError("the model has no nn.Linear layer to take features from; pass site=... explicitly.")
    return Site(last[-1], point="input")


@dataclass(frozen=True)
class TriggerUnits(Result):
    """Units that respond to a trigger: their standardised rise, the finding, and its validation."""

    site: Site
    units: tuple[int, ...]
    rise: Tensor
    finding: Finding
    validation: Validation

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site.path, "point": self.site.point, "units": list(self.units),
                "rise": [float(self.rise[u]) for u in self.units], "validated": self.validation.validated,
                "validation": self.validation.to_dict()}

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame({"unit": range(len(self.rise)), "rise": self.rise.tolist(),
                             "implicated": [u in self.units for u in range(len(self.rise))]})

    def plot(self) -> Any:
        """Each unit's standardised rise under the trigger; the implicated units in red."""
        fig = new_figure(6, 2.6)
        ax = fig.add_subplot()
        ax.bar(range(len(self.rise)), self.rise.tolist(),
               color=["crimson" if u in self.units else "0.6" for u in range(len(self.rise))])
        ax.set_xlabel(f"unit of {self.site.path}")
        ax.set_ylabel("rise under trigger (clean sd)")
        return fig


def per_unit(act: Tensor) -> Tensor:
    """(batch, units, ...) → (batch, units): the mean over any trailing (spatial) dims."""
    return act.flatten(2).mean(-1) if act.ndim > 2 else act


def trigger_units(model: nn.Module, inputs: Tensor, trigger: Trigger, *, site: str | Site | None = None,
                  k: int | None = None, n_controls: int = 50, seed: int = 0) -> TriggerUnits:
    """Find and validate the ``k`` units at ``site`` that respond most to the stamped trigger.

    Args:
        model: the classifier (unchanged).
        inputs: clean images ``(N, C, H, W)`` (held out from the trigger search).
        trigger: the trigger (its ``target`` is the class it sends inputs to).
        site: where to look (default `default_feature_site`); units are its dim 1 (conv channels
            are averaged over space).
        k: how many units to name (default: a quarter of the site's units, at most 8).
        n_controls: random unit sets for the validation.

    Raises:
        InputError: ``k`` not in ``1..units - 1``, or inputs that are not images of the trigger's size.
    """
    x = inputs
    if not isinstance(trigger, Trigger):
        raise InputError(f"trigger must be a seethrough.evidence.Trigger, got {type(trigger).__name__}.")
    if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != tuple(trigger.pattern.shape):
        raise InputError(f"trigger_units needs images (N, {', '.join(map(str, trigger.pattern.shape))}); got "
                         f"{getattr(x, 'shape', type(x).__name__)}.")
    validate_inputs(model, x)
    where = default_feature_site(model) if site is None else (Site(site) if isinstance(site, str) else site)
    resolve_site(model, where.path)
    check_trigger(model, x, trigger)
    target = trigger.target
    stamped = stamp(x, trigger)
    acts = capture(model, torch.cat([x, stamped]), [where])[where].detach()
    units = per_unit(acts).double()
    clean, triggered = units[: x.shape[0]], units[x.shape[0]:]
    n_units = clean.shape[1]
    if k is None:  # a quarter of the units, at most 8, at least 1
        k = max(1, min(8, n_units // 4))
    check_int(f"k (the site has {n_units} units)", k, at_least=1, at_most=n_units - 1)
    rise = (triggered.mean(0) - clean.mean(0)) / (clean.std(0) + 1e-6)
    top = tuple(int(u) for u in torch.sort(-rise, stable=True).indices[:k])
    finding = Finding("units", f"units {list(top)} at {where.path} carry the trigger to class {target}", site=where,
                      units=list(top), target=target, evidence={"method": "rise under the reversed trigger"})
    check = validate(finding, model, stamped, ablation="mean", reference=x, n_controls=n_controls, seed=seed)
    return TriggerUnits(where, top, rise.float(), finding, check)
