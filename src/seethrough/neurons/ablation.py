"""Perturbation and ablation of units: how much does removing each unit change a metric?

Neurons / perturbation & ablation in the survey's taxonomy. `ablate` runs the model with chosen
units (or a whole site) zero-, mean- or resample-ablated; `unit_importance` ablates every unit
of a site one at a time and measures the drop of a per-example metric, many units per forward
pass (the batch is tiled, one copy per unit). High importance is a hypothesis about the unit's
role; `UnitImportance.to_finding` turns the top units into a `Finding` for `validate`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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

__all__ = ["UnitImportance", "unit_importance", "ablate"]

#: The kinds of ablation: replace a unit by 0, by its mean over reference data, or by its value on
#: a randomly drawn reference example (resample ablation).
Ablation = Literal["zero", "mean", "resample"]


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

    def _repr_html_(self) -> str:
        return str(self.to_frame().to_html(index=False))


def unit_importance(model: nn.Module, inputs: Inputs, site: Site | str, metric: Callable[[Any], Tensor], *,
                    ablation: Ablation = "zero", reference: Inputs | None = None, max_rows: int = 4096,
                    n_draws: int = 4, seed: int = 0) -> UnitImportance:
    """Ablate each unit of ``site`` alone and return the mean drop of ``metric`` per unit.

    Args:
        model: any ``nn.Module`` (left unchanged).
        inputs: the data (a batch).
        site: where the units live (no unit selection: every unit is scored).
        metric: maps the model output to one score per example, e.g. `target_log_prob`.
        ablation: ``"zero"``; ``"mean"`` (each unit's mean over ``reference``); or ``"resample"``
            (each example's unit value is replaced by the unit's value on a reference example drawn
            uniformly with replacement; the drop is averaged over ``n_draws`` independent draws).
        reference: the data whose mean defines mean ablation, or from which resample ablation draws
            (default: ``inputs``). When ``inputs`` are one class, pass data of every class: a unit
            that detects that class is near its own mean on it, so a one-class mean would hide it.
        max_rows: rows per forward pass; units are ablated ``max_rows // batch`` at a time.
        n_draws: resample ablation only: how many draws of reference examples are averaged. Draw
            ``d`` pairs every example with one reference example, the same for every unit, so units
            are compared on the same draws.
        seed: seeds the resample draws (other ablations are deterministic).

    Raises:
        InputError: a site with a unit selection, an unknown ablation, a metric that does not give one
            score per example, reference data whose site values differ in shape per example, or
            ``n_draws`` below 1.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> imp = unit_importance(model, torch.rand(8, 3), "1", lambda out: out[:, 0])
        >>> imp.values.shape
        torch.Size([4])

    References:
        Morcos et al., "On the importance of single directions for generalization", 2018;
        Chan et al., "Causal scrubbing", 2022 (resample ablation).
    """
    resolved, _ = resolve_site(model, site)
    if resolved.selects:
        raise InputError(f"{resolved!r} selects units; unit_importance scores every unit of a site.")
    _check_kind(ablation)
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
        raise InputError(f"n_draws must be a positive int, got {n_draws!r}.")
    n = validate_inputs(model, inputs)
    with torch.no_grad():
        value = capture(model, inputs, [resolved])[resolved]
        axis = resolved.unit_axis(value)
        n_units = value.shape[axis]
        clean = metric(patch(model, inputs, {resolved: lambda v, s: None})).double()
        if clean.shape != (n,):
            raise InputError(f"metric must return one score per example, shape ({n},); got {tuple(clean.shape)}.")
        fills = _fills(model, reference, resolved, value, axis, ablation, n_draws if ablation == "resample" else 1,
                       seed)
        per_pass = max(1, max_rows // n)
        drops = torch.zeros(n_units, dtype=torch.float64)
        for fill in fills:
            for start in range(0, n_units, per_pass):
                units = list(range(start, min(start + per_pass, n_units)))
                drops[start:start + len(units)] += _ablate_each(model, inputs, resolved, metric, units, axis, fill,
                                                                clean)
    return UnitImportance(resolved, (drops / len(fills)).to(torch.float32), ablation)


def ablate(model: nn.Module, inputs: Inputs, site: Site | str, units: Sequence[int] | None = None, *,
           kind: Ablation = "zero", reference: Inputs | None = None, seed: int = 0) -> Any:
    """Run the model with ``units`` of ``site`` ablated (the whole site when ``units`` is None).

    Args:
        model: any ``nn.Module`` (left unchanged).
        inputs: the data.
        site: where the units live; it may select positions, not units (pass ``units`` instead).
        units: indices along the site's unit axis (`Site.unit_axis`), or None for every unit.
        kind: ``"zero"``; ``"mean"`` (each unit's mean over ``reference``, all other axes
            averaged); or ``"resample"`` (each example's values are those of one reference
            example drawn uniformly with replacement, seeded; all ablated units use the same draw).
        reference: the data for mean and resample ablation (default: ``inputs``).
        seed: seeds the resample draw.

    Returns:
        The model's output with the ablation applied.

    Raises:
        InputError: units out of range or repeated, a site that selects units, an unknown kind, or
            reference values of another shape per example.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> x = torch.ones(4, 2)
        >>> torch.equal(ablate(model, x, "1"), model[2].bias.expand(4, 1))
        True

    References:
        Chan et al., "Causal scrubbing", 2022 (resample ablation).
    """
    resolved, _ = resolve_site(model, site)
    if resolved.units is not None:
        raise InputError(f"{resolved!r} selects units; pass the site without units and units=[...] instead.")
    _check_kind(kind)
    validate_inputs(model, inputs)
    with torch.no_grad():
        value = capture(model, inputs, [resolved])[resolved]
        axis = resolved.unit_axis(value)
        n_units = value.shape[axis]
        chosen = list(range(n_units)) if units is None else [int(u) for u in units]
        bad = [u for u in chosen if not 0 <= u < n_units]
        if bad or not chosen or len(set(chosen)) != len(chosen):
            raise InputError(f"units must be distinct indices in 0..{n_units - 1} at {resolved.path!r} (unit axis "
                             f"{axis}); got {list(units) if units is not None else None}.")
        fill = _fills(model, reference, resolved, value, axis, kind, 1, seed)[0]
    keep = torch.ones(n_units, dtype=torch.bool)
    keep[chosen] = False
    shape = [1] * value.ndim
    shape[axis] = n_units

    def fn(v: Tensor, s: Site) -> Tensor:
        return torch.where(keep.view(shape).to(v.device), v, fill.to(v))

    return patch(model, inputs, {resolved: fn})


def _check_kind(kind: str) -> None:
    if kind not in ("zero", "mean", "resample"):
        raise InputError(f"ablation must be 'zero', 'mean' or 'resample', got {kind!r}.")


def _fills(model: nn.Module, reference: Inputs | None, site: Site, value: Tensor, axis: int, kind: str,
           n_draws: int, seed: int) -> list[Tensor]:
    """What replaces ablated units, shaped like ``value``: one tensor per draw (one for zero and mean)."""
    if kind == "zero":
        return [torch.zeros_like(value)]
    ref = _reference_values(model, reference, site, value)
    if kind == "mean":
        other = tuple(d for d in range(ref.ndim) if d != axis)
        return [ref.mean(dim=other, keepdim=True).expand_as(value)]
    gen = torch.Generator().manual_seed(seed)
    n = value.shape[0]
    return [ref[torch.randint(0, ref.shape[0], (n,), generator=gen).to(ref.device)] for _ in range(n_draws)]


def _reference_values(model: nn.Module, reference: Inputs | None, site: Site, value: Tensor) -> Tensor:
    """The site's values on ``reference`` (or ``value`` itself when there is none)."""
    if reference is None:
        return value
    validate_inputs(model, reference)
    ref = capture(model, reference, [site])[site]
    if ref.shape[1:] != value.shape[1:]:
        raise InputError(f"reference values at {site.path!r} have shape {tuple(ref.shape[1:])} per example but "
                         f"inputs give {tuple(value.shape[1:])}; pass reference data of the same kind.")
    return ref


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
