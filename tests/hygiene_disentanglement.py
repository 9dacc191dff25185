"""Hygiene entries for SAP, the beta-VAE and the image factor set (issue #14 item 2): none takes a model to inspect."""

from __future__ import annotations

from typing import Any

from hygiene import Case

from seethrough.bench.zoo import factors
from seethrough.representations import disentanglement, vae

CASES: list[Case] = []

EXEMPT: dict[Any, str] = {
    disentanglement.sap: "a metric over arrays; takes no model",
    disentanglement.sap_matrix: "a metric over arrays; takes no model",
    vae.BetaVAE: "a model class",
    vae.train_beta_vae: "trains a new model, or the one given as vae= (its name says it trains)",
    factors.factor_images: "builds data",
    factors.factor_vae: "builds a new model",
}


# -- concept bottlenecks and prototypes (issue #14 item 3) ---------------------------------------------------

import torch  # noqa: E402 - the second part of this area's table
from models import vectors  # noqa: E402

from seethrough.bench.zoo import bottleneck as bottleneck_zoo  # noqa: E402
from seethrough.representations import bottleneck, prototypes  # noqa: E402


def _cbm() -> bottleneck.ConceptBottleneck:
    torch.manual_seed(0)
    return bottleneck.ConceptBottleneck(4, 2, 2, hidden=8)


def _protonet() -> prototypes.PrototypeNetwork:
    torch.manual_seed(0)
    return prototypes.PrototypeNetwork(1, 2, per_class=1, width=4)


def _concepts(x: torch.Tensor) -> torch.Tensor:
    return (x[:, :2] > 0).float()


def _images(batch: int = 5) -> torch.Tensor:
    return torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(0))


CASES += [
    # these run the model's parts (concept predictor, head, trunk), never its forward: runs_forward=False
    Case("intervene", bottleneck.intervene, _cbm, vectors, lambda m, x: bottleneck.intervene(m, x, _concepts(x), [0]),
         per_example=lambda r: r, runs_forward=False,
         invalid=(lambda m, x: bottleneck.intervene(m, x, _concepts(x), [5]),
                  lambda m, x: bottleneck.intervene(m, x, _concepts(x)[:, :1], [0]))),
    Case("leakage_test (train mode)", bottleneck.leakage_test, _cbm, lambda: vectors(batch=40),
         lambda m, x: bottleneck.leakage_test(m, x, _concepts(x), (x[:, 0] > 0).long()).leakage, train_mode=True,
         runs_forward=False,
         invalid=(lambda m, x: bottleneck.leakage_test(m, x, _concepts(x), (x[:, 0] > 0).long(), representation="x"),)),
    Case("similarity_maps (train mode)", prototypes.similarity_maps, _protonet, _images,
         lambda m, x: prototypes.similarity_maps(m, x), per_example=lambda r: r, train_mode=True, runs_forward=False,
         invalid=(lambda m, x: prototypes.similarity_maps(m, x[0]),)),
]

EXEMPT.update({
    bottleneck.ConceptBottleneck: "a model class",
    bottleneck.train_concept_bottleneck: "trains a new model; takes data, not a model",
    bottleneck.Leakage: "a result dataclass",
    prototypes.PrototypeNetwork: "a model class",
    prototypes.train_prototype_network: "trains a new model; takes data, not a model",
    prototypes.PrototypeSource: "a record of where a prototype came from",
    prototypes.receptive_box: "arithmetic on feature-map coordinates",
    bottleneck_zoo.concept_task: "builds data",
    bottleneck_zoo.ConceptTask: "a data container",
    bottleneck_zoo.marked_images: "builds data",
    bottleneck_zoo.MarkedImages: "a data container",
    bottleneck_zoo.prototype_network: "builds a new model",
    bottleneck_zoo.concept_bottleneck: "builds a new model",
})
