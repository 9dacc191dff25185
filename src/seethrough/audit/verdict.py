"""The trojan audit's scan: from a classifier and clean data, a verdict with evidence a sceptic can check.

`scan` returns an `AuditResult`; `seethrough.audit.repair` and `seethrough.audit.attack` act on it,
and `seethrough.report.write_audit_report` renders it.

1. Scan: for every class, reverse-engineer the smallest trigger of each family on a scan split of
   the clean data (`neural_cleanse`, K-Arm scheduled: every class starts, steps go to the smallest
   classes, hopeless classes stop early): a patch (a free mask per pixel), a blend (one low
   amplitude over the whole image) and, for images, a warp (a smooth displacement field,
   `seethrough.audit.warp`).
2. Calibrate: on small inputs clean classes also flip with few pixels, so Neural Cleanse's MAD
   anomaly index is unreliable both ways (on 16×16 digits MLPs it flagged 5 of 8 clean models, and
   missed a trojaned one at 1.89). A planted target stands apart from the clean classes instead:
   its trigger is several times smaller (zoo seeds 0-7 and 11-12: 2.7-9.2× for patch trojans,
   1.0-1.9× between the two smallest classes of clean models; blend scans of zoo seeds 0-7:
   3.0-7.5× for blend trojans, 1.0-1.4× for clean models). With sizes sorted, a family flags
   every class below the largest jump ``s[j+1] / s[j]`` among the first `MAX_TARGETS` (several
   trojans in one model: two planted targets sit below one jump) when that jump is at least the
   family's threshold (``min_gap``; `WARP_MIN_GAP` for warps); with one target this is the runner-up
   rule. The audit's ``anomaly_score`` is the largest jump of the families (warp's in units of its
   own threshold), and the MAD index is reported as evidence.
3. Refine and validate: each flagged trigger is refined (`refine_trigger`: restarts from the
   found mask, annealed sparsity, the fewest pixels that keep the attack, and for a patch the
   nearby placement with the largest target margin) and its identifiable
   pixels named (`identifiable_pixels`); then stamped onto held-out clean inputs and compared with
   the same mask values at shuffled pixel positions (`seethrough.evidence.validate`). This
   confirms the trigger works on unseen inputs; it does not by itself separate planted triggers
   from natural ones (clean models' smallest triggers validate too), which is why step 2 exists.
4. Verdict: "trojaned" for at least one flagged and validated trigger (every validated one is
   reported); otherwise "inconclusive" when the scan could not search (a class's trigger never
   reached the success goal, a search that had not converged in the steps given, outputs that
   became NaN/inf; classes the K-Arm schedule stopped early as hopeless are not among these), with
   the reasons; otherwise "clean", which states the families searched and the `trojan-detection`
   game's measured miss rate (`MEASURED_DETECTION`). Suspects whose jump is within `NEAR` of the
   threshold are listed.

Before any search the data is checked against the model in one forward pass (a model that does not
fit the data, non-finite outputs and labels outside the model's classes are refused in one line), and
the trigger's pattern is searched in the data's own value range (`data_range`), so inputs scaled to
0-255 are scanned on their scale. Any failure of the model's forward during the audit is one
`ForwardError` line.

Vector models ``(N, D)`` are scanned as ``(N, 1, 1, D)`` images, so masks are ``1 × D``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError
from ..core.inputs import validate_inputs
from ..core.results import Result, jsonable, new_figure
from ..evidence import Finding, Trigger, Validation, validate
from ._forward import check_labels, checked_logits, model_failures
from .internal import TriggerUnits, default_feature_site, trigger_units
from .refine import PLACEMENT_RADIUS, identifiable_pixels, refine_trigger
from .reverse import (
    SHRINK_TOLERANCE,
    NeuralCleanse,
    ReversedTrigger,
    data_range,
    k_arm_keeps,
    neural_cleanse,
)

__all__ = ["AuditResult", "scan", "flag_targets", "MEASURED_DETECTION", "NEAR", "MAX_TARGETS", "WARP_MIN_GAP",
           "DEFAULT_FAMILIES", "IDENTIFIABLE_TOLERANCE"]

#: What a "clean" verdict is worth: the `trojan-detection` game's last measured full run of this version (K-Arm
#: schedule, three families, several targets): ``seethrough bench --games trojan-detection --seeds 5``, digits MLP
#: and CNN, zoo seeds 1000-1004 (never used for calibration), 300 steps, run by the issue #11 team lead and again
#: after the half-batch K-Arm exploit and the placement step (2026-12-06, the same counts). Every patch, blend and
#: warp trojan was flagged at its target, both targets of every two-target model were recalled, and no clean model
#: was flagged. (The run before K-Arm, 10 seeds: 20 of 20 patch and blend, 0 false alarms of 20.) Data, not a
#: claim about other models: update it with each full run.
MEASURED_DETECTION: dict[str, Any] = {
    "source": "seethrough bench --games trojan-detection --seeds 5 (full run: MLP and CNN, zoo seeds 1000-1004)",
    "detected": {"patch": [10, 10], "blend": [10, 10], "warp": [10, 10]},  # [detected, trojaned models]
    "two_target_recall": [20, 20],  # [planted targets recalled, planted targets] of the two-target models
    "false_alarms": [0, 10],  # [flagged, clean models]
}

#: A family's suspect is "near the threshold" when its jump is at least this fraction of the family's threshold.
NEAR = 0.8
#: The most classes one family flags: a model may carry several trojans, each with its own target.
MAX_TARGETS = 2
#: The warp family's threshold on the jump, between the clean and the warp-trojaned dev models (zoo seeds 0-7,
#: strength 0.75): warp scans of clean MLPs jump at most 1.25 (first jump) and 1.28 (second; 300 steps, K-Arm),
#: of warp-trojaned MLPs 2.69-5.25 with the target smallest in 8 of 8; H2's scans of MLPs and CNNs (200 images):
#: warp trojans 1.97-6.81, clean 1.01-1.18, patch trojans 1.00-1.56 (`seethrough.audit.warp`). Re-measured with
#: K-Arm's half-batch exploit (MLP 0-7, CNN 0-2): warp trojans 2.04-5.30 (target smallest in 11 of 11), clean at
#: most 1.29, patch 1.01-1.16, blend 1.31-2.59: the threshold still separates them.
WARP_MIN_GAP = 1.6
#: The families `scan` searches by default in images (vector inputs: patch and blend; a warp needs pixels). A
#: K-Arm family scan costs 483-650 forward+backward passes on the dev zoo MLPs and CNNs (575-589 on average).
DEFAULT_FAMILIES = ("patch", "blend", "warp")
#: `identifiable_pixels`' tolerance for a finding's mask (a tenth of the data's range, on average).
IDENTIFIABLE_TOLERANCE = 0.1
_KNOWN_FAMILIES = ("patch", "blend", "warp")
#: The level at which a flagged trigger must beat its shuffled controls (`validate`'s alpha). Its p-value is at
#: least 1 / (n_controls + 1), so fewer than 20 controls could never validate anything.
_VALIDATION_ALPHA = 0.05


class _VectorAsImage(nn.Module):
    """Presents a ``(N, D)`` model as one taking ``(N, 1, 1, D)`` images (the user's model is not changed)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.flatten(1))


def as_images(model: nn.Module) -> nn.Module:
    """The ``(N, 1, 1, D)`` view of a vector model that the audit scans, repairs and attacks."""
    return _VectorAsImage(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside `as_images`'s view (or ``model`` itself)."""
    return model.inner if isinstance(model, _VectorAsImage) else model


def flag_targets(sizes: Sequence[float], *, min_gap: float, max_targets: int = MAX_TARGETS) -> tuple[list[int], float]:
    """The classes a family flags, and its gap (the largest jump among its smallest classes).

    With the sizes sorted (``s[0] ≤ s[1] ≤ ...``), the jump above rank ``j`` is ``s[j] / s[j - 1]``
    for ``j = 1 .. max_targets``. Every class below the deepest jump that reaches ``min_gap`` is
    flagged (two planted targets sit below one jump; the first may also stand apart from the
    second). With ``max_targets=1`` this is the runner-up rule: the smallest class, flagged when the
    runner-up's trigger is ``min_gap`` times larger. Sizes below 1e-6 count as 1e-6.

    Returns:
        ``(flagged classes, smallest first, or [] ; the largest jump)``.

    Raises:
        InputError: fewer than 2 sizes, or ``max_targets`` below 1.

    Example:
        >>> flag_targets([30.0, 4.0, 40.0, 9.0, 35.0], min_gap=2.0)  # two small triggers below one jump
        ([1, 3], 3.3333333333333335)
        >>> flag_targets([30.0, 4.0, 40.0, 20.0, 35.0], min_gap=2.0)  # one target: the runner-up rule
        ([1], 5.0)
        >>> flag_targets([30.0, 20.0, 40.0, 25.0], min_gap=2.0)
        ([], 1.25)
    """
    check_int("max_targets", max_targets, at_least=1)
    if len(sizes) < 2:
        raise InputError(f"flag_targets needs the sizes of at least 2 classes, got {len(sizes)}.")
    order = sorted(range(len(sizes)), key=lambda c: (float(sizes[c]), c))
    ranked = [max(float(sizes[c]), 1e-6) for c in order]
    jumps = [ranked[j] / ranked[j - 1] for j in range(1, min(max_targets, len(ranked) - 1) + 1)]
    deepest = max((j for j, jump in enumerate(jumps, start=1) if jump >= min_gap), default=0)
    return order[:deepest], max(jumps)


def _jump_above(sizes: Sequence[float], n_flagged: int) -> float:
    """The jump between the ``n_flagged``-th smallest size and the next (what flagged those classes)."""
    ranked = sorted(max(float(v), 1e-6) for v in sizes)
    return ranked[n_flagged] / ranked[n_flagged - 1]


@dataclass(frozen=True)
class AuditResult(Result):
    """The audit's verdict, the per-class scans (one per trigger family), and one finding (with its
    validation and identifiable pixels) per flagged class of each family."""

    verdict: Literal["trojaned", "clean", "inconclusive"]
    anomaly_score: float
    scans: dict[str, NeuralCleanse]
    gaps: dict[str, float]
    findings: tuple[Finding, ...]
    validations: tuple[Validation, ...]
    class_names: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    internal: tuple[TriggerUnits | None, ...] = ()
    split: tuple[Tensor, Tensor] | None = field(default=None, repr=False)
    reasons: tuple[str, ...] = ()
    pattern_range: tuple[Tensor, Tensor] | None = field(default=None, repr=False)
    identifiable: tuple[Tensor | None, ...] = field(default=(), repr=False)

    def threshold(self, family: str) -> float:
        """The jump at which ``family`` flags (``min_gap``, or the warp family's own)."""
        min_gap = float(self.settings.get("min_gap", 2.0))
        return float(self.settings.get("min_gaps", {}).get(family, min_gap))

    @property
    def near_threshold(self) -> list[dict[str, Any]]:
        """Families whose jump is within `NEAR` of their threshold but below it: not flagged, worth a look."""
        return [{"family": family, "class": self.scans[family].suspect,
                 "class_name": self.class_names[self.scans[family].suspect], "gap": gap,
                 "min_gap": self.threshold(family)}
                for family, gap in self.gaps.items() if NEAR * self.threshold(family) <= gap < self.threshold(family)]

    @property
    def summary(self) -> str:
        """The verdict in one sentence with its limits: what was searched, the measured miss rate, or why
        the scan could not decide."""
        if self.verdict == "trojaned":
            found = [f"a {f.trigger.family} trigger sends held-out inputs to class {f.target} "
                     f"({self.class_names[f.target]!r}; attack success {v.effect:.2f})"
                     for f, v in zip(self.findings, self.validations, strict=True)
                     if v.validated and f.trigger is not None and f.target is not None]
            return "trojaned: " + "; ".join(found) + "."
        if self.verdict == "inconclusive":
            return "inconclusive: " + " ".join(self.reasons)
        families = " or ".join(self.scans)
        measured = MEASURED_DETECTION["detected"]
        counted = [f for f in self.scans if f in measured]
        missed = " and ".join(f"{measured[f][1] - measured[f][0]} of {measured[f][1]} {f}" for f in counted)
        alarms, clean_models = MEASURED_DETECTION["false_alarms"]
        max_targets = int(self.settings.get("max_targets", MAX_TARGETS))
        text = (f"clean: no {families} trigger of any of the {len(self.class_names)} classes stood out (largest jump "
                f"{self.anomaly_score:.2f}, flagged at {self.settings.get('min_gap', 2.0):g}; up to {max_targets} "
                "targets per family were looked for)")
        if counted:
            text += (f"; on the trojan-detection game's last full run this scan missed {missed} trojans, with "
                     f"{alarms} false alarms on {clean_models} clean models")
        others = [f for f in _KNOWN_FAMILIES if f not in self.scans]
        text += (". Not searched: " + ", ".join(f"{f} triggers" for f in others) + (", " if others else "")
                 + f"input-dependent triggers and more than {max_targets} targets of one family.")
        near = self.near_threshold
        if near:
            text += " Near the threshold: " + ", ".join(
                f"class {n['class']} ({n['class_name']!r}, {n['family']} gap {n['gap']:.2f})" for n in near) + "."
        return text

    @property
    def scan(self) -> NeuralCleanse:
        """The patch scan (Neural Cleanse proper)."""
        return self.scans["patch"]

    @property
    def suspect(self) -> int:
        """The smallest class of the family with the largest gap (in units of its threshold): the target, if the
        model is trojaned."""
        family = max(self.gaps, key=lambda k: self.gaps[k] / self.threshold(k))
        return self.scans[family].suspect

    @property
    def validated_triggers(self) -> tuple[Trigger, ...]:
        """The triggers of the validated findings, in the order of the families scanned."""
        return tuple(f.trigger for f, v in zip(self.findings, self.validations, strict=True)
                     if v.validated and f.trigger is not None)

    def to_dict(self) -> dict[str, Any]:
        """``findings.json`` as DESIGN §6 fixes it (plus the per-class scans and the settings)."""
        findings = []
        internal = self.internal or (None,) * len(self.findings)
        # a result whose findings were replaced without their pixels (hand-built, spliced) has none to report
        identifiable = (self.identifiable if len(self.identifiable) == len(self.findings)
                        else (None,) * len(self.findings))
        for f, v, units, pixels in zip(self.findings, self.validations, internal, identifiable, strict=True):
            t = f.trigger
            assert t is not None
            findings.append({
                "kind": f.kind, "target_class": int(t.target), "class_name": self.class_names[t.target],
                "trigger_family": t.family,
                "score": float(f.score if f.score is not None else 0.0),
                "trigger_mask": t.mask.clamp(0, 1).tolist(),
                # a warp adds no pixels: its pattern (zeros) only carries the shape, kept as is
                "trigger_pattern": (t.pattern.detach() if t.family == "warp" else self._in_box(t.pattern)).tolist(),
                "trigger_field": None if t.field is None else t.field.detach().tolist(),
                "attack_success_rate": v.effect, "validated": v.validated,
                "validation": v.to_dict(), "mask_l1": float(t.mask.sum()),
                "size": float(f.evidence.get("size", t.mask_l1)),
                "mean_displacement": t.mean_displacement if t.family == "warp" else None,
                "gap_to_runner_up": float(f.evidence["gap_to_runner_up"]),
                "rank": int(f.evidence.get("rank", 0)), "refined": bool(f.evidence.get("refined", False)),
                "identifiable_mask": None if pixels is None else pixels.tolist(),
                "identifiable_pixels": None if pixels is None else int(pixels.sum()),
                "internal_evidence": None if units is None else self._user_paths(units.to_dict()),
            })
        scans = {}
        for family, result in self.scans.items():
            scans[family] = [{"class": t.trigger.target, "class_name": self.class_names[t.trigger.target],
                              "mask_l1": t.mask_l1,
                              "anomaly_index": float(a), "scan_success": t.attack_success,
                              "pruned": bool(getattr(t, "pruned", False)), "steps": t.steps_run}
                             for t, a in zip(result.triggers, result.anomaly.tolist(), strict=True)]
        record = {"verdict": self.verdict, "anomaly_score": self.anomaly_score, "findings": findings,
                  "reasons": list(self.reasons), "summary": self.summary, "near_threshold": self.near_threshold,
                  "searched": {"families": list(self.scans), "n_classes": len(self.class_names),
                               "steps": self.settings.get("steps"),
                               "max_targets": self.settings.get("max_targets", MAX_TARGETS),
                               "pattern_range": self.settings.get("pattern_range"),
                               "passes": {f: float(getattr(r, "passes", 0.0)) for f, r in self.scans.items()},
                               "refinement_passes": float(self.settings.get("refinement_passes", 0.0))},
                  "measured_detection": MEASURED_DETECTION,
                  "scan": scans["patch"], "scans": scans, "gaps": dict(self.gaps), "settings": self.settings}
        return jsonable(record)  # strict JSON: a NaN or inf never reaches findings.json

    def _in_box(self, pattern: Tensor) -> Tensor:
        """A pattern within the range the scan searched (the data's; [0, 1] for results built without one)."""
        low, high = self.pattern_range if self.pattern_range is not None else (torch.zeros(1), torch.ones(1))
        return torch.minimum(torch.maximum(pattern.detach(), low.to(pattern)), high.to(pattern))

    def _user_paths(self, record: dict[str, Any]) -> dict[str, Any]:
        """Site paths as the user's model names them (vector models are scanned through a wrapper)."""
        if self.settings.get("vector_input"):
            record["site"] = record["site"].removeprefix("inner.")
        return record

    def to_frame(self) -> Any:
        import pandas as pd

        frames = [r.to_frame().assign(family=family) for family, r in self.scans.items()]
        return pd.concat(frames, ignore_index=True)

    def plot(self) -> Any:
        """Per trigger family, the reversed trigger size of every class (flagged classes in red)."""
        fig = new_figure(3.6 * len(self.scans), 2.6)
        axes = fig.subplots(1, len(self.scans), squeeze=False)[0]
        flagged = {(f.trigger.family, f.target) for f in self.findings if f.trigger is not None}
        for ax, (family, result) in zip(axes, self.scans.items(), strict=True):
            classes = [t.trigger.target for t in result.triggers]
            ax.bar(classes, result.norms.tolist(),
                   color=["crimson" if (family, c) in flagged else "0.6" for c in classes])
            ax.set_title(f"{family}: gap {self.gaps[family]:.2f}", fontsize=9)
            ax.set_xlabel("class")
        axes[0].set_ylabel("reversed trigger size")
        return fig


def scan(model: nn.Module, inputs: Tensor, *, labels: Tensor | None = None, class_names: Sequence[str] | None = None,
         n_classes: int | None = None, steps: int = 300, n_scan: int = 200, min_gap: float = 2.0,
         families: Sequence[str] | None = None, max_targets: int = MAX_TARGETS,
         warp_min_gap: float = WARP_MIN_GAP, schedule: str = "k-arm", refine: bool = True, n_controls: int = 50,
         seed: int = 0, progress: Callable[[int, int], None] | None = None) -> AuditResult:
    """Audit an image or vector classifier for planted trojans, from clean inputs only.

    Args:
        model: returns logits ``(batch, n_classes)``; run in eval mode (left unchanged).
        inputs: clean inputs ``(N, C, H, W)`` or ``(N, D)``; at least 4. The trigger's pattern is
            searched within their per-channel value range (`data_range`).
        labels: optional class indices ``(N,)``; the scan does not use them, but checks them against
            the model's classes before any work (pass them when `repair` will use them).
        class_names: names for the report (default: the class indices).
        n_classes: number of classes (default: ``len(class_names)`` or the model's output width).
        steps: the most optimisation steps per class and family; too few for the searches to
            converge gives an "inconclusive" verdict with the reason.
        n_scan: inputs used to reverse-engineer triggers; the rest (at least a quarter) validate them.
        min_gap: the jump in sorted trigger sizes at which the patch and blend families flag
            (`flag_targets`).
        families: the trigger families to scan: ``"patch"`` (required) and any of ``"blend"``,
            ``"warp"`` (image inputs only); ``None``: `DEFAULT_FAMILIES` for images, patch and blend
            for vectors.
        max_targets: the most classes one family flags (`flag_targets`).
        warp_min_gap: the warp family's threshold on the jump.
        schedule: ``"k-arm"`` (steps go to the smallest classes; hopeless ones stop early) or
            ``"full"`` (every class searched to the end), as `neural_cleanse` takes it.
        refine: refine each flagged trigger (`refine_trigger`) before validating it.
        n_controls: shuffled-trigger controls per flagged class; at least 20 (a trigger's p-value is
            at least 1 / (n_controls + 1), and it must fall below 0.05 to validate).
        seed: seeds the split, the optimisation and the controls.
        progress: called as ``progress(done, total)`` after each class of each family.

    Raises:
        InputError: inputs that are not ``(N, D)`` or ``(N, C, H, W)``, too few inputs, fewer than 20
            controls, an unknown family (or a warp search of vector inputs), a model whose output is not
            ``(batch, n_classes)`` or is NaN/inf on the inputs, labels outside the model's classes.
        ForwardError: the model's forward fails on the inputs (checked with one pass before the
            search) or at any later point of the audit.
    """
    x = inputs
    if not isinstance(x, Tensor) or x.ndim not in (2, 4):
        raise InputError(f"audit inputs must be (N, D) or (N, C, H, W); got {getattr(x, 'shape', type(x).__name__)}.")
    if x.shape[0] < 4:
        raise InputError(f"the audit needs at least 4 clean inputs, got {x.shape[0]}.")
    families = (DEFAULT_FAMILIES if x.ndim == 4 else ("patch", "blend")) if families is None else tuple(families)
    if not families or len(set(families)) != len(families) or not set(families) <= set(_KNOWN_FAMILIES):
        raise InputError(f"families must be distinct names among 'patch', 'blend' and 'warp', got {list(families)}.")
    if "patch" not in families:
        raise InputError("families must include 'patch' (the Neural Cleanse scan the verdict and report build on).")
    if "warp" in families and x.ndim == 2:
        raise InputError("the warp family displaces pixels of images (N, C, H, W); vector inputs (N, D) have none: "
                         "search 'patch' and 'blend'.")
    min_gap = check_float("min_gap", min_gap, at_least=1.0)
    warp_min_gap = check_float("warp_min_gap", warp_min_gap, at_least=1.0)
    max_targets = check_int("max_targets", max_targets, at_least=1)
    n_controls = check_int("n_controls", n_controls, at_least=1)
    if 1.0 / (n_controls + 1) >= _VALIDATION_ALPHA:  # no finding could validate: a trojan would read "clean"
        raise InputError(f"n_controls={n_controls} can never validate a trigger: its p-value is at least "
                         f"1/(n_controls + 1) = {1.0 / (n_controls + 1):.3f}, and it must fall below "
                         f"{_VALIDATION_ALPHA}; pass n_controls ≥ {math.floor(1 / _VALIDATION_ALPHA)}.")
    validate_inputs(model, x)
    logits = checked_logits(model, x)  # one pass before any work: shape, output form, finite outputs
    k = n_classes or (len(class_names) if class_names is not None else int(logits.shape[1]))
    names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(k))
    if len(names) != k or logits.shape[1] != k:
        raise InputError(f"the model has {logits.shape[1]} outputs but {len(names)} class names / n_classes={k}.")
    if labels is not None:
        check_labels(labels, x.shape[0], k)
    thresholds = {f: warp_min_gap if f == "warp" else min_gap for f in families}
    scanned = _VectorAsImage(model) if x.ndim == 2 else model
    images = x[:, None, None, :] if x.ndim == 2 else x
    box = data_range(images)
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    n_scan = min(n_scan, (3 * images.shape[0]) // 4)
    scan_x, held_x = images[order[:n_scan]], images[order[n_scan:]]
    scans, gaps, flags = {}, {}, {}
    with model_failures(model, x, "trigger search"):
        for i, family in enumerate(families):
            def step(done: int, total: int, offset: int = i * k) -> None:
                if progress is not None:
                    progress(offset + done, k * len(families))

            scans[family] = neural_cleanse(scanned, scan_x, n_classes=k, steps=steps, family=family, seed=seed,
                                           schedule=schedule, progress=step, pattern_range=box)
            flags[family], gaps[family] = flag_targets(scans[family].norms.tolist(), min_gap=thresholds[family],
                                                       max_targets=max_targets)
    reasons = _reasons(scans, names, steps)
    with torch.no_grad(), model_failures(model, x, "validation"):
        held_predictions = scanned(held_x).argmax(-1)
        scan_predictions = scanned(scan_x).argmax(-1)
    findings, validations, internal, identifiable = [], [], [], []
    refinement_passes = 0.0  # the refinement restarts' forward+backward passes: part of the audit's cost
    for family, result in scans.items():
        # A family whose outputs went non-finite is never scored.
        if not all(t.finite for t in result.triggers):
            continue
        for rank, cls in enumerate(flags[family]):
            # A class the model already predicts for every held-out input needs no trigger: a degenerate
            # model, not a backdoor, and nothing to validate a trigger on.
            if not bool((held_predictions != cls).any()):
                continue
            found = result.triggers[cls]
            refined = False
            if refine and bool((scan_predictions != cls).any()):
                with model_failures(model, x, "trigger refinement"):
                    # placement shifts a patch over the image: vectors' features have no neighbours to shift to
                    better = refine_trigger(scanned, scan_x[scan_predictions != cls], found, pattern_range=box,
                                            seed=seed, radius=0 if x.ndim == 2 else PLACEMENT_RADIUS)
                found, refined = better, True
                refinement_passes += float(better.passes)
            jump = _jump_above(result.norms.tolist(), len(flags[family]))
            finding = _finding(found, family, names, float(result.anomaly[cls]), jump, rank, refined)
            findings.append(finding)
            with model_failures(model, x, "validation"):
                validations.append(validate(finding, scanned, held_x, n_controls=n_controls, alpha=_VALIDATION_ALPHA,
                                            seed=seed))
                internal.append(_internal_evidence(scanned, held_x, found.trigger, n_controls, seed))
            identifiable.append(identifiable_pixels(found.trigger, held_x, tolerance=IDENTIFIABLE_TOLERANCE))
    verdict: Literal["trojaned", "clean", "inconclusive"] = (
        "trojaned" if any(v.validated for v in validations) else "inconclusive" if reasons else "clean")
    settings = {"steps": steps, "n_scan": int(scan_x.shape[0]), "n_held_out": int(held_x.shape[0]),
                "min_gap": min_gap, "min_gaps": thresholds, "max_targets": max_targets, "schedule": schedule,
                "refine": refine, "refinement_passes": refinement_passes, "families": list(families),
                "vector_input": x.ndim == 2, "n_controls": n_controls,
                "seed": seed, "suspect_class": scans["patch"].suspect,
                "suspect_anomaly_index": float(scans["patch"].anomaly[scans["patch"].suspect]),
                "pattern_range": [box[0].flatten().tolist(), box[1].flatten().tolist()]}
    anomaly_score = max(gap if thresholds[f] == min_gap else gap * min_gap / thresholds[f] for f, gap in gaps.items())
    return AuditResult(verdict, float(anomaly_score), scans, gaps, tuple(findings), tuple(validations), names,
                       settings, tuple(internal), (scan_x, held_x), reasons, box, tuple(identifiable))


def _finding(found: ReversedTrigger, family: str, names: Sequence[str], score: float, gap: float, rank: int,
             refined: bool) -> Finding:
    """The trojan finding of one flagged class: its (refined) trigger, its size and the jump that flagged it."""
    t = found.trigger
    cls = t.target
    if family == "patch":
        size = f"{t.mask_l1:.1f}-pixel"
    elif family == "blend":
        size = f"alpha={float(t.mask.mean()):.3f} blend"
    else:
        size = f"{t.mean_displacement:.2f}-pixel (mean displacement) warp"
    return Finding("trojan", f"stamping this {size} trigger flips inputs to class {names[cls]!r}",
                   trigger=t, score=score,
                   evidence={"method": f"neural-cleanse {family} scan", "trigger_family": family,
                             "gap_to_runner_up": gap, "rank": rank, "size": found.mask_l1, "refined": refined})


def _classes(classes: list[int], names: Sequence[str]) -> str:
    shown = ", ".join(f"{c} ({names[c]!r})" for c in classes[:5])
    return shown + (f" and {len(classes) - 5} more" if len(classes) > 5 else "")


def _reasons(scans: dict[str, NeuralCleanse], names: Sequence[str], steps: int) -> tuple[str, ...]:
    """Why the scan could not search, one sentence per family and cause (empty when every search converged).

    Classes the K-Arm schedule stopped early (``pruned``: their triggers stayed far larger than the
    smallest classes', or never reached the goal while those had) are hopeless arms, not failures:
    their sizes are upper bounds far above the classes that decide the verdict, which always run.
    The same rule holds for a full scan, so that the verdict does not depend on the schedule: a class
    whose search had not converged counts only while it is one the K-Arm schedule keeps (`_contenders`).
    """
    reasons = []
    for family, result in scans.items():
        triggers = result.triggers
        contenders = _contenders(triggers)
        searched = [t for t in triggers if not getattr(t, "pruned", False)]
        broken = [t.trigger.target for t in triggers if not t.finite]
        failed = [t.trigger.target for t in searched if t.finite and not t.reached_goal]
        if any(t.reached_goal for t in triggers):
            failed = [k for k in failed if k in contenders]
        shrinking = [t for t in searched if t.finite and t.reached_goal and not t.converged
                     and t.trigger.target in contenders]
        if broken:
            reasons.append(f"The model's outputs became NaN or infinite on stamped inputs while searching {family} "
                           f"triggers for class(es) {_classes(broken, names)}; those searches stopped and were not "
                           "scored.")
        if failed and not any(t.reached_goal for t in triggers) and not broken:
            reasons.append(f"No class's {family} trigger reached the success goal in {steps} steps: the search could "
                           "not flip inputs to any class (too few steps, or inputs the trigger cannot move); "
                           "rerun with more steps.")
        elif failed:
            reasons.append(f"The {family} triggers of class(es) {_classes(failed, names)} never reached the success "
                           f"goal in {steps} steps, so their smallest triggers are unknown; rerun with more steps.")
        still = [t for t in shrinking if t.recent_shrink > SHRINK_TOLERANCE]
        unstarted = [t for t in shrinking if t not in still]
        if still:
            worst = max(t.recent_shrink for t in still)
            reasons.append(f"The {family} search had not converged in {steps} steps: the smallest successful masks of "
                           f"class(es) {_classes([t.trigger.target for t in still], names)} were still shrinking "
                           f"(by up to {worst:.0%} over the last quarter of the steps); rerun with more steps (300 "
                           "converged on the zoo's digits models).")
        if unstarted:
            reasons.append(f"The {family} search had not converged in {steps} steps: the masks of class(es) "
                           f"{_classes([t.trigger.target for t in unstarted], names)} had not yet shrunk below their "
                           "first success (the search was still growing them); rerun with more steps.")
    return tuple(reasons)


def _contenders(triggers: Sequence[ReversedTrigger]) -> set[int]:
    """The classes that can still decide a family's flags, by the K-Arm schedule's own keep rule (`k_arm_keeps`).

    The finite searches ranked by size (a class that never reached the goal as infinitely large, after
    every class that did): the first `K_ARM_KEEP`, and any other within `K_ARM_PRUNE_RATIO` of the
    `K_ARM_KEEP`-th, `K_ARM_MOST` at most. A larger class's size is an upper bound, but it would have to
    shrink below the deciding classes' to matter; on the zoo's clean digits models (seed 0, 300 steps) the
    full schedule's unconverged or unsuccessful warp searches were 3.6-4.8× the smallest, where K-Arm had
    stopped them as hopeless.

    Example:
        >>> from seethrough.evidence import Trigger
        >>> def arm(k, size, goal=True):
        ...     return ReversedTrigger(Trigger(torch.zeros(2, 2), torch.zeros(1, 2, 2), k), size, 1.0, reached_goal=goal)
        >>> sorted(_contenders([arm(0, 1.0), arm(1, 1.1), arm(2, 2.0), arm(3, 2.2), arm(4, 9.0), arm(5, 0.5, False)]))
        [0, 1, 2, 3]
    """
    return k_arm_keeps({t.trigger.target: t.mask_l1 if t.reached_goal else math.inf for t in triggers if t.finite})


def _internal_evidence(model: nn.Module, held_x: Tensor, trigger: Trigger, n_controls: int,
                       seed: int) -> TriggerUnits | None:
    """The units that carry a flagged trigger (`trigger_units` at the last linear layer's input), if there is one.

    ``None`` for a model without an ``nn.Linear`` or whose feature layer is too narrow to name units in.
    """
    try:
        return trigger_units(model, held_x, trigger, site=default_feature_site(model),
                             n_controls=n_controls, seed=seed)
    except InputError:
        return None
