"""Causal validation of a `Finding`: intervene, measure, and compare with a matched random control.

Observational tools (exemplars, attribution, probes, lenses) propose; `validate` tests. The
intervention depends on the finding's kind: ablate its units, project out its direction, or
stamp its trigger. The same intervention applied to matched random controls (as many random
units, a random direction, the trigger's pixels shuffled, a warp's field phase-randomised to a
random field of the same smoothness and size) gives the null distribution, so the
p-value answers "is this finding better than an arbitrary one of the same size?". A finding
tested on the data it was discovered on is flagged: when the finding carries the `Fingerprint`
of its discovery data and ``inputs`` share examples with it, the result is ``in_sample`` and
`validate` warns (selection inflates an in-sample effect; validate on held-out data).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..core.checks import check_int
from ..core.errors import InputError
from ..core.hooks import Callback, capture, patch
from ..core.inputs import validate_inputs
from ..core.interventions import (
    add_direction,
    check_ablation,
    mean_ablation,
    position_mask,
    project_out,
    unit_means,
    zero_ablation,
)
from ..core.results import Result, jsonable, new_figure
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from ._circuit import edge_means, edge_problem
from .finding import Finding
from .fingerprint import fingerprint
from .summary import bootstrap_ci
from .trigger import Trigger, stamp

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["Validation", "validate", "target_log_prob", "target_hit"]

Metric = Callable[[Any], Tensor]


def target_log_prob(target: int) -> Metric:
    """Per-example log-probability of class ``target`` from logits ``(batch, n_classes)``."""
    def metric(output: Any) -> Tensor:
        return torch.log_softmax(_logits(output), dim=-1)[:, target]
    return metric


def target_hit(target: int) -> Metric:
    """Per-example 1.0 where the predicted class is ``target``, else 0.0."""
    def metric(output: Any) -> Tensor:
        return (_logits(output).argmax(-1) == target).to(torch.float64)
    return metric


def _logits(output: Any) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    raise InputError(f"cannot read logits from a {type(output).__name__}; pass metric=... explicitly.")


@dataclass(frozen=True)
class Validation(Result):
    """The outcome of `validate`: effect of the intervention, its CI, and the random-control test.

    ``effect`` is signed so that positive supports the claim (ablating the units lowers the
    metric; stamping the trigger raises the target rate). ``p_value`` is the fraction of controls
    (plus one) whose effect is at least as large. ``in_sample`` is True when ``n_in_sample`` (> 0)
    of the inputs (distinct examples) were also in the data the finding was discovered on (its
    ``data_fingerprint``), False when none were, and None when the finding carries no fingerprint
    (unknown). An in-sample effect is inflated by selection: ``validated`` still reports the test,
    but only a held-out validation is evidence.
    """

    kind: str
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    control_effects: tuple[float, ...]
    n_examples: int
    alpha: float = 0.05
    in_sample: bool | None = None
    n_in_sample: int | None = None
    measures: Mapping[str, float] = field(default_factory=dict)  # circuit findings: faithfulness, CPR, CMD...

    @property
    def validated(self) -> bool:
        """The effect is positive (CI above zero) and beats the random controls at level ``alpha``."""
        return self.p_value < self.alpha and self.ci_low > 0.0

    @property
    def control_mean(self) -> float:
        return float(np.mean(self.control_effects))

    def to_dict(self) -> dict[str, Any]:
        """The outcome with the derived ``control_mean``, ``n_controls`` and ``validated`` (strict JSON)."""
        return jsonable({"kind": self.kind, "effect": self.effect, "ci_low": self.ci_low, "ci_high": self.ci_high,
                         "p_value": self.p_value, "control_mean": self.control_mean,
                         "n_controls": len(self.control_effects), "n_examples": self.n_examples,
                         "validated": self.validated, "in_sample": self.in_sample, "n_in_sample": self.n_in_sample,
                         "measures": dict(self.measures)})

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame([self.to_dict()])

    def plot(self) -> Figure:
        """Histogram of control effects with the finding's effect and CI marked."""
        fig = new_figure(4.5, 2.6)
        ax = fig.add_subplot()
        ax.hist(self.control_effects, bins=20, color="0.7", label="random controls")
        ax.axvline(self.effect, color="crimson", label=f"finding (p={self.p_value:.3f})")
        ax.axvspan(self.ci_low, self.ci_high, color="crimson", alpha=0.15)
        ax.set_xlabel("effect (in-sample: inflated by selection)" if self.in_sample else "effect")
        ax.legend(fontsize=7)
        return fig


