"""Frivolous units: dead, redundant and prunable units of a site (a neuron hazard).

Neurons / hazards in the survey's taxonomy (Räuker et al. 2022, section on frivolous neurons).
`frivolous_units` reads the site's activations over the data and intervenes on them:

- dead: the unit's largest ``|activation|`` over the data is at most ``dead_eps``;
- redundant: a partner unit has ``|correlation| >= corr``, each can stand in for the other
  (replacing one by its least-squares affine fit from the other leaves the output within
  ``tolerance``) and zero-ablating the two together changes the output by more than ``tolerance``:
  the signature of a duplicated unit whose outgoing weight was split;
- prunable: zero-ablating the unit alone changes the output within ``tolerance``.

All ablations of a site run as tiled copies of the batch, many per forward pass
(`seethrough.core.patch_each` with the edits of `seethrough.core.interventions`). On padded
sequence inputs only the real positions count (``mask=``, as in `top_exemplars`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError
from ..core.hooks import Callback, capture, patch
from ..core.inputs import validate_inputs
from ..core.interventions import check_position_mask, patch_each, position_mask, zero_ablation
from ..core.results import Result, new_figure
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from ..evidence.finding import Finding
from ..evidence.fingerprint import Fingerprint, fingerprint

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["FrivolousUnits", "frivolous_units"]


@dataclass(frozen=True)
class FrivolousUnits(Result):
    """Per-unit hazard report of `frivolous_units` (every tensor has one entry per unit).

    ``damage`` is the relative change of the output (or metric) when the unit alone is
    zero-ablated: the root-mean-square change over examples divided by the root-mean-square
    spread of the clean output around its mean. ``partner`` is the unit's most correlated other
    unit (-1 when none qualifies); ``substitution_damage`` the larger damage of the two
    substitutions (each unit replaced by its affine fit from the other) and ``pair_damage`` the
    damage of zero-ablating the pair, both NaN for units without a candidate partner.
    ``data_fingerprint`` identifies the inputs the report was measured on (its findings carry it).
    """

    site: Site
    max_abs: Float[Tensor, " n_units"]
    active_fraction: Float[Tensor, " n_units"]
    damage: Float[Tensor, " n_units"]
    partner: Int[Tensor, " n_units"]
    partner_corr: Float[Tensor, " n_units"]
    substitution_damage: Float[Tensor, " n_units"]
    pair_damage: Float[Tensor, " n_units"]
    dead: Bool[Tensor, " n_units"]
    redundant: Bool[Tensor, " n_units"]
    prunable: Bool[Tensor, " n_units"]
    tolerance: float
    corr: float
    dead_eps: float
    data_fingerprint: Fingerprint | None = None

    def redundant_pairs(self) -> list[tuple[int, int]]:
        """The redundant pairs ``(i, j)`` with ``i < j``, sorted."""
        pairs = {tuple(sorted((int(u), int(self.partner[u])))) for u in torch.nonzero(self.redundant).flatten()}
        return sorted((a, b) for a, b in pairs)

    def to_findings(self, *, target: int | None = None) -> list[Finding]:
        """One ``"units"`` finding per redundant pair (claim: the pair matters jointly) and one for the prunable set.

        `validate` tests a finding by ablating its units against random units: a redundant pair
        should validate (together the units matter); the prunable finding's claim is the
        opposite, so its expected outcome (in ``evidence["expect"]``) is *not* validated.
        """
        out = [Finding("units", f"units {a} and {b} at {self.site.path!r} duplicate each other: each alone can be "
                       "replaced by the other, together they matter", site=self.site, units=[a, b], target=target,
                       score=float(self.pair_damage[a]),
                       evidence={"method": "frivolous_units", "corr": float(self.partner_corr[a]),
                                 "damage_alone": [float(self.damage[a]), float(self.damage[b])],
                                 "pair_damage": float(self.pair_damage[a]),
                                 "substitution_damage": float(self.substitution_damage[a]), "expect": "validated"},
                       data_fingerprint=self.data_fingerprint)
               for a, b in self.redundant_pairs()]
        prunable = torch.nonzero(self.prunable).flatten().tolist()
        if prunable:
            out.append(Finding("units", f"units {prunable} at {self.site.path!r} can each be removed within "
                               f"tolerance "
                               f"{self.tolerance}", site=self.site, units=prunable, target=target,
                               score=float(self.damage[prunable].max()),
                               evidence={"method": "frivolous_units", "damage": self.damage[prunable],
                                         "expect": "not validated (removing them changes little)"},
                               data_fingerprint=self.data_fingerprint))
        return out

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame({
            "unit": range(len(self.dead)), "dead": self.dead.tolist(), "redundant": self.redundant.tolist(),
            "prunable": self.prunable.tolist(), "max_abs": self.max_abs.tolist(),
            "active_fraction": self.active_fraction.tolist(), "damage": self.damage.tolist(),
            "partner": self.partner.tolist(), "partner_corr": self.partner_corr.tolist(),
            "substitution_damage": self.substitution_damage.tolist(), "pair_damage": self.pair_damage.tolist()})

    def plot(self) -> Figure:
        """Each unit's ablation damage (log scale), coloured by hazard, with the tolerance line."""
        fig = new_figure(6, 2.6)
        ax = fig.add_subplot()
        units = torch.arange(len(self.dead))
        floor = max(self.tolerance * 1e-3, 1e-12)
        for mask, label, color in ((~(self.dead | self.redundant | self.prunable), "other", "0.6"),
                                   (self.prunable & ~self.dead, "prunable", "tab:blue"),
                                   (self.redundant, "redundant", "tab:orange"), (self.dead, "dead", "black")):
            if bool(mask.any()):
                ax.scatter(units[mask].tolist(), self.damage[mask].clamp(min=floor).tolist(), s=12, label=label,
                           color=color)
        ax.axhline(max(self.tolerance, floor), color="crimson", lw=0.8, ls="--", label="tolerance")
        ax.set_yscale("log")
        ax.set_xlabel(f"unit at {self.site.path}")
        ax.set_ylabel("damage when zero-ablated")
        ax.legend(fontsize=7)
        return fig


