"""Hygiene cases for the audit's internal evidence and attack design (issue #4)."""

from __future__ import annotations

import torch
from hygiene import Case
from models import TinyCNN, images

import seethrough.audit as audit
from seethrough import Site


def _trigger() -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.zeros(6, 6)
    mask[1:3, 1:3] = 1.0
    return mask, torch.ones(1, 6, 6)


CASES = [
    Case("trigger_units", audit.trigger_units, TinyCNN, lambda: images(8),
         lambda m, x: audit.trigger_units(m, x, *_trigger(), 1, site="conv", k=2, n_controls=3).to_dict(),
         invalid=(lambda m, x: audit.trigger_units(m, x, *_trigger(), 1, site="conv", k=0),
                  lambda m, x: audit.trigger_units(m, x.flatten(1), *_trigger(), 1, site="conv"),
                  lambda m, x: audit.trigger_units(m, x, *_trigger(), 1, site="nope"))),
    Case("trigger_units (train mode)", audit.trigger_units, TinyCNN, lambda: images(8),
         lambda m, x: audit.trigger_units(m, x, *_trigger(), 1, site="act", k=2, n_controls=3).rise,
         train_mode=True),
    Case("design_attack", audit.design_attack, TinyCNN, lambda: images(8),
         lambda m, x: audit.design_attack(m, x, x, Site("conv"), [0, 1], 1, _trigger()[0], steps=3,
                                          n_controls=3).to_dict(),
         invalid=(lambda m, x: audit.design_attack(m, x, x, Site("conv"), [], 1, _trigger()[0]),
                  lambda m, x: audit.design_attack(m, x, x, Site("conv"), [0], 1, _trigger()[0], family="x"),
                  lambda m, x: audit.design_attack(m, x, x, Site("nope"), [0], 1, _trigger()[0], steps=2))),
    Case("design_attack (blend, train mode)", audit.design_attack, TinyCNN, lambda: images(8),
         lambda m, x: audit.design_attack(m, x, x, Site("act"), [0], 1, torch.full((6, 6), 0.1), family="blend",
                                          steps=3, n_controls=3).pattern, train_mode=True),
]

EXEMPT = {
    audit.TriggerUnits: "a result dataclass",
    audit.DesignedAttack: "a result dataclass",
    audit.binarise_mask: "thresholds a mask; takes no model",
    audit.default_feature_site: "reads module names; runs nothing",
}
