"""The dissection game (issue #5): planted detectors are really there, and one quick case plays."""

from __future__ import annotations

import torch

from seethrough.bench.games.dissection import DissectionGame
from seethrough.bench.zoo.scenes import CONCEPTS, planted_detectors, scenes


def test_scenes_are_deterministic_and_masks_cover_the_objects() -> None:
    x, masks, y = scenes(50, seed=3)
    x2, masks2, y2 = scenes(50, seed=3)
    assert torch.equal(x, x2) and torch.equal(masks, masks2) and torch.equal(y, y2)
    colour, shape = masks[:, :6].sum(1), masks[:, 6:].sum(1)
    assert torch.equal(colour, shape) and int(colour.max()) == 1  # each object pixel: one colour, one shape
    assert len(CONCEPTS) == masks.shape[1] == 12
    background = ~masks.any(1)
    assert float(x.permute(1, 0, 2, 3)[:, background].max()) <= 0.2  # objects are where the masks say


def test_planted_detectors_detect_their_concepts_and_the_game_scores_both_methods() -> None:
    game = DissectionGame()
    case = game.cases(0, quick=True)[0]
    model, meta = planted_detectors(case["seed"])
    assert len(meta["designated"]) == 8 and meta["accuracy"] > 0.5
    assert min(meta["detector_auc"].values()) > 0.9  # pixel-level AUC of each designated map for its concept
    scores = {m: game.play(m, case) for m in game.methods}
    for row in scores.values():
        assert set(row) == {m.name for m in game.metrics} and all(0.0 <= v <= 1.0 for v in row.values())
    assert scores["dissection"]["precision"] == 1.0 and scores["dissection"]["label_accuracy"] >= 0.5
    assert scores["dissection"]["label_accuracy"] > scores["random"]["label_accuracy"]
