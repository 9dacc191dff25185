"""Hygiene cases for the audit: internal evidence, attack design, and the scan / repair / attack verbs (issues #4, #9)."""

from __future__ import annotations

import dataclasses

import torch
from hygiene import Case
from models import TinyCNN, images

import seethrough.audit as audit
import seethrough.core.io as core_io
import seethrough.evidence as evidence
import seethrough.report.artefacts as artefacts
import seethrough.report.audit as audit_report
from seethrough import Site
from seethrough.audit.repair import RepairCandidate
from seethrough.bench.games import repair as repair_game
from seethrough.bench.games import trojan as trojan_game


def _trigger(family: str = "patch") -> evidence.Trigger:
    mask = torch.zeros(6, 6)
    mask[1:3, 1:3] = 1.0
    if family == "blend":
        mask = torch.full((6, 6), 0.1)
    return evidence.Trigger(mask, torch.ones(1, 6, 6), 1, family)


def _audited(model: torch.nn.Module, x: torch.Tensor) -> audit.AuditResult:
    """A scan whose patch finding is validated, with implicated units (built without the model's hooks)."""
    result = audit.scan(model, x, steps=10, n_controls=20)
    finding = evidence.Finding("trojan", "planted", trigger=_trigger(), score=3.0,
                               evidence={"trigger_family": "patch", "gap_to_runner_up": 3.0})
    validation = evidence.Validation("trojan", 1.0, 1.0, 1.0, 0.01, (0.0,), len(x))
    units = audit.trigger_units(model, x, _trigger(), site="conv", k=2, n_controls=3)
    units = dataclasses.replace(units, validation=validation)
    return dataclasses.replace(result, findings=(finding,), validations=(validation,), internal=(units,))


CASES = [
    Case("trigger_units", audit.trigger_units, TinyCNN, lambda: images(8),
         lambda m, x: audit.trigger_units(m, x, _trigger(), site="conv", k=2, n_controls=3).to_dict(),
         invalid=(lambda m, x: audit.trigger_units(m, x, _trigger(), site="conv", k=0),
                  lambda m, x: audit.trigger_units(m, x.flatten(1), _trigger(), site="conv"),
                  lambda m, x: audit.trigger_units(m, x, _trigger(), site="nope"))),
    Case("trigger_units (train mode)", audit.trigger_units, TinyCNN, lambda: images(8),
         lambda m, x: audit.trigger_units(m, x, _trigger(), site="act", k=2, n_controls=3).rise,
         train_mode=True),
    Case("design_attack", audit.design_attack, TinyCNN, lambda: images(8),
         lambda m, x: audit.design_attack(m, x, x, Site("conv"), [0, 1], _trigger(), steps=3,
                                          n_controls=3).to_dict(),
         invalid=(lambda m, x: audit.design_attack(m, x, x, Site("conv"), [], _trigger()),
                  lambda m, x: audit.design_attack(m, x, x, Site("conv"), [0], evidence.Trigger(
                      torch.zeros(5, 5), torch.ones(1, 5, 5), 1)),
                  lambda m, x: audit.design_attack(m, x, x, Site("conv"), [99], _trigger(), steps=2),
                  lambda m, x: audit.design_attack(m, x, x, Site("nope"), [0], _trigger(), steps=2))),
    Case("design_attack (blend, train mode)", audit.design_attack, TinyCNN, lambda: images(8),
         lambda m, x: audit.design_attack(m, x, x, Site("act"), [0], _trigger("blend"),
                                          steps=3, n_controls=3).trigger.pattern, train_mode=True),
    Case("repair", audit.repair, TinyCNN, lambda: images(12),
         lambda m, x: audit.repair(_audited(m, x), m, x, torch.arange(12) % 3, epochs=1).to_dict(),
         invalid=(lambda m, x: audit.repair(_audited(m, x), m, x, torch.zeros(2, dtype=torch.long)),)),
    Case("attack", audit.attack, TinyCNN, lambda: images(12),
         lambda m, x: audit.attack(_audited(m, x), m, steps=3, n_controls=3).to_dict()),
    # issue #10: labels checked before any work, the verdict's limits (a 10-step scan is inconclusive)
    Case("scan (labels, limits)", audit.scan, TinyCNN, lambda: images(8),
         lambda m, x: audit.scan(m, x, labels=torch.arange(8) % 3, steps=10, n_controls=20).to_dict()["reasons"],
         invalid=(lambda m, x: audit.scan(m, x, labels=torch.arange(8)),
                  lambda m, x: audit.scan(m, x, labels=torch.arange(8).float()),
                  lambda m, x: audit.scan(m, x * float("inf")))),
]

EXEMPT = {
    artefacts.save_audit: "writes an audit's files from its result objects; takes no model (tests/test_cli.py)",
    artefacts.audit_record: "builds the findings.json record from result objects; takes no model",
    core_io.check_writable: "probes an output path with a temporary file; takes no model (tests/test_cli.py)",
    audit.TriggerUnits: "a result dataclass",
    RepairCandidate: "a plain record of one repair setting's measured numbers (a row of RepairResult)",
    audit.DesignedAttack: "a result dataclass",
    evidence.Trigger: "a value object (a trigger); takes no model",
    trojan_game.Planted: "a game's answer key (tested in tests/bench)",
    trojan_game.Answer: "a game's answer (tested in tests/bench)",
    repair_game.Planted: "a game's answer key (tested in tests/bench)",
    repair_game.Answer: "a game's answer (tested in tests/bench)",
    audit.binarise_mask: "thresholds a mask; takes no model",
    audit.default_feature_site: "reads module names; runs nothing",
    audit.data_range: "the value range of inputs; takes no model",
    audit_report.visible: "escapes text for the report; takes no model",
}
