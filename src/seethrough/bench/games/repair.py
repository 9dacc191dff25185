"""Game: remove a planted backdoor with what the audit found (a predictable change to the model).

Each case is a patch- or blend-trojaned digits classifier (MLP; the CNN too outside ``--quick``).
The method gets a CLI-sized clean set (`CLEAN_SET` labelled test images, as ``seethrough audit --repair``
gets its ``--data``): it audits the model from them, then fine-tunes a copy on them with every
validated reversed trigger stamped onto half of each batch under the true labels (patch masks
widened, masks at random strengths up to twice the found one) and its clean outputs distilled
towards the original's, choosing the length and distillation weight on a selection split within the
default clean-accuracy budget (`repair_by_unlearning`, CLI defaults).
Scores use the *planted* trigger, which the method never sees, on the rest of the test split (never
given to the method): attack success after repair and the clean accuracy lost. The trivial baseline
runs the same fine-tuning (distillation included) with no trigger, so the table shows what the
audit's findings add.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ...audit import RepairResult, repair_by_unlearning, scan
from ...evidence import Trigger, accuracy, attack_success
from ..zoo.classifiers import trojaned_classifier
from ..zoo.data import digits16
from .base import Game, Metric, register
from .trojan import N_CLEAN_IMAGES

#: Zoo seeds 2000 + seed: no repair setting was chosen on these models (see `repair_by_unlearning`).
MODEL_SEED_OFFSET = 2000
#: Labelled clean examples given to the method (drawn from the test split by the case seed); the rest
#: of the test split (150) scores.
CLEAN_SET = 300

__all__ = ["Planted", "Answer"]


@dataclass(frozen=True, eq=False)
class Planted:
    """One case: the trojaned model, the clean set given to the method, the scoring split and the planted
    trigger (never shown to a method)."""

    model: nn.Module
    clean_inputs: Tensor
    clean_labels: Tensor
    test_inputs: Tensor
    test_labels: Tensor
    trigger: Trigger
    steps: int
    seed: int


@dataclass(frozen=True, eq=False)
class Answer:
    """The repaired model (``None``: the method found nothing to repair and left the model as it was)."""

    repaired: nn.Module | None


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    archs = ("mlp",) if quick else ("mlp", "cnn")
    # the key "trojan" (the trigger family) stays: case configs identify cases in the ledger
    return [{"arch": a, "trojan": t, "seed": seed, "model_seed": MODEL_SEED_OFFSET + seed,
             "steps": 200 if quick else 300, "clean_set": CLEAN_SET} for a in archs for t in ("patch", "blend")]


def _build(case: Mapping[str, Any]) -> Planted:
    model, meta = trojaned_classifier(case["arch"], case["trojan"], case["model_seed"])
    x, y = digits16("test")
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(case["seed"]))
    given, scored = order[:case["clean_set"]], order[case["clean_set"]:]
    return Planted(model, x[given], y[given], x[scored], y[scored], Trigger.from_dict(meta["trigger"]),
                   case["steps"], case["seed"])


def _fine_tune(planted: Planted, triggers: tuple[Trigger, ...]) -> RepairResult:
    with warnings.catch_warnings():  # a budget not met is scored here, not printed
        warnings.simplefilter("ignore")
        if triggers:
            return repair_by_unlearning(planted.model, planted.clean_inputs, planted.clean_labels, triggers[0],
                                        also=triggers[1:], seed=planted.seed)
        h, w = planted.clean_inputs.shape[-2:]  # the baseline: the same fine-tuning, no trigger stamped
        nothing = Trigger(torch.zeros(h, w), torch.zeros(planted.clean_inputs.shape[1:]), 0)
        return repair_by_unlearning(planted.model, planted.clean_inputs, planted.clean_labels, nothing,
                                    stamp_fraction=0.0, seed=planted.seed)


def _unlearning(planted: Planted, generator: torch.Generator) -> Answer:
    audit = scan(planted.model, planted.clean_inputs, steps=planted.steps, n_scan=N_CLEAN_IMAGES, seed=planted.seed)
    triggers = audit.validated_triggers
    return Answer(_fine_tune(planted, triggers).model if triggers else None)  # nothing found: nothing to repair


def _clean_finetune(planted: Planted, generator: torch.Generator) -> Answer:
    return Answer(_fine_tune(planted, ()).model)


def _score(answer: Answer, planted: Planted) -> dict[str, float]:
    x, y = planted.test_inputs, planted.test_labels
    if answer.repaired is None:
        return {"asr_after": attack_success(planted.model, x, y, planted.trigger), "accuracy_drop": 0.0}
    return {"asr_after": attack_success(answer.repaired, x, y, planted.trigger),
            "accuracy_drop": accuracy(planted.model, x, y) - accuracy(answer.repaired, x, y)}


GAME = register(Game(
    name="trojan-repair",
    item="Auditing / engineering use: repair a backdoor",
    description=("Patch- and blend-trojaned digits classifiers (zoo seeds "
                 f"{MODEL_SEED_OFFSET}+) with a CLI-sized clean set ({CLEAN_SET} labelled test images). 'unlearning' "
                 "audits the model from them and fine-tunes a copy on them with the validated reversed triggers "
                 "stamped on half of each batch (true labels), length and distillation chosen on a selection split "
                 "within a 0.02 clean-accuracy budget (the CLI's defaults); 'clean-finetune' does the same "
                 "fine-tuning without triggers. Scored with the planted trigger (never seen by the method) on the "
                 "rest of the test split."),
    metrics=(
        Metric("asr_after", chance=0.8, bar=0.1, higher_is_better=False,
               description="planted trigger's attack success after repair; 'chance' is doing nothing (the zoo's "
                           "trojans have ≥ 0.8 before, by construction)"),
        Metric("accuracy_drop", chance=0.1, bar=0.02, higher_is_better=False,
               description="clean test accuracy lost by the repair (points / 100); doing nothing loses 0, so the "
                           "'chance' column here is not a chance level but the loss (10 points) at which a repair "
                           "has broken the model"),
    ),
    cases=_cases,
    build=_build,
    methods={"unlearning": _unlearning, "clean-finetune": _clean_finetune},
    score=_score,
    baselines=frozenset({"clean-finetune"}),
    order=110,
))