def frivolous_units(model: nn.Module, inputs: Inputs, site: Site | str, *,
                    metric: Callable[[Any], Tensor] | None = None, dead_eps: float = 1e-6, corr: float = 0.99,
                    tolerance: float = 0.02, max_rows: int = 4096,
                    mask: Tensor | bool | None = None) -> FrivolousUnits:
    """Find the dead, redundant and prunable units of ``site`` on ``inputs``.

    Args:
        model: any ``nn.Module`` (left unchanged).
        inputs: the data; a unit is judged on these examples only (a unit dead here may fire elsewhere).
        site: where the units live (no unit selection). Use the site after the nonlinearity: a
            dead ReLU unit outputs 0, its pre-activation does not.
        metric: maps the output to one score per example; the damage is then measured on it.
            Default: the whole output tensor (flattened per example).
        dead_eps: a unit is dead when ``max |activation| <= dead_eps`` over the data (over every
            position, for conv channels and sequence units).
        corr: the ``|Pearson correlation|`` (over examples and positions) a partner needs to be
            tested for redundancy.
        tolerance: the largest relative damage that counts as "changes little" (see
            `FrivolousUnits`); 0.02 means a 2% root-mean-square change relative to the output's
            spread over the data.
        max_rows: rows per forward pass of the tiled ablations.
        mask: which positions count for a ``(batch, seq, d)`` site value (padding does not):
            ``None`` (default) uses the inputs' ``attention_mask`` when they are a dict holding one
            of that sequence length (ignored for images and vectors); ``False`` counts every
            position; a ``(batch, seq)`` bool or 0/1 tensor is used as given. Padded positions
            then enter neither ``max_abs``, ``active_fraction``, the partner correlations nor the
            substitutions' affine fits, and without a ``metric`` the damage compares the output
            at real positions only when the output is ``(batch, seq, ...)`` too (a ``metric``
            decides itself which positions it reads). Unpadded inputs give exactly the unmasked
            results.

    Returns:
        A `FrivolousUnits` report.

    Raises:
        InputError: bad thresholds, a bad mask or one that leaves no position, a site that
            selects units or positions, a metric that does
            not give one score per example, a non-tensor output without a metric, or an output
            (metric) that does not vary over the data (its relative change is undefined).

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]))
        ...     _ = model[0].bias.copy_(torch.tensor([0.0, 0.0, -1.0]))
        ...     _ = model[2].weight.copy_(torch.tensor([[0.5, 0.5, 3.0]]))
        >>> report = frivolous_units(model, torch.rand(32, 2), "1")
        >>> report.dead.tolist(), report.redundant_pairs()
        ([False, False, True], [(0, 1)])

    References:
        Räuker et al., "Toward transparent AI", 2022 (frivolous neurons); Casper et al.,
        "Frivolous units: wider networks are not really that wide", 2021.
    """
    resolved, _ = resolve_site(model, site)
    if resolved.selects:
        raise InputError(f"{resolved!r} selects units or positions; frivolous_units judges every unit of a "
                         "whole site.")
    check_float("dead_eps", dead_eps, at_least=0.0)
    check_float("corr", corr, at_least=0.0, at_most=1.0)
    check_float("tolerance", tolerance, at_least=0.0)
    check_int("max_rows", max_rows, at_least=1)
    check_position_mask(mask)
    n = validate_inputs(model, inputs)
    with torch.no_grad():
        value = capture(model, inputs, [resolved])[resolved]
        axis = resolved.unit_axis(value)
        n_units = value.shape[axis]
        rows = value.movedim(axis, -1).reshape(-1, n_units).double()
        keep = position_mask(inputs, value, resolved, mask)  # None: every position counts
        if keep is not None:
            rows = rows[keep.reshape(-1)]  # (batch, seq, n_units): rows are example-major, then position
            if not len(rows):
                raise InputError(f"the mask leaves no position of any example at {resolved!r}; nothing to judge.")
        scores = _scorer(metric, n)
        output = patch(model, inputs, {resolved: lambda v, s: None})
        clean = scores(output)
        weight = _output_weight(keep, output, clean) if metric is None else None
        if weight is None:
            spread = float((clean - clean.mean(0)).pow(2).sum(1).mean().sqrt())
        else:  # each output element's mean over the examples where it is a real position
            centre = (clean * weight).sum(0) / weight.sum(0).clamp(min=1)
            spread = float(((clean - centre).pow(2) * weight).sum(1).mean().sqrt())
        if not spread > 0:
            raise InputError("the output (or metric) is the same for every example, so its relative change is "
                             "undefined; pass more varied inputs or a metric that varies.")

        def damage(edits: list[Callback]) -> Tensor:  # edit j runs on tiled copy j of the batch
            out = patch_each(model, inputs, resolved, edits, scores, max_rows=max_rows)
            change = (out - clean.unsqueeze(0)).pow(2)
            if weight is not None:
                change = change * weight
            return change.sum(2).mean(1).sqrt() / spread

        max_abs = rows.abs().amax(0)
        active = (rows.abs() > dead_eps).double().mean(0)
        dead = max_abs <= dead_eps
        zero = damage([zero_ablation([u]) for u in range(n_units)])
        partner, partner_corr = _partners(rows, dead)
        sub = torch.full((n_units,), math.nan, dtype=torch.float64)
        pair = sub.clone()
        pairs = sorted({tuple(sorted((u, int(partner[u])))) for u in range(n_units)
                        if partner[u] >= 0 and abs(float(partner_corr[u])) >= corr})
        if pairs:
            edits: list[Callback] = []
            for a, b in pairs:
                edits += [_substitute(rows, src=a, dst=b), _substitute(rows, src=b, dst=a), zero_ablation([a, b])]
            d = damage(edits).view(len(pairs), 3)
            for (a, b), (to_b, to_a, both) in zip(pairs, d.tolist(), strict=True):
                for u in (a, b):
                    if int(partner[u]) == a + b - u:
                        sub[u], pair[u] = max(to_b, to_a), both
    keep = ~torch.isnan(sub)
    redundant = keep & (sub.nan_to_num(math.inf) <= tolerance) & (pair.nan_to_num(-math.inf) > tolerance)
    return FrivolousUnits(resolved, max_abs.float(), active.float(), zero.float(), partner, partner_corr.float(),
                          sub.float(), pair.float(), dead, redundant, zero <= tolerance, float(tolerance),
                          float(corr), float(dead_eps), fingerprint(inputs))