def validate(finding: Finding, model: nn.Module, inputs: Inputs, *, metric: Metric | None = None,
             n_controls: int = 100, ablation: Literal["zero", "mean"] = "zero", reference: Inputs | None = None,
             alpha: float = 0.05, steer: float | None = None, seed: int = 0) -> Validation:
    """Test ``finding`` by intervention against matched random controls.

    Args:
        finding: what to test.
        model: the model the finding is about (left unchanged).
        inputs: the data to intervene on; for trigger findings a ``(N, C, H, W)`` tensor. Use data
            held out from the finding's discovery: when ``finding.data_fingerprint`` shares
            examples with ``inputs`` the result is marked ``in_sample`` and a warning is issued.
        metric: maps the model output to one score per example. Defaults: the log-probability of
            ``finding.target`` (units, direction), the target hit rate (trigger).
        n_controls: number of random controls (the p-value's resolution is ``1 / (n_controls + 1)``).
        ablation: ``"zero"`` or ``"mean"`` (each unit's mean over ``reference``) for unit findings
            (a circuit finding uses its own ``evidence["ablation"]``).
        reference: the data whose mean defines mean ablation (default: ``inputs``); for HF-style dict
            inputs with an ``attention_mask`` the mean is over real positions only (no padding).
            For a circuit finding, required: the corrupted inputs, paired with ``inputs`` row by row.
            Its effect is per example ``(m(circuit) - m(corrupted)) / gap`` (sufficient: every other
            edge corrupted) or ``(m(clean) - m(without circuit)) / gap`` (necessary: its edges
            corrupted), ``gap`` the clean-to-corrupted change of the metric's mean; its controls are
            random edge sets of its size (``torch.randperm`` of the stream's edges, as
            `seethrough.subnetworks.circuit_significance` draws them); ``measures`` holds the
            faithfulness and completeness and, with ``evidence["ranking"]``, CPR and CMD.
        alpha: level at which `Validation.validated` is decided.
        steer: for a ``"direction"`` finding, test it by steering instead of projecting out: add
            ``steer * direction`` (as given) at the site; the effect is the metric's rise, and the
            controls are random directions of the same norm (e.g. an SAE latent's decoder row
            scaled to its typical activation: "adding this feature raises the target").
        seed: seeds the controls and the bootstrap.

    Returns:
        A `Validation`; its ``in_sample`` says whether ``inputs`` overlap the discovery data.

    Warns:
        UserWarning: ``inputs`` share examples with the data the finding was discovered on.

    Raises:
        InputError: a finding whose default metric needs a target it lacks, units out of range, a
            direction of the wrong length, or trigger inputs that are not images of the trigger's size.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [0, 0], [0, 0]]))
        ...     _ = model[0].bias.zero_(); _ = model[2].weight.copy_(torch.tensor([[5.0, 0, 0, 0], [0, 5, 0, 0]]))
        >>> f = Finding("units", "unit 0 carries class 0", site=Site("1"), units=[0], target=0)
        >>> v = validate(f, model, torch.rand(64, 2) + 0.5, n_controls=20)
        >>> v.validated, v.p_value < 0.1
        (True, True)
    """
    check_int("n_controls", n_controls, at_least=1)
    check_ablation(ablation, ("zero", "mean"))
    if steer is not None and finding.kind != "direction":
        raise InputError(f"steer= tests a 'direction' finding by adding it; this finding is {finding.kind!r}.")
    if metric is None:
        if finding.target is None:
            raise InputError(f"the {finding.kind!r} finding has no target; pass metric=... to say what to measure.")
        metric = target_hit(finding.target) if finding.kind == "trojan" else target_log_prob(finding.target)
    n_in_sample = _n_in_sample(finding, inputs)
    if n_in_sample:
        warnings.warn(f"validating on data the finding was discovered on ({n_in_sample} examples in-sample): the "
                      "effect is inflated by selection; validate on held-out data.", stacklevel=2)
    in_sample = None if n_in_sample is None else n_in_sample > 0
    gen = torch.Generator().manual_seed(seed)
    measures: dict[str, float] = {}
    with torch.no_grad():
        if finding.kind == "trojan":
            per_example, controls = _trigger(finding, model, inputs, metric, n_controls, gen)
        elif finding.kind == "circuit":
            per_example, controls, measures = _circuit(finding, model, inputs, reference, metric, n_controls, gen)
        elif finding.kind == "route":
            per_example, controls = _route(finding, model, inputs, metric, n_controls, gen)
        else:
            per_example, controls = _site_intervention(finding, model, inputs, metric, n_controls, ablation,
                                                       reference, gen, steer)
    values = per_example.double().cpu().numpy()
    effect = float(values.mean())
    lo, hi = bootstrap_ci(values, seed=seed)
    p_value = (1 + sum(c >= effect for c in controls)) / (1 + len(controls))
    return Validation(finding.kind, effect, lo, hi, float(p_value), tuple(controls), len(values), alpha,
                      in_sample, n_in_sample, measures)


