"""Perturbation and ablation of units: how much does removing each unit change a metric?

Neurons / perturbation & ablation in the survey's taxonomy. `unit_importance` ablates every unit
of a site one at a time and measures the drop of a per-example metric, many units per forward
pass (the batch is tiled, one copy per unit). High importance is a hypothesis about the unit's
role; `UnitImportance.to_finding` turns the top units into a `Finding` for `validate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..core.errors import InputError
from ..core.hooks import capture, patch
from ..core.inputs import batch_size_of, repeat_inputs, validate_inputs
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from ..evidence.finding import Finding

__all__ = ["UnitImportance", "unit_importance"]


@dataclass(frozen=True)
class UnitImportance:
    """Mean drop of the metric when each unit is ablated (positive = the unit helps the metric)."""

    site: Site
    values: Tensor
    ablation: str

    def top(self, k: int) -> list[int]:
        """The ``k`` most important units, most important first (ties: lower index first)."""
        order = torch.sort(-self.values, stable=True).indices
        return order[:k].tolist()

    def to_finding(self, k: int, *, target: int | None = None) -> Finding:
        units = self.top(k)
        return Finding("units", f"units {units} at {self.site.path!r} matter most for the metric",
                       site=self.site, units=units, target=target, score=float(self.values[units].sum()),
                       evidence={"method": f"{self.ablation} ablation", "importance": self.values[units]})

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame({"unit": range(len(self.values)), "importance": self.values.tolist()})

    def plot(self) -> Any:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 2.4))
        ax = fig.add_subplot()
        ax.bar(range(len(self.values)), self.values.tolist())
        ax.set_xlabel(f"unit at {self.site.path}")
        ax.set_ylabel("metric drop")
        return fig


def unit_importance(model: nn.Module, inputs: Inputs, site: Site | str, metric: Callable[[Any], Tensor], *,
                    ablation: Literal["zero", "mean"] = "zero", reference: Inputs | None = None,
                    max_rows: int = 4096) -> UnitImportance:
    """Ablate each unit of ``site`` alone and return the mean drop of ``metric`` per unit.

    Args:
        model: any ``nn.Module`` (left unchanged).
        inputs: the data (a batch).
        site: where the units live (no unit selection: every unit is scored).
        metric: maps the model output to one score per example, e.g. `target_log_prob`.
        ablation: ``"zero"``, or ``"mean"`` (each unit's mean over ``reference``).
        reference: the data whose mean defines mean ablation (default: ``inputs``). When
            ``inputs`` are one class, pass data of every class: a unit that detects that class is
            near its own mean on it, so a one-class mean would hide it.
        max_rows: rows per forward pass; units are ablated ``max_rows // batch`` at a time.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> imp = unit_importance(model, torch.rand(8, 3), "1", lambda out: out[:, 0])
        >>> imp.values.shape
        torch.Size([4])

    References:
        Morcos et al., "On the importance of single directions for generalization", 2018.
    """
    resolved, _ = resolve_site(model, site)
    if resolved.selects:
        raise InputError(f"{resolved!r} selects units; unit_importance scores every unit of a site.")
    if ablation not in ("zero", "mean"):
        raise InputError(f"ablation must be 'zero' or 'mean', got {ablation!r}.")
    n = validate_inputs(model, inputs)
    with torch.no_grad():
        value = capture(model, inputs, [resolved])[resolved]
        axis = resolved.unit_axis(value)
        n_units = value.shape[axis]
        clean = metric(patch(model, inputs, {resolved: lambda v, s: None})).double()
        if clean.shape != (n,):
            raise InputError(f"metric must return one score per example, shape ({n},); got {tuple(clean.shape)}.")
        fill = torch.zeros_like(value) if ablation == "zero" else _unit_mean(model, reference, resolved, value, axis)
        per_pass = max(1, max_rows // n)
        drops = torch.empty(n_units, dtype=torch.float64)
        for start in range(0, n_units, per_pass):
            units = list(range(start, min(start + per_pass, n_units)))
            drops[start:start + len(units)] = _ablate_each(model, inputs, resolved, metric, units, axis, fill, clean)
    return UnitImportance(resolved, drops.to(torch.float32), ablation)


def _unit_mean(model: nn.Module, reference: Inputs | None, site: Site, value: Tensor, axis: int) -> Tensor:
    """Each unit's mean over ``reference`` (or over ``value``'s own batch), broadcast to ``value``'s shape."""
    if reference is not None:
        validate_inputs(model, reference)
        ref = capture(model, reference, [site])[site]
        if ref.shape[1:] != value.shape[1:]:
            raise InputError(f"reference values at {site.path!r} have shape {tuple(ref.shape[1:])} per example but "
                             f"inputs give {tuple(value.shape[1:])}; pass reference data of the same kind.")
    else:
        ref = value
    other = tuple(d for d in range(ref.ndim) if d != axis)
    return ref.mean(dim=other, keepdim=True).expand_as(value)


def _ablate_each(model: nn.Module, inputs: Inputs, site: Site, metric: Callable[[Any], Tensor], units: list[int],
                 axis: int, fill: Tensor, clean: Tensor) -> Tensor:
    """One forward over ``len(units)`` tiled copies of the batch; copy ``j`` has ``units[j]`` ablated."""
    c, n = len(units), batch_size_of(inputs)
    onehot = torch.zeros(c, fill.shape[axis], dtype=torch.bool)
    onehot[torch.arange(c), torch.tensor(units)] = True
    shape = [c, 1] + [1] * (fill.ndim - 1)
    shape[axis + 1] = fill.shape[axis]
    mask = onehot.view(shape)  # (c, 1, ..., n_units at axis, ...)

    def ablate(v: Tensor) -> Tensor:
        tiled = v.view(c, n, *v.shape[1:])
        return torch.where(mask.to(v.device), fill.unsqueeze(0).to(v), tiled).view_as(v)

    out = patch(model, repeat_inputs(inputs, c), {site: lambda v, s: ablate(v)})
    scores = metric(out).double().view(c, n)
    return (clean.unsqueeze(0) - scores).mean(dim=1)
