"""Hygiene cases for the warp trigger family (issue #11 item 3): the search and validation of warps on a tiny
CNN; the helpers that take no model are exempt. Joined by tests/hygiene.py."""

from __future__ import annotations

from typing import Any

from hygiene import Case
from models import TinyCNN, images

import seethrough.audit as audit
import seethrough.bench.zoo as zoo
import seethrough.evidence as evidence
from seethrough.audit import warp


def _warp_finding() -> evidence.Finding:
    trigger = zoo.random_warp_trigger(0, strength=1.0, image_size=6, n_classes=3)
    return evidence.Finding("trojan", "a warp", trigger=trigger, target=trigger.target)


CASES = [
    Case("validate (warp trigger)", evidence.validate, TinyCNN, lambda: images(8),
         lambda m, x: evidence.validate(_warp_finding(), m, x, n_controls=3).to_dict(),
         invalid=(lambda m, x: evidence.validate(_warp_finding(), m, x[:, :, :5]),)),
    Case("reverse_engineer_trigger (warp)", audit.reverse_engineer_trigger, TinyCNN, lambda: images(8),
         lambda m, x: audit.reverse_engineer_trigger(m, x, 1, family="warp", steps=3).trigger.field,
         invalid=(lambda m, x: audit.reverse_engineer_trigger(m, x * float("nan"), 1, family="warp", steps=3),),
         train_mode=True),
]

EXEMPT: dict[Any, str] = {
    evidence.displacement: "a trigger's displacement lengths; takes no model (closed forms in test_trigger.py)",
    zoo.random_warp_trigger: "builds a trigger",
    warp.WarpParametrisation: "a search family's parametrisation (tensors in, a Trigger out); takes no model",
    warp.field_correlation: "compares two triggers; takes no model (closed forms in tests/audit/test_warp.py)",
    warp.upsample_field: "resamples a tensor; takes no model",
}
