"""The audit's HTML page: verdict, findings with their validation, every class's scan, repair and attack.

A warp finding or scan shows its reversed displacement field (length per pixel and arrows)
instead of a mask and pattern; every finding states its identifiable pixels.

Renders the result objects of `seethrough.audit` (`AuditResult`, `RepairResult`, `DesignedAttack`).

Self-contained and offline like the bench report; class names come from untrusted data files, so
everything is autoescaped and drawn into figures as plain text, and control and bidirectional
formatting characters (NUL, RTL override, zero-width marks...) are shown as visible ``<U+202E>``
codes instead of being passed to the browser (findings.json keeps the names as they are).
"""

from __future__ import annotations

import dataclasses
import os
import unicodedata
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..audit import AuditResult, DesignedAttack, NeuralCleanse, RepairResult, TriggerUnits
from ..core.io import atomic_write
from ..evidence import Trigger, displacement, stamp
from .figures import figure_to_data_uri

__all__ = ["write_audit_report", "visible"]


def visible(text: object) -> str:
    r"""``text`` with every control, format (bidi overrides, zero-width) and separator character other
    than a plain space written as a visible ``<U+XXXX>`` code, so no name can reorder or hide the text
    around it.

    Example:
        >>> visible("cat\u202egod\x00")
        'cat<U+202E>god<U+0000>'
    """
    return "".join(f"<U+{ord(ch):04X}>" if unicodedata.category(ch)[0] in "CZ" and ch != " " else ch
                   for ch in str(text))


def _plain(text: str) -> str:
    """Text for matplotlib that is never parsed as mathtext, with control characters made visible."""
    return visible(text).replace("$", r"\$")


def _scan_figure(scan: NeuralCleanse, family: str, names: Sequence[str], min_gap: float) -> Figure:
    fig = Figure(figsize=(9, 2.8))
    ax1, ax2 = fig.subplots(1, 2)
    classes = [t.trigger.target for t in scan.triggers]
    labels = [_plain(f"{c}: {names[c]}")[:18] for c in classes]
    ax1.bar(range(len(classes)), scan.norms.tolist(), color=["tab:orange" if c == scan.suspect else "0.5"
                                                              for c in classes])
    ax1.set_ylabel("reversed warp size (sum of |displacement|)" if family == "warp" else f"reversed {family} mask L1")
    norms = sorted(scan.norms.tolist())
    if len(norms) > 1:  # where the suspect's trigger would have to be to be flagged
        ax1.axhline(norms[1] / min_gap, color="black", linestyle="--", linewidth=0.8,
                    label=f"flagged below runner-up / {min_gap:g}")
        ax1.legend(fontsize=7)
    ax2.bar(range(len(classes)), scan.anomaly.tolist(), color="tab:red")
    ax2.axhline(2.0, color="black", linestyle="--", label="Neural Cleanse threshold 2")
    ax2.set_ylabel("anomaly index")
    ax2.legend(fontsize=7)
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(classes)), labels, rotation=60, fontsize=7, ha="right")
    fig.tight_layout()
    return fig


def _image(t: Tensor) -> Any:
    """(C, H, W) → a numpy (H, W) or (H, W, 3) array for imshow."""
    return (t[0] if t.shape[0] == 1 else t[:3].permute(1, 2, 0)).detach().cpu().numpy()


def _triggers_figure(triggers: Sequence[Trigger], names: Sequence[str], box: tuple[float, float]) -> Figure:
    n = len(triggers)
    fig = Figure(figsize=(1.3 * n, 3.0))
    axes = fig.subplots(2, n, squeeze=False)
    warp = bool(triggers) and triggers[0].family == "warp"
    longest = max((float(displacement(t).max()) for t in triggers), default=1.0) if warp else 1.0
    for i, t in enumerate(triggers):
        if warp:
            _draw_field(axes[0][i], axes[1][i], t, longest)
        else:
            axes[0][i].imshow(t.mask.detach().cpu().numpy(), cmap="magma", vmin=0, vmax=1, aspect="auto")
            axes[1][i].imshow(_image(box[0] + (t.pattern - box[0]) * t.mask), cmap="gray", vmin=box[0],
                              vmax=box[1], aspect="auto")
        axes[0][i].set_title(_plain(names[i])[:10], fontsize=7)
        for ax in (axes[0][i], axes[1][i]):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_ylabel("|displacement|" if warp else "mask", fontsize=7)
    axes[1][0].set_ylabel("field (arrows)" if warp else "mask × pattern", fontsize=7)
    return fig


