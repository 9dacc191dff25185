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

from ..core.errors import InputError
from ..core.hooks import capture
from ..core.inputs import validate_inputs
from ..core.sites import Site, resolve_site
from ..evidence import Finding, Validation, validate
from ..evidence.trigger import stamp

__all__ = ["TriggerUnits", "trigger_units", "default_feature_site"]


def check_trigger(model: nn.Module, x: Tensor, mask: Tensor, pattern: Tensor | None, target: int) -> None:
    """Refuse a trigger that does not fit the images, or a target the model has no logit for (one probe forward)."""
    h, w = x.shape[-2:]
    if not isinstance(mask, Tensor) or tuple(mask.shape) != (h, w):
        raise InputError(f"the trigger mask must be (H, W) = ({h}, {w}) like the images; got "
                         f"{tuple(getattr(mask, 'shape', ())) or type(mask).__name__}.")
    if pattern is not None and (not isinstance(pattern, Tensor) or tuple(pattern.shape) != tuple(x.shape[1:])):
        raise InputError(f"the trigger pattern must be (C, H, W) = {tuple(x.shape[1:])}; got "
                         f"{tuple(getattr(pattern, 'shape', ())) or type(pattern).__name__}.")
    with torch.no_grad():
        width = int(model(x[:1]).shape[-1])
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < width:
        raise InputError(f"target must be a class index in 0..{width - 1} (the model has {width} outputs); "
                         f"got {target!r}.")


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
class TriggerUnits:
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
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 2.6))
        ax = fig.add_subplot()
        ax.bar(range(len(self.rise)), self.rise.tolist(),
               color=["crimson" if u in self.units else "0.6" for u in range(len(self.rise))])
        ax.set_xlabel(f"unit of {self.site.path}")
        ax.set_ylabel("rise under trigger (clean sd)")
        return fig

    def _repr_html_(self) -> str:
        return str(self.to_frame().to_html(index=False))


def _per_unit(act: Tensor) -> Tensor:
    """(batch, units, ...) → (batch, units): the mean over any trailing (spatial) dims."""
    return act.flatten(2).mean(-1) if act.ndim > 2 else act


def trigger_units(model: nn.Module, x: Tensor, mask: Tensor, pattern: Tensor, target: int, *,
                  site: str | Site | None = None, k: int | None = None, n_controls: int = 50,
                  seed: int = 0) -> TriggerUnits:
    """Find and validate the ``k`` units at ``site`` that respond most to the stamped trigger.

    Args:
        model: the classifier (unchanged).
        x: clean images ``(N, C, H, W)`` (held out from the trigger search).
        mask, pattern: the trigger, ``(H, W)`` and ``(C, H, W)``.
        target: the class the trigger sends inputs to.
        site: where to look (default `default_feature_site`); units are its dim 1 (conv channels
            are averaged over space).
        k: how many units to name (default: a quarter of the site's units, at most 8).
        n_controls: random unit sets for the validation.

    Raises:
        InputError: ``k`` not in ``1..units - 1``, or inputs that are not images of the trigger's size.
    """
    if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != tuple(pattern.shape):
        raise InputError(f"trigger_units needs images (N, {', '.join(map(str, pattern.shape))}); got "
                         f"{getattr(x, 'shape', type(x).__name__)}.")
    validate_inputs(model, x)
    where = default_feature_site(model) if site is None else (Site(site) if isinstance(site, str) else site)
    resolve_site(model, where.path)
    check_trigger(model, x, mask, pattern, target)
    stamped = stamp(x, mask.to(x), pattern.to(x))
    acts = capture(model, torch.cat([x, stamped]), [where])[where].detach()
    units = _per_unit(acts).double()
    clean, triggered = units[: x.shape[0]], units[x.shape[0]:]
    n_units = clean.shape[1]
    if k is None:  # a quarter of the units, at most 8, at least 1
        k = max(1, min(8, n_units // 4))
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n_units:
        raise InputError(f"k must be an int in 1..{n_units - 1} (the site has {n_units} units), got {k!r}.")
    rise = (triggered.mean(0) - clean.mean(0)) / (clean.std(0) + 1e-6)
    top = tuple(int(u) for u in torch.sort(-rise, stable=True).indices[:k])
    finding = Finding("units", f"units {list(top)} at {where.path} carry the trigger to class {target}", site=where,
                      units=list(top), target=target, evidence={"method": "rise under the reversed trigger"})
    check = validate(finding, model, stamped, ablation="mean", reference=x, n_controls=n_controls, seed=seed)
    return TriggerUnits(where, top, rise.float(), finding, check)