def _n_in_sample(finding: Finding, inputs: Inputs) -> int | None:
    """How many distinct examples of ``inputs`` the finding was discovered on (None: it has no fingerprint)."""
    if finding.data_fingerprint is None:
        return None
    return finding.data_fingerprint.overlap(fingerprint(inputs))


def _route(finding: Finding, model: nn.Module, inputs: Inputs, metric: Metric, n_controls: int,
           gen: torch.Generator) -> tuple[Tensor, list[float]]:
    """Zero the site at the claimed positions; controls zero as many random other positions.

    A route claims the output *reads* these positions, in either direction: the effect per example is
    the metric's absolute change.
    """
    assert finding.site is not None and finding.site.positions is not None  # guaranteed by Finding.__post_init__
    site, _ = resolve_site(model, finding.site)
    validate_inputs(model, inputs)
    whole = Site(site.path, point=site.point, call=site.call, unit_dim=site.unit_dim)
    value = capture(model, inputs, [whole])[whole]
    if value.ndim < 3:
        raise InputError(f"a 'route' finding needs a (batch, seq, ...) site; {site.path!r} gives {tuple(value.shape)}.")
    n_positions = value.shape[1]
    claimed = sorted({p % n_positions for p in site.positions or () if -n_positions <= p < n_positions})
    if len(claimed) != len(site.positions or ()):
        raise InputError(f"route positions {list(site.positions or ())} are out of range for {n_positions} positions.")
    pool = [p for p in range(n_positions) if p not in set(claimed)]
    if len(pool) < len(claimed):
        raise InputError(f"{len(claimed)} claimed positions of {n_positions} leave too few others for controls.")
    clean = metric(patch(model, inputs, {whole: lambda v, s: None}))

    def blanked(chosen: list[int]) -> Tensor:
        at = Site(site.path, point=site.point, positions=chosen, call=site.call, unit_dim=site.unit_dim)
        return metric(patch(model, inputs, {at: lambda v, s: torch.zeros_like(v)}))

    controls = []
    for _ in range(n_controls):
        draw = torch.randperm(len(pool), generator=gen)[:len(claimed)].tolist()
        controls.append(float((clean - blanked(sorted(pool[i] for i in draw))).abs().double().mean()))
    return (clean - blanked(claimed)).abs(), controls