def _draw_field(top: Any, bottom: Any, trigger: Trigger, longest: float) -> None:
    """A warp's displacement length per pixel (top, on a shared scale) and its (dy, dx) arrows (bottom)."""
    length = displacement(trigger).detach().cpu()
    top.imshow(length.numpy(), cmap="magma", vmin=0, vmax=max(longest, 1e-6), aspect="auto")
    assert trigger.field is not None
    moved = (trigger.mask.detach().cpu() * trigger.field.detach().cpu()).float()
    h, w = length.shape
    step = max(1, h // 8)
    ys, xs = (t[::step, ::step].numpy() for t in torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"))
    if bool(moved.abs().max() > 0):  # quiver autoscales by the longest arrow: a zero field would divide by zero
        bottom.quiver(xs, ys, moved[1, ::step, ::step].numpy(), -moved[0, ::step, ::step].numpy(), color="black")
    bottom.set_xlim(-0.5, w - 0.5)
    bottom.set_ylim(h - 0.5, -0.5)


def _stamp_figure(examples: Tensor, trigger: Trigger, title: str, box: tuple[float, float]) -> Figure:
    n = examples.shape[0]
    fig = Figure(figsize=(1.4 * n, 3.0))
    axes = fig.subplots(2, n, squeeze=False)
    stamped = stamp(examples, trigger)
    for i in range(n):
        axes[0][i].imshow(_image(examples[i]), cmap="gray", vmin=box[0], vmax=box[1], aspect="auto")
        axes[1][i].imshow(_image(stamped[i]), cmap="gray", vmin=box[0], vmax=box[1], aspect="auto")
        for ax in (axes[0][i], axes[1][i]):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_ylabel("clean", fontsize=7)
    axes[1][0].set_ylabel("stamped", fontsize=7)
    fig.suptitle(_plain(title), fontsize=8)
    return fig


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def write_audit_report(directory: str | os.PathLike[str], result: AuditResult, examples: Tensor, *,
                       meta: Mapping[str, str] | None = None, repair: RepairResult | None = None,
                       attack: DesignedAttack | None = None) -> Path:
    """Write ``directory/report.html`` for an `AuditResult` (and the repair and attack made from it, if any).

    ``examples`` are clean inputs shown before/after stamping.
    """
    names = [visible(n) for n in result.class_names]
    images = examples[:6] if examples.ndim == 4 else examples[:6, None, None, :]
    box = _box(result, images)
    finding_images = []
    rows = []
    internal = result.internal or (None,) * len(result.findings)
    identifiable = (result.identifiable if len(result.identifiable) == len(result.findings)
                    else (None,) * len(result.findings))  # findings replaced without their pixels: none shown
    for f, validation, units, pixels in zip(result.findings, result.validations, internal, identifiable, strict=True):
        t = f.trigger
        assert t is not None
        shown = dataclasses.replace(t, mask=t.mask.clamp(0, 1))  # as findings.json has it (a warp keeps its field)
        title = (f"{t.family} trigger for class {t.target} ({names[t.target]}): attack success "
                 f"{validation.effect:.2f}")
        finding_images.append({"src": figure_to_data_uri(_stamp_figure(images, shown, title, box)),
                               "alt": f"clean and stamped examples for class {t.target}"})
        if t.family == "warp":
            finding_images.append({"src": figure_to_data_uri(_triggers_figure([shown], [names[t.target]], box)),
                                   "alt": f"reversed warp field for class {t.target}"})
        finding_images.append({"src": figure_to_data_uri(validation.plot()),
                               "alt": f"validation against shuffled triggers for class {t.target}"})
        rows.append({"target_class": t.target, "class_name": names[t.target],
                     "family": t.family, "gap": _fmt(float(f.evidence["gap_to_runner_up"])),
                     "score": _fmt(float(f.score if f.score is not None else 0.0)),
                     "mask_l1": (f"{shown.mean_displacement:.3f} px (mean displacement)" if t.family == "warp"
                                 else _fmt(float(shown.mask.sum()))),
                     "identifiable": "—" if pixels is None else str(int(pixels.sum())),
                     "refined": "yes" if f.evidence.get("refined") else "no", "asr": _fmt(validation.effect),
                     "ci_low": _fmt(validation.ci_low), "ci_high": _fmt(validation.ci_high),
                     "control_mean": _fmt(validation.control_mean), "p_value": _fmt(validation.p_value),
                     "validated": "yes" if validation.validated else "no",
                     "units": "—" if units is None else _units_cell(units, bool(result.settings.get("vector_input")))})
    near = {(n["family"], n["class"]) for n in result.near_threshold}
    scans = []
    for family, scan in result.scans.items():
        scans.append({
            "family": family, "gap": _fmt(result.gaps[family]), "near": (family, scan.suspect) in near,
            "threshold": f"{result.threshold(family):g}", "passes": f"{float(getattr(scan, 'passes', 0.0)):,.0f}",
            "rows": [{"class": t.trigger.target, "class_name": names[t.trigger.target], "mask_l1": _fmt(t.mask_l1),
                      "anomaly_index": _fmt(float(a)), "scan_success": _fmt(t.attack_success),
                      "steps": str(t.steps_run),
                      "converged": ("stopped early (hopeless)" if getattr(t, "pruned", False)
                                    else "yes" if t.converged else "no"),
                      "suspect": t.trigger.target == scan.suspect,
                      "near": (family, t.trigger.target) in near}
                     for t, a in zip(scan.triggers, scan.anomaly.tolist(), strict=True)],
            "scan_image": figure_to_data_uri(_scan_figure(scan, family, names, result.threshold(family))),
            "triggers_image": figure_to_data_uri(_triggers_figure([t.trigger for t in scan.triggers], names, box)),
        })
    engineering = []
    for name, done in (("repair", repair), ("attack", attack)):
        if done is not None:
            engineering.append({"name": name, "rows": [(str(k), _cell(v)) for k, v in done.to_dict().items()
                                                        if k not in ("trigger_mask", "trigger_pattern")]})
    near_rows = [{"family": n["family"], "class": n["class"], "class_name": visible(n["class_name"]),
                  "gap": _fmt(n["gap"]), "min_gap": f"{n['min_gap']:g}"} for n in result.near_threshold]
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(resources.files("seethrough.report").joinpath("templates/audit.html.j2").read_text())
    page = template.render(
        verdict=result.verdict, anomaly_score=_fmt(result.anomaly_score), summary=visible(result.summary),
        reasons=[visible(r) for r in result.reasons], near=near_rows,
        meta=[(visible(k), visible(v)) for k, v in {**(meta or {}), **result.settings}.items()],
        findings=rows, finding_images=finding_images, scans=scans, engineering=engineering,
    )
    target = Path(directory) / "report.html"
    atomic_write(target, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return target


def _box(result: AuditResult, images: Tensor) -> tuple[float, float]:
    """The grey scale of the figures: the data's range the audit searched in (or the examples')."""
    if result.pattern_range is not None:
        low, high = float(result.pattern_range[0].min()), float(result.pattern_range[1].max())
    else:
        low, high = float(images.min()), float(images.max())
    return (low, high) if high > low else (low, low + 1.0)


def _units_cell(units: TriggerUnits, vector_input: bool) -> str:
    """Where the implicated units are and what ablating them did, naming the site as the user's model does."""
    path = units.site.path.removeprefix("inner.") if vector_input else units.site.path
    point = "input" if units.site.point == "input" else "output"
    shown = ", ".join(str(u) for u in units.units)
    return (f"site {path!r} ({point} of that module), units {shown}; mean-ablating them on stamped inputs: "
            f"effect {units.validation.effect:.3f} toward class {units.finding.target} vs random units "
            f"(p = {units.validation.p_value:.3f}, {'validated' if units.validation.validated else 'not validated'})")


def _cell(value: Any) -> str:
    return _fmt(value) if isinstance(value, float) else str(value)
