"""The sparse-circuits game (issue #12 item 1): its zoo models are what it says, and its scores have closed-form ends."""

from __future__ import annotations

import math

import torch

from seethrough.bench.games import GAMES
from seethrough.bench.zoo.sparse import digit_vectors, sparse_mlp
from seethrough.subnetworks import sparsity_report

TINY = {"seed": 7, "n_steps": 150}  # a short training run: the scores' structure, not the bars


def test_zoo_models_share_the_initialisation_and_topk_keeps_its_density() -> None:
    dense, meta = sparse_mlp(7, n_steps=150)
    sparse, sparse_meta = sparse_mlp(7, method="topk", density=0.1, n_steps=150)
    report = sparsity_report(sparse)
    assert [n - z for n, z in zip(report.numel, report.zeros, strict=True)] == [math.ceil(0.1 * n) for n in report.numel]
    assert sparsity_report(dense).zeros == (0, 0, 0)
    assert sparse_meta["nonzero"] == report.nonzero
    x, y = digit_vectors("test")
    assert tuple(x.shape) == (450, 64) and float(x.min()) >= 0 and float(x.max()) <= 1
    with torch.no_grad():
        assert abs(float((dense(x).argmax(1) == y).float().mean()) - meta["accuracy"]) < 1e-6


def test_game_scores_have_their_closed_form_ends() -> None:
    game = GAMES["sparse-circuits"]
    assert game.baselines == {"l1", "dense", "random-order", "whole-sparse-model"}
    dense = game.play("dense", TINY)
    assert dense["size_ratio"] == 1.0 and dense["accuracy_loss"] == 0.0  # the dense circuit against itself
    whole = game.play("whole-sparse-model", TINY)
    assert whole["faithfulness"] == 1.0  # nothing ablated: the model itself
    found = game.play("weight-sparse", TINY)
    # Keeping every unit counts every non-zero weight, so a pruned circuit can only be smaller.
    assert found["size_ratio"] >= whole["size_ratio"] > 1.0
