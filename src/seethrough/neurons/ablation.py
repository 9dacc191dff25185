"""Perturbation and ablation of units: how much does removing each unit change a metric?

Neurons / perturbation & ablation in the survey's taxonomy. `ablate` runs the model with chosen
units (or a whole site) zero-, mean- or resample-ablated; `unit_importance` ablates every unit
of a site one at a time and measures the drop of a per-example metric, many units per forward
pass (`seethrough.core.patch_each` tiles the batch, one copy per unit). Both are thin front doors
to the edits of `seethrough.core.interventions`. High importance is a hypothesis about the unit's
role; `UnitImportance.to_findings` turns the top units into a `Finding` for `validate`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..core.checks import check_int
from ..core.errors import InputError
from ..core.hooks import Callback, capture, patch
from ..core.inputs import validate_inputs
from ..core.interventions import (
    Ablation,
    check_ablation,
    check_position_mask,
    mean_ablation,
    patch_each,
    position_mask,
    replace_slice,
    resample_ablation,
    resample_draws,
    unit_means,
    zero_ablation,
)
from ..core.results import Result, new_figure
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from ..evidence.finding import Finding
from ..evidence.fingerprint import Fingerprint, fingerprint

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["UnitImportance", "unit_importance", "ablate"]


@dataclass(frozen=True)
class UnitImportance(Result):
    """Mean drop of the metric when each unit is ablated (positive = the unit helps the metric).

    ``data_fingerprint`` identifies the inputs the drops were measured on: the top units are chosen
    on them, so `validate` flags a test of ``to_findings`` on the same inputs as in-sample.
    """

    site: Site
    values: Tensor
    ablation: str
    data_fingerprint: Fingerprint | None = None

    def top(self, k: int) -> list[int]:
        """The ``k`` most important units, most important first (ties: lower index first)."""
        order = torch.sort(-self.values, stable=True).indices
        return order[:k].tolist()

    def to_findings(self, *, k: int, target: int | None = None) -> list[Finding]:
        """One ``"units"`` finding: the ``k`` most important units matter for the metric.

        The units are the top ``k`` of every unit of the site (``evidence["n_tested"]``), chosen on
        the inputs of `unit_importance`: validate the finding on held-out inputs.
        """
        units = self.top(check_int("k", k, at_least=1, at_most=len(self.values)))
        return [Finding("units", f"units {units} at {self.site.path!r} matter most for the metric",
                        site=self.site, units=units, target=target, score=float(self.values[units].sum()),
                        evidence={"method": f"{self.ablation} ablation", "importance": self.values[units],
                                  "n_tested": len(self.values)},
                        data_fingerprint=self.data_fingerprint)]

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame({"unit": range(len(self.values)), "importance": self.values.tolist()})

    def plot(self) -> Figure:
        fig = new_figure(5, 2.4)
        ax = fig.add_subplot()
        ax.bar(range(len(self.values)), self.values.tolist())
        ax.set_xlabel(f"unit at {self.site.path}")
        ax.set_ylabel("metric drop")
        return fig


def unit_importance(model: nn.Module, inputs: Inputs, site: Site | str, metric: Callable[[Any], Tensor], *,
                    ablation: Ablation = "zero", reference: Inputs | None = None, max_rows: int = 4096,
                    n_samples: int = 4, seed: int = 0, mask: Tensor | bool | None = None) -> UnitImportance:
    """Ablate each unit of ``site`` alone and return the mean drop of ``metric`` per unit.

    Args:
        model: any ``nn.Module`` (left unchanged).
        inputs: the data (a batch).
        site: where the units live (no unit selection: every unit is scored).
        metric: maps the model output to one score per example, e.g. `target_log_prob`.
        ablation: ``"zero"``; ``"mean"`` (each unit's mean over ``reference``); or ``"resample"``
            (each example's unit value is replaced by the unit's value on a reference example drawn
            uniformly with replacement; the drop is averaged over ``n_samples`` independent draws).
        reference: the data whose mean defines mean ablation, or from which resample ablation draws
            (default: ``inputs``). When ``inputs`` are one class, pass data of every class: a unit
            that detects that class is near its own mean on it, so a one-class mean would hide it.
        max_rows: rows per forward pass; units are ablated ``max_rows // batch`` at a time.
        n_samples: resample ablation only: how many draws of reference examples are averaged. Draw
            ``d`` pairs every example with one reference example, the same for every unit, so units
            are compared on the same draws (`seethrough.core.resample_indices` gives the order).
        seed: seeds the resample draws (other ablations are deterministic).
        mask: which positions of the reference count for mean and resample ablation (padding
            does not): ``(n_reference, seq)`` bool or 0/1; by default the reference's
            ``attention_mask`` when it is a dict (HuggingFace style) and the site's value is
            ``(batch, seq, n_units)`` of that length; ``False`` counts every position. With
            padding left out, means are over real tokens and resampling is per token
            (`seethrough.core.resample_draws`).

    Raises:
        InputError: a site with a unit selection, an unknown ablation, a bad mask, a metric that does not give one
            score per example, reference data whose site values differ in shape per example, or
            ``n_samples`` below 1.

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
    check_ablation(ablation)
    check_position_mask(mask)
    check_int("n_samples", n_samples, at_least=1)
    check_int("max_rows", max_rows, at_least=1)
    n = validate_inputs(model, inputs)
    with torch.no_grad():
        value = capture(model, inputs, [resolved])[resolved]
        n_units = value.shape[resolved.unit_axis(value)]
        clean = metric(patch(model, inputs, {resolved: lambda v, s: None})).double()
        if clean.shape != (n,):
            raise InputError(f"metric must return one score per example, shape ({n},); got {tuple(clean.shape)}.")
        drops = torch.zeros(n_units, dtype=torch.float64)
        passes = _one_unit_edits(model, inputs, reference, mask, resolved, value, ablation, n_samples, seed)
        for edits in passes:  # one list of per-unit edits per resample draw (one for zero and mean)
            scores = patch_each(model, inputs, resolved, edits, metric, max_rows=max_rows).double()
            drops += (clean.unsqueeze(0) - scores).mean(dim=1)
    return UnitImportance(resolved, (drops / len(passes)).to(torch.float32), ablation, fingerprint(inputs))


def ablate(model: nn.Module, inputs: Inputs, site: Site | str, units: Sequence[int] | None = None, *,
           ablation: Ablation = "zero", reference: Inputs | None = None, seed: int = 0,
           mask: Tensor | bool | None = None) -> Any:
    """Run the model with ``units`` of ``site`` ablated (the whole site when ``units`` is None).

    Args:
        model: any ``nn.Module`` (left unchanged).
        inputs: the data.
        site: where the units live; it may select positions, not units (pass ``units`` instead).
        units: indices along the site's unit axis (`Site.unit_axis`), or None for every unit.
        ablation: ``"zero"``; ``"mean"`` (each unit's mean over ``reference``, all other axes
            averaged); or ``"resample"`` (each example's values are those of one reference
            example drawn uniformly with replacement, seeded; all ablated units use the same draw).
        reference: the data for mean and resample ablation (default: ``inputs``).
        seed: seeds the resample draw.
        mask: which positions of the reference count for mean and resample ablation, as in
            `unit_importance` (default: a dict reference's ``attention_mask``; ``False``: all).

    Returns:
        The model's output with the ablation applied.

    Raises:
        InputError: units out of range or repeated, a site that selects units, an unknown ablation, or
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
    check_ablation(ablation)
    check_position_mask(mask)
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
        if ablation == "zero":
            edit = zero_ablation(chosen)
        else:
            ref, keep = _reference_values(model, inputs, reference, mask, resolved, value)
            edit = mean_ablation(unit_means(ref, resolved, mask=keep), chosen) if ablation == "mean" else \
                resample_ablation(ref, chosen, seed=seed, mask=keep)
    return patch(model, inputs, {resolved: edit})


def _one_unit_edits(model: nn.Module, inputs: Inputs, reference: Inputs | None, mask: Tensor | bool | None,
                    site: Site, value: Tensor, ablation: str, n_samples: int, seed: int) -> list[list[Callback]]:
    """For each pass (one per resample draw; one for zero and mean), one edit per unit ablating it alone."""
    units = range(value.shape[site.unit_axis(value)])
    if ablation == "zero":
        return [[zero_ablation([u]) for u in units]]
    ref, keep = _reference_values(model, inputs, reference, mask, site, value)
    if ablation == "mean":
        means = unit_means(ref, site, mask=keep)
        return [[mean_ablation(means, [u]) for u in units]]
    rows = resample_draws(ref, value, site, n_samples=n_samples, seed=seed, mask=keep)
    return [[replace_slice(source, units=[u]) for u in units] for source in rows]


def _reference_values(model: nn.Module, inputs: Inputs, reference: Inputs | None, mask: Tensor | bool | None,
                      site: Site, value: Tensor) -> tuple[Tensor, Tensor | None]:
    """The site's values on ``reference`` (or ``value`` itself when there is none) and the positions that count."""
    if reference is None:
        return value, position_mask(inputs, value, site, mask)
    validate_inputs(model, reference)
    ref = capture(model, reference, [site])[site]
    keep = position_mask(reference, ref, site, mask)
    if (ref.shape[1:] if keep is None else ref.shape[2:]) != (value.shape[1:] if keep is None else value.shape[2:]):
        raise InputError(f"reference values at {site.path!r} have shape {tuple(ref.shape[1:])} per example but "
                         f"inputs give {tuple(value.shape[1:])}; pass reference data of the same kind.")
    return ref, keep
