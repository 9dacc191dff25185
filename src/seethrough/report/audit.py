"""The audit's HTML page: verdict, findings with their validation, and every class's scan.

Self-contained and offline like the bench report; class names come from untrusted data files, so
everything is autoescaped and drawn into figures as plain text.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..core.io import atomic_write
from ..evidence.trigger import stamp
from .figures import figure_to_data_uri

__all__ = ["write_audit_report"]


def _plain(text: str) -> str:
    """Text for matplotlib that is never parsed as mathtext."""
    return str(text).replace("$", r"\$")


def _scan_figure(scan: Sequence[Mapping[str, Any]], family: str) -> Figure:
    fig = Figure(figsize=(9, 2.8))
    ax1, ax2 = fig.subplots(1, 2)
    labels = [_plain(f"{r['class']}: {r['class_name']}")[:18] for r in scan]
    ax1.bar(range(len(scan)), [r["mask_l1"] for r in scan], color="0.5")
    ax1.set_ylabel(f"reversed {family} mask L1")
    ax2.bar(range(len(scan)), [r["anomaly_index"] for r in scan], color="tab:red")
    ax2.axhline(2.0, color="black", linestyle="--", label="Neural Cleanse threshold 2")
    ax2.set_ylabel("anomaly index")
    ax2.legend(fontsize=7)
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(scan)), labels, rotation=60, fontsize=7, ha="right")
    fig.tight_layout()
    return fig


def _image(t: Tensor) -> Any:
    """(C, H, W) → a numpy (H, W) or (H, W, 3) array for imshow."""
    return (t[0] if t.shape[0] == 1 else t[:3].permute(1, 2, 0)).detach().cpu().numpy()


def _triggers_figure(masks: Sequence[Tensor], patterns: Sequence[Tensor], names: Sequence[str]) -> Figure:
    n = len(masks)
    fig = Figure(figsize=(1.3 * n, 3.0))
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        axes[0][i].imshow(masks[i].detach().cpu().numpy(), cmap="magma", vmin=0, vmax=1, aspect="auto")
        axes[1][i].imshow(_image(patterns[i] * masks[i]), cmap="gray", vmin=0, vmax=1, aspect="auto")
        axes[0][i].set_title(_plain(names[i])[:10], fontsize=7)
        for ax in (axes[0][i], axes[1][i]):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_ylabel("mask", fontsize=7)
    axes[1][0].set_ylabel("mask × pattern", fontsize=7)
    return fig


def _stamp_figure(examples: Tensor, mask: Tensor, pattern: Tensor, title: str) -> Figure:
    n = examples.shape[0]
    fig = Figure(figsize=(1.4 * n, 3.0))
    axes = fig.subplots(2, n, squeeze=False)
    stamped = stamp(examples, mask, pattern)
    for i in range(n):
        axes[0][i].imshow(_image(examples[i]), cmap="gray", vmin=0, vmax=1, aspect="auto")
        axes[1][i].imshow(_image(stamped[i]), cmap="gray", vmin=0, vmax=1, aspect="auto")
        for ax in (axes[0][i], axes[1][i]):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_ylabel("clean", fontsize=7)
    axes[1][0].set_ylabel("stamped", fontsize=7)
    fig.suptitle(_plain(title), fontsize=8)
    return fig


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def write_audit_report(directory: str | os.PathLike[str], result: Any, examples: Tensor, *,
                       meta: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``directory/report.html`` for an `AuditResult`.

    ``examples`` are clean inputs shown before/after stamping; ``extra`` may hold the ``repair``
    and ``attack`` dicts the CLI adds to findings.json.
    """
    data = result.to_json()
    names = list(result.class_names)
    images = examples[:6] if examples.ndim == 4 else examples[:6, None, None, :]
    finding_images = []
    rows = []
    for f, validation in zip(data["findings"], result.validations, strict=True):
        mask, pattern = torch.tensor(f["trigger_mask"]), torch.tensor(f["trigger_pattern"])
        title = (f"{f['trigger_family']} trigger for class {f['target_class']} ({f['class_name']}): attack success "
                 f"{f['attack_success_rate']:.2f}")
        finding_images.append({"src": figure_to_data_uri(_stamp_figure(images, mask, pattern, title)),
                               "alt": f"clean and stamped examples for class {f['target_class']}"})
        finding_images.append({"src": figure_to_data_uri(validation.plot()),
                               "alt": f"validation against shuffled triggers for class {f['target_class']}"})
        v = f["validation"]
        units = f.get("internal_evidence")
        rows.append({"target_class": f["target_class"], "class_name": f["class_name"],
                     "family": f["trigger_family"], "gap": _fmt(f["gap_to_runner_up"]), "score": _fmt(f["score"]),
                     "mask_l1": _fmt(f["mask_l1"]), "asr": _fmt(f["attack_success_rate"]),
                     "ci_low": _fmt(v["ci_low"]), "ci_high": _fmt(v["ci_high"]),
                     "control_mean": _fmt(v["control_mean"]), "p_value": _fmt(v["p_value"]),
                     "validated": "yes" if f["validated"] else "no",
                     "units": "—" if units is None else (
                         f"{units['site']} units {units['units']}: ablation effect "
                         f"{units['validation']['effect']:.3f} (p = {units['validation']['p_value']:.3f}, "
                         f"{'validated' if units['validated'] else 'not validated'})")})
    scans = []
    for family, scan in data["scans"].items():
        triggers = result.scans[family].triggers
        scans.append({
            "family": family, "gap": _fmt(data["gaps"][family]),
            "rows": [{**r, "mask_l1": _fmt(r["mask_l1"]), "anomaly_index": _fmt(r["anomaly_index"]),
                      "scan_success": _fmt(r["scan_success"])} for r in scan],
            "scan_image": figure_to_data_uri(_scan_figure(scan, family)),
            "triggers_image": figure_to_data_uri(_triggers_figure([t.mask for t in triggers],
                                                                  [t.pattern for t in triggers], names)),
        })
    engineering = []
    for name, record in (extra or {}).items():
        engineering.append({"name": str(name), "rows": [(str(k), _cell(v)) for k, v in record.items()
                                                         if k not in ("trigger_mask", "trigger_pattern")]})
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(resources.files("seethrough.report").joinpath("templates/audit.html.j2").read_text())
    page = template.render(
        verdict=data["verdict"], anomaly_score=_fmt(data["anomaly_score"]),
        meta=[(str(k), str(v)) for k, v in {**(meta or {}), **data["settings"]}.items()],
        findings=rows, finding_images=finding_images, scans=scans, engineering=engineering,
    )
    target = Path(directory) / "report.html"
    atomic_write(target, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return target


def _cell(value: Any) -> str:
    return _fmt(value) if isinstance(value, float) else str(value)
