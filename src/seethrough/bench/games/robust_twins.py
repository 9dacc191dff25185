"""Game: adversarial training and interpretability on trojaned twins (Representations / adversarial training).

Each case is a pair of digits classifiers with the same planted patch trigger, data and
initialisation: the standard twin (`zoo.trojaned_classifier(arch, "patch", seed)`) and its PGD-trained
twin (`zoo.robust_trojaned_classifier`, ε 0.1 in the [0, 1] pixel range). The method under test,
``pgd-training``, must raise robust accuracy (PGD-10 at ε 0.1 on the test split) by a clear margin,
and the robust twin must still carry the trojan (attack success, so the comparison is of twins).
The interpretability comparison runs the same measurement on both twins (`compare_twins`' per-case
pairing) and reports robust − standard per case, shown, not barred (the survey's hypothesis is that
robust models are easier to read; the honest answer may be small, or the other way):

* ``saliency`` and ``integrated-gradients``: pixel AUROC of the |attribution| to the trojan's target on
  32 stamped test images against the trigger's mask (as in ``attribution-localisation``; IG from a
  mean-digit baseline, because from the zero baseline a black trigger pixel gets no attribution in
  either twin and the difference is exactly 0);
* ``synthesis``: one shared perturbation of 32 clean non-target test images raising log p(target)
  (feature synthesis, 128 steps), scored by the pixel AUROC of its mean |change| against the mask:
  does the synthesised change rediscover the trigger?

Recipes were chosen on seeds 100 and 101 (MLP: robust accuracy 0.18 and 0.09 → 0.69 and 0.70, clean
accuracy 0.962 → 0.947); the bench scores seeds 0, 1, ... (``--quick``: the MLP only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ...evidence import Trigger, attack_success, stamp
from ...neurons.attribution import integrated_gradients
from ...neurons.synthesis import logit_objective, synthesize
from ...representations.adversarial import robust_accuracy
from ..zoo.classifiers import robust_trojaned_classifier, trojaned_classifier
from ..zoo.data import digits16
from .attribution import attribution_map, auroc_rows
from .base import Game, Metric, register

__all__ = ["TwinsPlanted", "TwinsAnswer"]

EPSILON = 0.1
N_IMAGES = 32


@dataclass(frozen=True, eq=False)
class TwinsPlanted:
    """One case: the standard and robust twins, their trigger, stamped and clean test images."""

    standard: nn.Module
    robust: nn.Module
    trigger: Trigger
    stamped: Tensor
    clean: Tensor
    seed: int


@dataclass(frozen=True)
class TwinsAnswer:
    """Per measurement name, (standard, robust) values of one case."""

    values: Mapping[str, tuple[float, float]]


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"arch": arch, "seed": seed, "epsilon": EPSILON} for arch in (("mlp",) if quick else ("mlp", "cnn"))]


def _build(case: Mapping[str, Any]) -> TwinsPlanted:
    standard, meta = trojaned_classifier(case["arch"], "patch", case["seed"])
    robust, _ = robust_trojaned_classifier(case["arch"], case["seed"])
    trigger = Trigger.from_dict(meta["trigger"])
    x, y = digits16("test")
    clean = x[y != trigger.target][:N_IMAGES]
    return TwinsPlanted(standard, robust, trigger, stamp(clean, trigger), clean, case["seed"])


def _pgd_training(planted: TwinsPlanted, generator: torch.Generator) -> TwinsAnswer:
    x, y = digits16("test")
    return TwinsAnswer({
        "robust_accuracy": (robust_accuracy(planted.standard, x, y, epsilon=EPSILON, seed=planted.seed),
                            robust_accuracy(planted.robust, x, y, epsilon=EPSILON, seed=planted.seed)),
        "attack_success": (attack_success(planted.standard, x, y, planted.trigger),
                           attack_success(planted.robust, x, y, planted.trigger))})


def _maps(method: str, model: nn.Module, planted: TwinsPlanted) -> Tensor:
    target = torch.full((len(planted.stamped),), planted.trigger.target)
    if method == "integrated-gradients":
        # a mean-digit baseline: with the zero baseline a black trigger pixel gets no attribution in either twin
        baseline = digits16("train")[0].mean(0, keepdim=True).expand_as(planted.stamped)
        return integrated_gradients(model, planted.stamped, target, baseline=baseline, n_steps=32).values
    return attribution_map(method, model, planted.stamped, target)


def _localisation(method: str):
    def run(planted: TwinsPlanted, generator: torch.Generator) -> TwinsAnswer:
        values = [float(auroc_rows(_maps(method, m, planted).abs().sum(1, keepdim=True), planted.trigger.mask).mean())
                  for m in (planted.standard, planted.robust)]
        return TwinsAnswer({"localisation": (values[0], values[1])})
    return run


def _synthesis(planted: TwinsPlanted, generator: torch.Generator) -> TwinsAnswer:
    values = []
    for model in (planted.standard, planted.robust):
        result = synthesize(model, logit_objective(planted.trigger.target, log_prob=True),
                            shape=tuple(planted.clean.shape[1:]), init=planted.clean, shared=True, steps=128, lr=0.02,
                            l2=1.0, seed=planted.seed)
        change = (result.images - planted.clean).abs().mean(0, keepdim=True).sum(1, keepdim=True)
        values.append(float(auroc_rows(change, planted.trigger.mask).mean()))
    return TwinsAnswer({"localisation": (values[0], values[1])})


def _score(answer: TwinsAnswer, planted: TwinsPlanted) -> dict[str, float]:
    if "robust_accuracy" in answer.values:
        standard, robust = answer.values["robust_accuracy"]
        return {"robust_accuracy_gain": robust - standard, "robust_attack_success": answer.values["attack_success"][1]}
    standard, robust = answer.values["localisation"]
    return {"localisation_difference": robust - standard, "localisation_standard": standard,
            "localisation_robust": robust}


GAME = register(Game(
    name="robust-twins",
    item="Representations / adversarial training",
    description=("Patch-trojaned digits classifiers and their PGD-trained twins (same trigger, data and init; "
                 "ε 0.1). pgd-training must raise robust accuracy at ε 0.1 (PGD-10, test split). The same "
                 "interpretability measurement on both twins (saliency and integrated-gradients localisation of the "
                 "trigger, feature-synthesis rediscovery of it: pixel AUROC against the mask) gives robust − "
                 "standard per case, shown, not barred."),
    metrics=(
        Metric("robust_accuracy_gain", chance=0.0, bar=0.3,
               description="robust accuracy (PGD-10, ε 0.1) of the robust twin minus the standard twin's"),
        Metric("robust_attack_success", chance=0.1, bar=0.8,
               description="the robust twin still carries the trojan: attack success of its trigger (test split), "
                           "so the twins differ in training, not in what they learned to do"),
        Metric("localisation_difference", chance=0.0, bar=0.05,
               description="pixel AUROC of the trigger, robust twin minus standard twin (shown, not barred: only "
                           "the baseline-style comparison rows report it; 0.05 is a nominal bar)"),
        Metric("localisation_standard", chance=0.5, bar=0.9,
               description="pixel AUROC on the standard twin (shown; attribution-localisation's bar)"),
        Metric("localisation_robust", chance=0.5, bar=0.9,
               description="pixel AUROC on the robust twin (shown; attribution-localisation's bar)"),
    ),
    cases=_cases,
    build=_build,
    methods={"pgd-training": _pgd_training, "saliency": _localisation("saliency"),
             "integrated-gradients": _localisation("integrated-gradients"), "synthesis": _synthesis},
    score=_score,
    baselines=frozenset({"saliency", "integrated-gradients", "synthesis"}),
    order=170,
))
