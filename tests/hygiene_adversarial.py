"""Hygiene cases for the adversarial-training tools (issue #14 item 4): attacks and training leave the model as found."""

from __future__ import annotations

from typing import Any

import torch
from hygiene import Case
from models import TinyMLP, vectors

from seethrough.bench.zoo import classifiers
from seethrough.representations import adversarial as adv

WIDE = (-10.0, 10.0)  # the test vectors are standard normal, not pixels in [0, 1]


def _labels(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # per example, so a batch of one gets the same label


CASES: list[Case] = [
    Case("fgsm", adv.fgsm, TinyMLP, vectors, lambda m, x: adv.fgsm(m, x, _labels(x), epsilon=0.1, bounds=WIDE),
         per_example=lambda r: r,
         invalid=(lambda m, x: adv.fgsm(m, x, _labels(x), epsilon=-1.0, bounds=WIDE),
                  lambda m, x: adv.fgsm(m, x, _labels(x)[:2], epsilon=0.1, bounds=WIDE),
                  lambda m, x: adv.fgsm(m, x, _labels(x), epsilon=0.1))),
    Case("pgd (train mode)", adv.pgd, TinyMLP, vectors,
         lambda m, x: adv.pgd(m, x, _labels(x), epsilon=0.1, n_steps=3, random_start=False, bounds=WIDE),
         per_example=lambda r: r, train_mode=True,
         invalid=(lambda m, x: adv.pgd(m, x, _labels(x), epsilon=0.1, n_steps=0, bounds=WIDE),)),
    Case("robust_accuracy", adv.robust_accuracy, TinyMLP, vectors,
         lambda m, x: adv.robust_accuracy(m, x, _labels(x), epsilon=0.1, n_steps=2, bounds=WIDE),
         invalid=(lambda m, x: adv.robust_accuracy(m, x, _labels(x), epsilon=0.1, bounds=WIDE, batch_size=0),
                  lambda m, x: adv.robust_accuracy(m, x, _labels(x), epsilon=0.1, bounds=WIDE, n_steps=0))),
    Case("adversarial_training", adv.adversarial_training, TinyMLP, vectors,
         lambda m, x: adv.adversarial_training(m, x, _labels(x), epsilon=0.1, epochs=1, n_steps=2,
                                               bounds=WIDE).state_dict(),
         invalid=(lambda m, x: adv.adversarial_training(m, x, _labels(x), epsilon=0.1, epochs=-1, bounds=WIDE),)),
    Case("compare_twins", adv.compare_twins, TinyMLP, vectors,
         lambda m, x: adv.compare_twins([(m, m)], lambda model, i: {"logit": float(model(x).sum())}, n_boot=10),
         invalid=(lambda m, x: adv.compare_twins([], lambda model, i: {}),)),
]

EXEMPT: dict[Any, str] = {
    adv.TwinComparison: "a result dataclass",
    classifiers.robust_trojaned_classifier: "builds a new model",
}
