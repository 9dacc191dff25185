"""Hygiene cases for issue #12: partition, clusterability, activation patching and circuits (joined by hygiene.py)."""

from __future__ import annotations

from typing import Any

import torch
from hygiene import Case
from models import TinyCNN, TinyMLP, TinyTransformer, images, tokens, vectors
from torch import Tensor, nn

from seethrough import Site
from seethrough import subnetworks as sub
from seethrough.bench.zoo import circuits as zoo_circuits
from seethrough.bench.zoo import modules as zoo_modules
from seethrough.evidence import validate


class Residual(nn.Module):
    """A residual stream: embed writes, three blocks read and write, head reads (contract_check's model)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.embed = nn.Linear(4, 8)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(3))
        self.head = nn.Linear(8, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.6)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


def _metric(out: Any) -> Tensor:
    return torch.log_softmax(out, -1)[:, 0]


def _last_token(out: Any) -> Tensor:
    return out[:, -1, 0]


def _corrupt(x: Any) -> Any:
    if isinstance(x, dict):
        return {**x, "input_ids": (x["input_ids"] * 3 + 1) % 16}
    return x.flip(0) * -1.5


WRITERS = ["embed", "blocks.0", "blocks.1", "blocks.2"]
READERS = ["blocks.0", "blocks.1", "blocks.2", "head"]


def _circuit(method: str):
    return lambda m, x: sub.find_circuit(m, x, _corrupt(x), _metric, writers=WRITERS, readers=READERS,
                                         method=method).to_dict()


CASES: list[Case] = [
    Case("partition", sub.partition, TinyMLP, vectors, lambda m, x: sub.partition(m, 2).to_dict(),
         runs_forward=False, invalid=(lambda m, x: sub.partition(m, 0),)),
    Case("partition (cnn)", sub.partition, TinyCNN, images, lambda m, x: sub.partition(m, 2, seed=1).to_dict(),
         runs_forward=False, train_mode=True),
    Case("clusterability", sub.clusterability, TinyMLP, vectors,
         lambda m, x: sub.clusterability(m, 2, n_shuffles=3).to_dict(), runs_forward=False,
         invalid=(lambda m, x: sub.clusterability(m, 2, n_shuffles=1),)),
    Case("activation_patching", sub.activation_patching, TinyMLP, vectors,
         lambda m, x: sub.activation_patching(m, x, _corrupt(x), ["act", Site("fc1", units=[0, 2])], _metric).effects,
         invalid=(lambda m, x: sub.activation_patching(m, x, x[:2], ["act"], _metric),
                  lambda m, x: sub.activation_patching(m, x, _corrupt(x), [Site("fc1", units=[99])], _metric))),
    Case("activation_patching (transformer positions, train mode)", sub.activation_patching, TinyTransformer, tokens,
         lambda m, x: sub.activation_patching(m, x, _corrupt(x), [Site("blocks.0", positions=[0, -1])],
                                              _last_token).effects, train_mode=True),
    *[Case(f"find_circuit ({method})", sub.find_circuit, Residual, vectors, _circuit(method),
           invalid=(lambda m, x: sub.find_circuit(m, x, _corrupt(x), _metric, writers=WRITERS,
                                                  readers=["blocks.0", "blocks.9"]),))
      for method in sub.CIRCUIT_METHODS],
    Case("find_circuit (exact, resample ablation)", sub.find_circuit, Residual, vectors,
         lambda m, x: sub.find_circuit(m, x, _corrupt(x), _metric, writers=WRITERS, readers=READERS, method="exact",
                                       ablation="resample", seed=2).to_dict(),
         invalid=(lambda m, x: sub.find_circuit(m, x, _corrupt(x), _metric, writers=WRITERS, readers=READERS,
                                                ablation="half"),)),
    Case("faithfulness_curve", sub.faithfulness_curve, Residual, vectors,
         lambda m, x: sub.faithfulness_curve(m, x, _corrupt(x), _metric, writers=WRITERS, readers=READERS,
                                             ranking=sub.find_circuit(m, x, _corrupt(x), _metric, writers=WRITERS,
                                                                      readers=READERS).select(10)).to_dict(),
         invalid=(lambda m, x: sub.faithfulness_curve(m, x, _corrupt(x), _metric, writers=WRITERS, readers=READERS,
                                                      ranking=[("embed", "head")]),)),
    Case("circuit_significance", sub.circuit_significance, Residual, vectors,
         lambda m, x: sub.circuit_significance(m, x, _corrupt(x), _metric, writers=WRITERS, readers=READERS,
                                               edges=[("embed", "head"), ("blocks.2", "head")], n_controls=5,
                                               seed=1).to_dict(),
         invalid=(lambda m, x: sub.circuit_significance(m, x, _corrupt(x), _metric, writers=WRITERS, readers=READERS,
                                                        edges=[]),)),
    Case("circuit_stability", sub.circuit_stability, Residual, vectors,
         lambda m, x: sub.circuit_stability(m, x, _corrupt(x), _metric, writers=WRITERS, readers=READERS, k=3,
                                            method="eap-ig", n_samples=3, seed=1).to_dict(),
         invalid=(lambda m, x: sub.circuit_stability(m, x, _corrupt(x), _metric, writers=WRITERS, readers=READERS,
                                                     k=0),)),
    Case("validate (circuit finding)", validate, Residual, vectors,
         lambda m, x: validate(sub.find_circuit(m, x, _corrupt(x), _metric, writers=WRITERS, readers=READERS,
                                                method="eap").to_findings(k=3)[1], m, x, metric=_metric,
                               reference=_corrupt(x), n_controls=5).to_dict(),
         invalid=(lambda m, x: validate(sub.find_circuit(m, x, _corrupt(x), _metric, writers=WRITERS,
                                                         readers=READERS).to_findings(k=3)[0], m, x, metric=_metric),)),
    Case("faithfulness", sub.faithfulness, Residual, vectors,
         lambda m, x: sub.faithfulness(m, x, _corrupt(x), _metric, writers=WRITERS, readers=READERS,
                                       edges=[("embed", "head"), ("blocks.0", "blocks.2")]),
         invalid=(lambda m, x: sub.faithfulness(m, x, _corrupt(x), _metric, writers=WRITERS, readers=READERS,
                                                edges=[("head", "embed")]),)),
]

EXEMPT: dict[Any, str] = {
    sub.ncut: "the n-cut of a labelled adjacency matrix; takes no model (hand-computed and brute-force oracles)",
    sub.Partition: "a result dataclass",
    sub.Clusterability: "a result dataclass",
    sub.Patching: "a result dataclass",
    sub.Circuit: "a result dataclass (its verify() and curve() are faithfulness and faithfulness_curve, in the table)",
    sub.FaithfulnessCurve: "a result dataclass",
    sub.CircuitSignificance: "a result dataclass",
    sub.CircuitStability: "a result dataclass",
    sub.jaccard: "the Jaccard similarity of two sets; takes no model (hand-computed oracle)",
    zoo_modules.modular_mlp: "builds a new model (tests/bench/test_subnetwork_games.py)",
    zoo_modules.side_by_side_digits: "builds data",
    zoo_circuits.compiled_circuit: "builds a new model (tests/bench/test_subnetwork_games.py)",
    zoo_circuits.siit_circuit: "trains a new model (tests/bench/test_subnetwork_games.py verifies it by ablation)",
    zoo_circuits.CompiledCircuit: "a model class",
    zoo_circuits.circuit_bits: "builds data",
    zoo_circuits.circuit_pairs: "builds data",
}
