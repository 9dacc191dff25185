"""Hygiene cases for issue #12 item 1: sparse training and sparsity reports (joined by hygiene.py)."""

from __future__ import annotations

from typing import Any

import torch
from hygiene import Case
from models import TinyCNN, TinyMLP, vectors
from torch import nn

from seethrough import subnetworks as sub
from seethrough.bench.zoo import sparse as zoo_sparse


def _labels(x: torch.Tensor) -> torch.Tensor:
    return torch.arange(len(x)) % 3


def _train(method: str, **kwargs: Any):
    def call(m: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        trained = sub.train_with_sparsity(m, x, _labels(x), method=method, n_steps=3, batch_size=4, **kwargs)
        return {k: v.detach().clone() for k, v in trained.state_dict().items()}
    return call


CASES: list[Case] = [
    *[Case(f"train_with_sparsity ({method})", sub.train_with_sparsity, TinyMLP, vectors,
           _train(method, penalty=0.1, density=0.5),
           invalid=(lambda m, x: sub.train_with_sparsity(m, x, _labels(x) + 5, method="l1"),
                    lambda m, x: sub.train_with_sparsity(m, x, _labels(x), method="l2")))
      for method in sub.SPARSITY_METHODS],
    Case("train_with_sparsity (topk, train mode)", sub.train_with_sparsity, TinyMLP, vectors,
         _train("topk", density=0.3), train_mode=True),
    Case("sparsity_report", sub.sparsity_report, TinyCNN, vectors, lambda m, x: sub.sparsity_report(m).to_dict(),
         runs_forward=False, invalid=(lambda m, x: sub.sparsity_report(nn.ReLU()),)),
]

EXEMPT: dict[Any, str] = {
    sub.SparsityReport: "a result dataclass",
    sub.expected_l0: "a closed form of log_alpha; takes no model (Monte-Carlo oracle in tests/subnetworks)",
    sub.hard_concrete_sample: "samples gates from log_alpha; takes no model",
    zoo_sparse.sparse_mlp: "builds a new model (tests/bench/test_sparse_circuits_game.py)",
    zoo_sparse.digit_vectors: "builds data",
}