def _site_intervention(finding: Finding, model: nn.Module, inputs: Inputs, metric: Metric, n_controls: int,
                       ablation: str, reference: Inputs | None,
                       gen: torch.Generator, steer: float | None = None) -> tuple[Tensor, list[float]]:
    assert finding.site is not None  # guaranteed by Finding.__post_init__
    site, _ = resolve_site(model, finding.site)
    validate_inputs(model, inputs)
    base = Site(site.path, point=site.point, positions=site.positions, call=site.call, unit_dim=site.unit_dim)
    value = capture(model, inputs, [base])[base]
    axis = base.unit_axis(value)
    n_units = value.shape[axis]
    clean = metric(patch(model, inputs, {base: lambda v, s: None}))

    if finding.kind == "units":
        units = list(finding.units or ())
        bad = [u for u in units if not 0 <= u < n_units]
        if bad:
            raise InputError(f"units {bad} are out of range for {n_units} units at {site.path!r}.")
        ref, ref_inputs = value, inputs
        if ablation == "mean" and reference is not None:
            validate_inputs(model, reference)
            ref, ref_inputs = capture(model, reference, [base])[base], reference
        # the mean over real positions: an HF-style attention mask leaves padding out (issue #10)
        means = unit_means(ref, base, mask=position_mask(ref_inputs, ref, base))

        def ablated(chosen: list[int]) -> Tensor:
            edit = zero_ablation(chosen) if ablation == "zero" else mean_ablation(means, chosen)
            return metric(patch(model, inputs, {base: edit}))

        # controls are drawn from the other units when there are enough of them, else from all
        pool = [u for u in range(n_units) if u not in set(units)]
        if len(pool) < len(units):
            pool = list(range(n_units))
        per_example = clean - ablated(units)
        controls = []
        for _ in range(n_controls):
            pick = torch.randperm(len(pool), generator=gen)[: len(units)].tolist()
            controls.append(float((clean - ablated([pool[i] for i in pick])).double().mean()))
        return per_example, controls

    assert finding.direction is not None  # guaranteed by Finding.__post_init__
    if finding.direction.shape[0] != n_units:
        raise InputError(f"the direction has {finding.direction.shape[0]} entries but {site.path!r} has "
                         f"{n_units} units along dim {axis}.")

    def projected(edit: Callback) -> Tensor:
        return metric(patch(model, inputs, {base: edit}))

    if steer is not None:  # adding the direction should raise the metric more than random directions of its norm
        norm = finding.direction.double().norm()
        per_example = projected(add_direction(finding.direction, alpha=steer)) - clean
        controls = []
        for _ in range(n_controls):
            random = torch.randn(n_units, generator=gen, dtype=torch.float64)
            random = (random * norm / random.norm()).to(finding.direction.dtype)
            controls.append(float((projected(add_direction(random, alpha=steer)) - clean).double().mean()))
        return per_example, controls

    per_example = clean - projected(project_out(finding.direction))
    controls = [float((clean - projected(project_out(torch.randn(n_units, generator=gen)))).double().mean())
                for _ in range(n_controls)]
    return per_example, controls


def _circuit(finding: Finding, model: nn.Module, inputs: Inputs, reference: Inputs | None, metric: Metric,
             n_controls: int, gen: torch.Generator) -> tuple[Tensor, list[float], dict[str, float]]:
    """Sufficiency or necessity of a circuit's edges per example, against random edge sets of its size."""
    if reference is None:
        raise InputError("a 'circuit' finding is tested against corrupted inputs: pass reference=corrupted (paired "
                         "with inputs row by row).")
    problem = edge_problem(model, inputs, reference, metric, finding.evidence)
    everything = list(problem.edges)
    circuit = {(str(w), str(r)) for w, r in finding.evidence["edges"]}
    unknown = sorted(circuit - set(everything))
    if unknown or len(circuit) >= len(everything):
        raise InputError(f"the finding's edges must be fewer than all of the stream's edges {everything}; got "
                         f"{sorted(circuit)}" + (f" (unknown: {unknown})." if unknown else "."))
    k, whole = len(circuit), frozenset(everything)
    sets = [frozenset(circuit)] + [frozenset(everything[i] for i in torch.randperm(len(everything), generator=gen)[:k]
                                             .tolist()) for _ in range(n_controls)]
    necessary = finding.evidence["test"] == "necessary"
    runs = edge_means(problem, [frozenset(), whole] + [s if necessary else whole - s for s in sets])
    clean, corrupted = runs[0], runs[1]
    gap = float(clean.mean() - corrupted.mean())
    if gap == 0:
        raise InputError("the metric's mean is the same on inputs and reference; a circuit's effect is undefined.")
    values = (clean - runs[2:]) / gap if necessary else (runs[2:] - corrupted) / gap
    name = "completeness" if necessary else "faithfulness"
    measures = {name: float(values[0].mean()), "n_edges": float(k)}
    ranking = [(str(w), str(r)) for w, r in finding.evidence.get("ranking") or []]
    if ranking:
        if sorted(ranking) != sorted(everything):
            raise InputError(f"evidence['ranking'] must list every edge of the stream once ({everything}).")
        kept = ((edge_means(problem, [whole - frozenset(ranking[:j]) for j in range(len(ranking) + 1)]).mean(1)
                 - float(corrupted.mean())) / gap).numpy()
        fraction = np.arange(len(ranking) + 1) / len(ranking)
        measures["cpr"] = float(np.trapezoid(kept, fraction))
        measures["cmd"] = float(np.trapezoid(np.abs(1 - kept), fraction))
    return values[0], values[1:].mean(1).tolist(), measures