def _scorer(metric: Callable[[Any], Tensor] | None, n: int) -> Callable[[Any], Tensor]:
    """Output → ``(batch, k)`` float64 scores: the metric as one column, or the flattened output."""
    def scores(out: Any) -> Tensor:
        if metric is None:
            if not isinstance(out, Tensor):
                raise InputError(f"the model returns a {type(out).__name__}, not a Tensor; pass metric=... to say "
                                 "what to compare.")
            return out.flatten(1).double() if out.ndim > 1 else out.double().unsqueeze(1)
        m = metric(out)
        if not isinstance(m, Tensor) or m.ndim != 1 or m.shape[0] % n:
            shape = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
            raise InputError(f"metric must return one score per example, shape ({n},); got {shape}.")
        return m.double().unsqueeze(1)
    return scores


def _output_weight(keep: Tensor | None, output: Any, clean: Tensor) -> Tensor | None:
    """``(batch, k)`` 1/0 weights of the flattened output's elements (0 at padded positions), or None for all.

    Only a ``(batch, seq, ...)`` output whose ``(batch, seq)`` is the mask's is masked.
    """
    if keep is None or not isinstance(output, Tensor) or output.ndim < 2 or tuple(output.shape[:2]) != tuple(keep.shape):
        return None
    expanded = keep.reshape(*keep.shape, *([1] * (output.ndim - 2))).expand(output.shape)
    return expanded.reshape(len(clean), -1).to(clean.device, torch.float64)


