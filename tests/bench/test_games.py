"""Game harness pieces with closed-form answers (issue #3); end-to-end runs are in test_bench_cli.py."""

from __future__ import annotations

import pytest
import torch

from seethrough.bench.games import GAMES, mask_iou
from seethrough.bench.games.base import Game


def test_mask_iou_closed_form() -> None:
    planted = torch.zeros(5, 5)
    planted[1:3, 1:3] = 1  # 4 pixels
    assert mask_iou(planted * 0.7, planted) == 1.0
    shifted = torch.zeros(5, 5)
    shifted[1:3, 2:4] = 1  # overlaps 2 of 4: IoU 2 / 6
    assert mask_iou(shifted, planted) == pytest.approx(2 / 6)
    assert mask_iou(-planted, planted) == 0.0  # the 4 smallest pixels are elsewhere


@pytest.mark.parametrize("game", list(GAMES.values()), ids=lambda g: g.name)
def test_every_game_declares_what_the_table_needs(game: Game) -> None:
    assert game.item and game.description and game.metrics
    assert game.baselines and game.baselines < set(game.methods), "each game runs a trivial baseline"
    for metric in game.metrics:
        assert 0 <= metric.chance < metric.bar if metric.higher_is_better else metric.bar < metric.chance
    for quick in (True, False):
        cases = game.cases(0, quick)
        assert cases and all("seed" in c for c in cases)
        assert game.cases(0, quick) == cases  # deterministic
        assert game.cases(1, quick) != cases


def test_unknown_method_is_refused() -> None:
    with pytest.raises(KeyError, match="unknown method"):
        GAMES["ablation"].play("telepathy", GAMES["ablation"].cases(0, True)[0])


def test_baseline_coin_flips_are_not_correlated_across_consecutive_seeds() -> None:
    from seethrough.bench.games import case_generator

    flips = [float(torch.rand(1, generator=case_generator("g", "random", {"seed": s, "trojan": t})))
             for s in range(40) for t in ("patch", "none")]
    heads = sum(f < 0.5 for f in flips)
    assert 25 <= heads <= 55  # Binomial(80, 0.5): outside this range has probability < 0.2%
    assert case_generator("g", "m", {"seed": 1}).initial_seed() == case_generator("g", "m", {"seed": 1}).initial_seed()
