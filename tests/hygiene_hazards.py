"""Hygiene cases for issue #5 parts 3 and 5: ablation, steering, neuron hazards (joined by hygiene.py)."""

from __future__ import annotations

from typing import Any

import torch
from hygiene import Case
from models import TinyCNN, TinyMLP, TinyTransformer, images, tokens, vectors
from torch import Tensor

from seethrough import Site
from seethrough.bench.games import hazards as hazards_game
from seethrough.bench.zoo import hazards as hazards_zoo
from seethrough.neurons import ablation, frivolous, polysemantic, steering


def _raise_metric(output: Tensor) -> Tensor:
    raise RuntimeError("injected failure in a user metric")


CASES: list[Case] = [
    Case("unit_importance (resample)", ablation.unit_importance, TinyMLP, vectors,
         lambda m, x: ablation.unit_importance(m, x, "act", lambda out: out[:, 0], ablation="resample",
                                               reference=vectors(7, seed=3), n_samples=2).values,
         invalid=(lambda m, x: ablation.unit_importance(m, x, "act", lambda out: out[:, 0], ablation="resample",
                                                        n_samples=0),
                  lambda m, x: ablation.unit_importance(m, x, "act", _raise_metric, ablation="resample"))),
    Case("ablate", ablation.ablate, TinyMLP, vectors, lambda m, x: ablation.ablate(m, x, "act", [1, 4]),
         per_example=lambda out: out,
         invalid=(lambda m, x: ablation.ablate(m, x, "act", [9]),
                  lambda m, x: ablation.ablate(m, x, "act", [1], ablation="shuffle"),
                  lambda m, x: ablation.ablate(m, x, "nope", [1]))),
    Case("ablate (cnn, resample, train mode)", ablation.ablate, TinyCNN, images,
         lambda m, x: ablation.ablate(m, x, "conv", [0, 2], ablation="resample", reference=images(4, seed=1), seed=3),
         train_mode=True),
    Case("ablate (transformer, mean over positions)", ablation.ablate, TinyTransformer, tokens,
         lambda m, x: ablation.ablate(m, x, Site("blocks.0", positions=[1]), None, ablation="mean")),
    Case("steer", steering.steer, TinyMLP, vectors,
         lambda m, x: steering.steer(m, x, "act", torch.linspace(-1, 1, 8), alpha=0.5), per_example=lambda out: out,
         invalid=(lambda m, x: steering.steer(m, x, "act", torch.ones(3), alpha=1.0),
                  lambda m, x: steering.steer(m, x, "act", torch.ones(8), alpha=float("nan")))),
    Case("steer (transformer, train mode)", steering.steer, TinyTransformer, tokens,
         lambda m, x: steering.steer(m, x, "blocks.1", torch.ones(8), alpha=2.0), per_example=lambda out: out,
         train_mode=True),
    Case("frivolous_units", frivolous.frivolous_units, TinyMLP, vectors,
         lambda m, x: frivolous.frivolous_units(m, x, "act").damage,
         invalid=(lambda m, x: frivolous.frivolous_units(m, x, "act", metric=_raise_metric),
                  lambda m, x: frivolous.frivolous_units(m, x, "act", corr=2.0),
                  lambda m, x: frivolous.frivolous_units(m, x, "fc9"))),
    Case("frivolous_units (cnn, metric, train mode)", frivolous.frivolous_units, TinyCNN, images,
         lambda m, x: frivolous.frivolous_units(m, x, "act", metric=lambda out: out[:, 1], corr=0.5).damage,
         train_mode=True),
    Case("frivolous_units (transformer)", frivolous.frivolous_units, TinyTransformer, tokens,
         lambda m, x: frivolous.frivolous_units(m, x, "blocks.0", corr=0.5).damage),
    Case("polysemanticity", polysemantic.polysemanticity, TinyMLP, vectors,
         lambda m, x: polysemantic.polysemanticity(m, x, "act", x.abs()).responses,
         invalid=(lambda m, x: polysemantic.polysemanticity(m, x, "act", x[:2]),
                  lambda m, x: polysemantic.polysemanticity(m, x, "act", n_clusters=1))),
    Case("polysemanticity (cnn, discovered, train mode)", polysemantic.polysemanticity, TinyCNN, images,
         lambda m, x: polysemantic.polysemanticity(m, x, "conv", n_clusters=2, seed=1).effective, train_mode=True),
]

EXEMPT: dict[Any, str] = {
    frivolous.FrivolousUnits: "a result dataclass",
    polysemantic.Polysemanticity: "a result dataclass",
    hazards_zoo.planted_hazards: "builds a new model",
    hazards_zoo.superposed_units: "builds a new model",
    hazards_game.precision_recall: "compares sets; takes no model",
}