def _trigger(finding: Finding, model: nn.Module, inputs: Inputs, metric: Metric, n_controls: int,
             gen: torch.Generator) -> tuple[Tensor, list[float]]:
    trigger = finding.trigger
    assert trigger is not None and finding.target is not None
    mask, pattern = trigger.mask, trigger.pattern
    if not isinstance(inputs, Tensor) or inputs.ndim != 4 or tuple(inputs.shape[1:]) != tuple(pattern.shape):
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise InputError(f"trojan findings need image inputs (N, {', '.join(map(str, pattern.shape))}); got {shape}.")
    validate_inputs(model, inputs)
    # Only inputs not already classified as the target can be flipped.
    keep = _logits(model(inputs)).argmax(-1) != finding.target
    x = inputs[keep]
    if x.shape[0] == 0:
        raise InputError(f"every input is already classified as the target {finding.target}; pass other inputs.")
    clean = metric(model(x))

    def stamped(control: Trigger) -> Tensor:
        return metric(model(stamp(x, control)))

    per_example = stamped(trigger) - clean
    if trigger.field is not None:  # a warp: random smooth fields of the same size
        controls = [float((stamped(control) - clean).double().mean())
                    for control in _warp_controls(trigger, n_controls, gen)]
        return per_example, controls
    m, p = mask.to(x), pattern.to(x)
    h, w = m.shape
    controls = []
    for _ in range(n_controls):  # the same mask values and pattern, at shuffled pixel positions
        perm = torch.randperm(h * w, generator=gen)
        shuffled = Trigger(m.flatten()[perm].view(h, w), p.flatten(1)[:, perm].view_as(p), trigger.target,
                           trigger.family)
        controls.append(float((stamped(shuffled) - clean).double().mean()))
    return per_example, controls


def _warp_controls(trigger: Trigger, n_controls: int, gen: torch.Generator) -> list[Trigger]:
    """Matched random warps: the displacement ``mask · field`` phase-randomised, rescaled to its mean length.

    Both components' Fourier phases are shifted by one random phase per frequency (the phases of a
    fresh white-noise image, so the result stays real): each component keeps its amplitudes, so its
    smoothness (a WaNet field upsampled from a small grid stays as smooth), and the two keep their
    cross-spectrum (Prichard & Theiler 1994's multivariate surrogate data). The control is then
    scaled so that its mean displacement ``|(dy, dx)|₂`` equals the finding's: a warp of the same
    size and smoothness pointing nowhere in particular.
    """
    assert trigger.field is not None
    moved = (trigger.mask * trigger.field).detach().double().cpu()
    h, w = moved.shape[1:]
    size = float(torch.linalg.vector_norm(moved, dim=0).mean())
    spectrum = torch.fft.rfft2(moved)
    ones = torch.ones(h, w)
    out = []
    for _ in range(n_controls):
        noise = torch.fft.rfft2(torch.randn(h, w, generator=gen, dtype=torch.float64))
        field = torch.fft.irfft2(spectrum * torch.exp(1j * noise.angle()), s=(h, w))
        length = float(torch.linalg.vector_norm(field, dim=0).mean())
        field = field * (size / length) if length > 0 else field
        out.append(Trigger(ones, torch.zeros_like(trigger.pattern.detach().cpu()), trigger.target, "warp",
                           field.float()))
    return out
