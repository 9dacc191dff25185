"""The dissection game (issue #5): planted detectors are really there, and one quick case plays."""

from __future__ import annotations

import torch

from seethrough.bench.games import GAMES
from seethrough.bench.zoo.scenes import CONCEPTS, planted_detectors, scenes


def test_scenes_are_deterministic_and_masks_cover_the_objects() -> None:
    x, masks, y = scenes(50, seed=3)
    x2, masks2, y2 = scenes(50, seed=3)
    assert torch.equal(x, x2) and torch.equal(masks, masks2) and torch.equal(y, y2)
    colour, shape = masks[:, :6].sum(1), masks[:, 6:].sum(1)
    assert torch.equal(colour, shape) and int(colour.max()) == 1  # each object pixel: one colour, one shape
    assert len(CONCEPTS) == masks.shape[1] == 12
    background = ~masks.any(1)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.permute(1, 0, 2, 3)[:, background].max()) <= 0.2  # objects are where the masks say
    # colours of equal intensity: summed over the planes, every object pixel is 1.5 up to jitter and grain
    total = x.sum(1)[~background]
    assert float((total - 1.5).abs().max()) <= 3 * 0.08 + 3 * 0.1 + 1e-5


def test_planted_detectors_detect_their_concepts_and_the_other_channels_map_grain() -> None:
    model, meta = planted_detectors(0)
    assert len(meta["designated"]) == 8 and model.conv2.out_channels == 40
    assert meta["accuracy"] > 0.3  # main task (dominant colour of 6): well above chance 1/6
    assert min(meta["detector_auc"].values()) > 0.9  # pixel-level AUC of each designated map for its concept
    assert len(meta["texture_r2"]) == 32 and min(meta["texture_r2"].values()) > 0.5  # grain maps learned


def test_the_game_scores_both_methods_and_the_rotation_control_drops() -> None:
    game = GAMES["dissection"]
    case = game.cases(0, quick=True)[0]
    scores = {m: game.play(m, case) for m in game.methods}
    for row in scores.values():
        assert set(row) == {m.name for m in game.metrics}
        assert all(0.0 <= row[k] <= 1.0 for k in ("label_accuracy", "precision", "recall"))
        assert all(-1.0 <= row[k] <= 1.0 for k in ("rotation_drop", "rotation_iou_drop"))
    ours, rand = scores["dissection"], scores["random"]
    assert ours["precision"] == 1.0 and ours["recall"] == 1.0 and ours["label_accuracy"] >= 0.6
    assert ours["label_accuracy"] > rand["label_accuracy"]
    # Bau et al.'s control: detectors are axis-aligned, so a random rotation loses concepts and IoU
    assert ours["rotation_drop"] >= 0.25 and ours["rotation_iou_drop"] >= 0.3
    assert abs(rand["rotation_iou_drop"]) < 0.1  # random scores: no drop
    assert game.play("dissection", case) == ours  # deterministic
