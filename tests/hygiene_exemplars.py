"""Hygiene cases for dataset-based neuron methods (issue #5): exemplars, statistics, dissection; sharded passes (#9)."""

from __future__ import annotations

from typing import Any

import torch
from hygiene import Case
from models import TinyCNN, TinyMLP, images, vectors

from seethrough.bench.zoo import scenes
from seethrough.neurons import activation_statistics, dissection, exemplars


def _masks(x: torch.Tensor) -> torch.Tensor:
    return x[:, 0:1].repeat(1, 2, 1, 1) > 0.3


CASES: list[Case] = [
    Case("top_exemplars", exemplars.top_exemplars, TinyMLP, vectors,
         lambda m, x: exemplars.top_exemplars(m, x, "act", k=2, batch_size=2).indices,
         invalid=(lambda m, x: exemplars.top_exemplars(m, x, "act", k=0),
                  lambda m, x: exemplars.top_exemplars(m, x, "nope"))),
    Case("top_exemplars (cnn, crop, train mode)", exemplars.top_exemplars, TinyCNN, images,
         lambda m, x: exemplars.top_exemplars(m, x, "conv", k=2, crop=True).boxes, train_mode=True),
    Case("top_exemplars (3 shards)", exemplars.top_exemplars, TinyMLP, vectors,
         lambda m, x: exemplars.top_exemplars(m, x, "act", k=2, batch_size=2, n_shards=3).indices,
         invalid=(lambda m, x: exemplars.top_exemplars(m, x, "act", n_shards=0),
                  lambda m, x: exemplars.top_exemplars(m, [x], "act", n_shards=2))),
    Case("receptive_fields", exemplars.receptive_fields, TinyCNN, images,
         lambda m, x: exemplars.receptive_fields(m, x[:1], "conv", torch.tensor([0, 3]), torch.tensor([[0, 0], [2, 5]])),
         invalid=(lambda m, x: exemplars.receptive_fields(m, x[:1].flatten(1), "conv", torch.tensor([0]),
                                                          torch.tensor([[0, 0]])),)),
    Case("activation_stats", activation_statistics.activation_stats, TinyMLP, vectors,
         lambda m, x: activation_statistics.activation_stats(m, x, "act", labels=torch.arange(len(x)) % 2, batch_size=2
                                                 ).quantile_values,
         invalid=(lambda m, x: activation_statistics.activation_stats(m, x, "act", quantiles=(2.0,)),
                  lambda m, x: activation_statistics.activation_stats(m, iter([x]), "act"))),
    Case("activation_stats (cnn, train mode)", activation_statistics.activation_stats, TinyCNN, images,
         lambda m, x: activation_statistics.activation_stats(m, x, "conv", reduce="max").mean, train_mode=True),
    Case("activation_stats (2 shards, train mode)", activation_statistics.activation_stats, TinyCNN, images,
         lambda m, x: activation_statistics.activation_stats(m, x, "conv", n_shards=2, batch_size=1).quantile_values,
         train_mode=True),
    Case("dissect", dissection.dissect, TinyCNN, images,
         lambda m, x: dissection.dissect(m, x, _masks(x), "conv", quantile=0.9, batch_size=2).iou,
         invalid=(lambda m, x: dissection.dissect(m, x, _masks(x).float(), "conv"),
                  lambda m, x: dissection.dissect(m, x, _masks(x), "conv", quantile=0.0))),
    Case("dissect (train mode)", dissection.dissect, TinyCNN, images,
         lambda m, x: dissection.dissect(m, x, _masks(x), "act", quantile=0.5).labels, train_mode=True),
]

EXEMPT: dict[Any, str] = {
    exemplars.Exemplars: "a result dataclass",
    activation_statistics.ActivationStats: "a result dataclass",
    dissection.Dissection: "a result dataclass",
    scenes.scenes: "builds data",
    scenes.SceneCNN: "a model class",
    scenes.planted_detectors: "builds a new model",
}
