"""Hygiene cases for the audit's trigger search (issue #11): the K-Arm and full schedules, refinement,
the trigger families and identifiable pixels."""

from __future__ import annotations

from hygiene import Case
from models import TinyCNN, images
from torch import Tensor, nn

import seethrough.audit.families as families
import seethrough.audit.refine as refine
import seethrough.audit.reverse as reverse


def _refined(model: nn.Module, x: Tensor) -> Tensor:
    found = reverse.reverse_engineer_trigger(model, x, 1, steps=5)
    return refine.refine_trigger(model, x, found, steps=5).trigger.mask


CASES = [
    Case("neural_cleanse (full schedule)", reverse.neural_cleanse, TinyCNN, lambda: images(8),
         lambda m, x: reverse.neural_cleanse(m, x, n_classes=3, steps=4, schedule="full").anomaly,
         invalid=(lambda m, x: reverse.neural_cleanse(m, x, n_classes=3, schedule="fast"),
                  lambda m, x: reverse.neural_cleanse(m, x, n_classes=3, restart=2))),
    Case("neural_cleanse (k-arm, train mode)", reverse.neural_cleanse, TinyCNN, lambda: images(8),
         lambda m, x: reverse.neural_cleanse(m, x, n_classes=3, steps=4, schedule="k-arm").norms, train_mode=True),
    Case("refine_trigger", refine.refine_trigger, TinyCNN, lambda: images(8), _refined,
         invalid=(lambda m, x: refine.refine_trigger(m, x[:, :, :4], reverse.reverse_engineer_trigger(m, x, 1,
                                                                                                    steps=2)),
                  lambda m, x: refine.refine_trigger(m, x, reverse.reverse_engineer_trigger(m, x, 1, steps=2),
                                                     anneal=0.5))),
    Case("target_margin", refine.target_margin, TinyCNN, lambda: images(8),
         lambda m, x: refine.target_margin(m, x, reverse.reverse_engineer_trigger(m, x, 1, steps=3).trigger),
         invalid=(lambda m, x: refine.target_margin(m, x[:, :, :4], reverse.reverse_engineer_trigger(m, x, 1,
                                                                                                  steps=2).trigger),)),
]

EXEMPT = {
    refine.identifiable_pixels: "compares a trigger with inputs; takes no model",
    families.Parametrisation: "a protocol (what a trigger family's search optimises); takes no model",
    families.PatchParametrisation: "builds a patch trigger's tensors; takes no model",
    families.BlendParametrisation: "builds a blend trigger's tensors; takes no model",
    families.parametrisation: "looks up a trigger family; takes no model",
}
