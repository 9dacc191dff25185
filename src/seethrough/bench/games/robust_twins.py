"""Game: adversarial training and interpretability on trojaned twins (Representations / adversarial training).

Each case is a pair of digits classifiers with the same planted patch trigger, data and
initialisation: the standard twin (`zoo.trojaned_classifier(arch, "patch", seed)`) and its PGD-trained
twin (`zoo.robust_trojaned_classifier`, ε 0.1 in the [0, 1] pixel range). The method under test,
``pgd-training``, must raise robust accuracy (PGD-10 at ε 0.1 on the test split) by a clear margin.
The interpretability comparison runs the same measurement on both twins (`compare_twins`' per-case
pairing) and reports robust − standard per case, shown, not barred (the survey's hypothesis is that
robust models are easier to read; the honest answer may be small, or the other way):

* ``saliency`` and ``integrated-gradients``: pixel AUROC of the |attribution| to the trojan's target on
  32 stamped test images against the trigger's mask (as in ``attribution-localisation``);
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

from ...evidence import Trigger, stamp
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
    return TwinsAnswer({"robust_accuracy": (robust_accuracy(planted.standard, x, y, epsilon=EPSILON, seed=planted.seed),
                                            robust_accuracy(planted.robust, x, y, epsilon=EPSILON, seed=planted.seed))})


def _localisation(method: str):
    def run(planted: TwinsPlanted, generator: torch.Generator) -> TwinsAnswer:
        target = torch.full((len(planted.stamped),), planted.trigger.target)
        values = [float(auroc_rows(attribution_map(method, m, planted.stamped, target).abs().sum(1, keepdim=True),
                                   planted.trigger.mask).mean()) for m in (planted.standard, planted.robust)]
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
        return {"robust_accuracy_gain": robust - standard}
    standard, robust = answer.values["localisation"]
    return {"localisation_difference": robust - standard}


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
        Metric("localisation_difference", chance=0.0, bar=0.0,
               description="pixel AUROC of the trigger, robust twin minus standard twin (shown, not barred)"),
    ),
    cases=_cases,
    build=_build,
    methods={"pgd-training": _pgd_training, "saliency": _localisation("saliency"),
             "integrated-gradients": _localisation("integrated-gradients"), "synthesis": _synthesis},
    score=_score,
    baselines=frozenset({"saliency", "integrated-gradients", "synthesis"}),
    order=170,
))