def _substitute(rows: Tensor, *, src: int, dst: int) -> Callback:
    """Replace unit ``dst`` by its least-squares affine fit ``scale * src + shift`` (fitted on ``rows``)."""
    x, y = rows[:, src], rows[:, dst]
    xc = x - x.mean()
    scale = float((xc * (y - y.mean())).sum() / xc.pow(2).sum())
    shift = float(y.mean() - scale * x.mean())
    s_index, d_index = torch.tensor([src]), torch.tensor([dst])

    def edit(value: Tensor, site: Site) -> Tensor:
        axis = site.unit_axis(value)
        return value.index_copy(axis, d_index.to(value.device),
                                scale * value.index_select(axis, s_index.to(value.device)) + shift)

    return edit


def _partners(rows: Tensor, dead: Tensor) -> tuple[Tensor, Tensor]:
    """Each unit's most correlated other unit (-1 if none: constant units) and that correlation."""
    centred = rows - rows.mean(0)
    std = centred.pow(2).sum(0).sqrt()
    usable = (std > 1e-12 * (1 + rows.abs().amax(0))) & ~dead
    c = (centred.T @ centred) / torch.outer(std, std).clamp(min=1e-300)
    c[~usable] = 0.0
    c[:, ~usable] = 0.0
    c.fill_diagonal_(0.0)
    best = c.abs().argmax(1)
    corr = c.gather(1, best[:, None]).squeeze(1)
    has = usable & (corr.abs() > 0)
    partner = torch.where(has, best, torch.full_like(best, -1))
    return partner, torch.where(has, corr, torch.full_like(corr, math.nan))
