"""An audit's artefacts on disk: findings.json (DESIGN §6), report.html and the repaired weights.

`save_audit` writes them in an order that makes an interrupted run recognisable: every file
atomically, findings.json last, the artefacts of an earlier run in the folder removed first, and
on any failure (Ctrl-C included) whatever this run wrote removed again. The CLI's `audit` command
calls it; so can a script.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from ..audit import AuditResult, DesignedAttack, RepairResult
from ..core.errors import SeethroughError
from ..core.io import atomic_write
from .audit import write_audit_report

__all__ = ["save_audit", "audit_record", "FINDINGS", "REPORT", "REPAIRED"]

FINDINGS, REPORT, REPAIRED = "findings.json", "report.html", "repaired.safetensors"
NOTHING_TO_REPAIR = {"status": "nothing to repair: no validated trigger"}
NOTHING_TO_ATTACK = {"status": "nothing to attack with: no validated trigger with implicated units"}


def audit_record(result: AuditResult, *, repair: RepairResult | None = None, attack: DesignedAttack | None = None,
                 repaired: bool = False, attacked: bool = False) -> dict[str, Any]:
    """The findings.json record: the result's dict, plus the repair's and the attack's when they were asked for.

    ``repaired``/``attacked`` say whether they were asked for (a ``None`` result then means there
    was nothing to repair or attack with, which the record says).
    """
    record = result.to_dict()
    if repaired:
        record["repair"] = NOTHING_TO_REPAIR if repair is None else {**repair.to_dict(), "weights": REPAIRED}
    if attacked:
        record["attack"] = NOTHING_TO_ATTACK if attack is None else attack.to_dict()
    return record


def _strict_json(record: Mapping[str, Any]) -> str:
    """``record`` as strict JSON (no NaN or Infinity literals, which JSON readers refuse)."""
    try:
        return json.dumps(record, indent=1, allow_nan=False)
    except ValueError as err:
        raise SeethroughError(f"the audit produced non-finite numbers ({err}); the model's outputs are NaN or "
                              "infinite on this data: check its weights and the scale of the inputs.") from None


def save_audit(directory: str | os.PathLike[str], result: AuditResult, examples: Tensor, *,
               meta: Mapping[str, str] | None = None, repair: RepairResult | None = None,
               attack: DesignedAttack | None = None, repaired: bool = False, attacked: bool = False) -> Path:
    """Write findings.json, report.html and (after a repair) repaired.safetensors into ``directory``.

    Artefacts of an earlier run are removed first, so the folder never mixes two runs (an old
    repaired model beside a report that repaired nothing); each file is written atomically and
    findings.json last, so a folder without it holds no complete audit; on any failure what this
    run wrote is removed again, with the folders it created. The JSON is checked (strict, no NaN)
    before anything is written.

    Returns:
        The path of findings.json.
    """
    out = Path(directory)
    findings = _strict_json(audit_record(result, repair=repair, attack=attack, repaired=repaired,
                                         attacked=attacked))
    state = None if repair is None else {k: v.detach().contiguous() for k, v in repair.model.state_dict().items()}
    created = [folder for folder in (out, *out.parents) if not folder.exists()]  # deepest first
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in (FINDINGS, REPORT, REPAIRED):
            (out / name).unlink(missing_ok=True)
        if state is not None:
            from safetensors.torch import save_file

            written.append(out / REPAIRED)
            atomic_write(out / REPAIRED, lambda tmp: save_file(state, tmp))
        written.append(out / REPORT)
        write_audit_report(out, result, examples, meta=meta, repair=repair, attack=attack)
        written.append(out / FINDINGS)
        atomic_write(out / FINDINGS, lambda tmp: Path(tmp).write_text(findings))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        for folder in created:
            try:
                folder.rmdir()
            except OSError:  # not ours alone any more: leave it
                break
        raise
    return out / FINDINGS
