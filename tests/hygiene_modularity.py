"""Hygiene cases for issue #12 items 2-3: lesion tests, functional graphs, enforced modularity (joined by hygiene.py).

``train_modular`` trains a deep copy: the model it is given must come back exactly as found.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from hygiene import Case
from models import TinyMLP, TinyTransformer, tokens, vectors
from torch import Tensor

from seethrough import subnetworks as sub
from seethrough.bench import zoo
from seethrough.bench.zoo import modules as zoo_modules

METRICS = {"a": lambda out: out[:, 0], "b": lambda out: out[:, 1]}
LAST = {"a": lambda out: out[:, -1, 0], "b": lambda out: out[:, -1, 1]}


def _raising(out: Any) -> Tensor:
    raise RuntimeError("injected failure in a user metric")


def _heads_model() -> torch.nn.Module:
    return zoo.TinyTransformer(6, 4, d_model=8, n_layers=1, n_heads=2, seed=1)


CASES: list[Case] = [
    Case("lesion_test", sub.lesion_test, TinyMLP, vectors,
         lambda m, x: sub.lesion_test(m, {"fc1": np.arange(8) % 2}, x, METRICS, n_controls=4).to_dict(),
         invalid=(lambda m, x: sub.lesion_test(m, {"fc1": np.arange(5) % 2}, x, METRICS),
                  lambda m, x: sub.lesion_test(m, {"fc1": np.arange(8) % 2}, x, {"a": _raising}))),
    Case("lesion_test (transformer, mean ablation, train mode)", sub.lesion_test, TinyTransformer, tokens,
         lambda m, x: sub.lesion_test(m, {"blocks.0.mlp.0": np.arange(16) % 2}, x, LAST, ablation="mean",
                                      n_controls=3).to_dict(), train_mode=True),
    Case("functional_graph (coactivation)", sub.functional_graph, TinyMLP, vectors,
         lambda m, x: sub.functional_graph(m, x).to_dict(),
         invalid=(lambda m, x: sub.functional_graph(m, x, method="weights"),)),
    Case("functional_graph (ablation)", sub.functional_graph, TinyMLP, vectors,
         lambda m, x: sub.functional_graph(m, x, method="ablation").to_dict()),
    Case("functional_partition", sub.functional_partition, TinyMLP, vectors,
         lambda m, x: sub.functional_partition(m, x, 2, method="ablation").to_dict(),
         invalid=(lambda m, x: sub.functional_partition(m, x, 1),)),
    Case("train_modular", sub.train_modular, TinyMLP, vectors,
         lambda m, x: sub.train_modular(m, x, torch.arange(len(x)) % 3, n_steps=3, n_shuffles=2).to_dict(),
         invalid=(lambda m, x: sub.train_modular(m, x, torch.arange(len(x)) % 3, n_steps=0),)),
    Case("partition (attention heads)", sub.partition, _heads_model, vectors,
         lambda m, x: sub.partition(m, 2, heads=True).to_dict(), runs_forward=False,
         invalid=(lambda m, x: sub.partition(m, 99, heads=True),)),
    Case("clusterability (attention heads)", sub.clusterability, _heads_model, vectors,
         lambda m, x: sub.clusterability(m, 2, n_shuffles=3, heads=True).to_dict(), runs_forward=False),
    Case("connection_cost", sub.connection_cost, TinyMLP, vectors, lambda m, x: sub.connection_cost(m),
         runs_forward=False),
]

EXEMPT: dict[Any, str] = {
    sub.LesionTest: "a result dataclass",
    sub.UnitGraph: "a result dataclass",
    sub.ModularTraining: "a result dataclass (its .model is a trained copy)",
    zoo_modules.modular_trained_mlp: "builds a new model (tests/bench/test_modules_lesions.py)",
    zoo_modules.digits_loss: "a loss on tensors; takes no model",
    zoo_modules.digit_correct: "builds a metric; takes no model",
}
