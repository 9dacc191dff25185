"""The known-route and basis-change games and their zoo (issue #13 item 4).

Fast checks use untrained zoo architectures (the planted properties hold for any weights): the
two-hop model's last layer never attends to the first half, blank-out importance respects the causal
mask, the rotated twin computes the same function with its middle sites in another basis, and the
scores of hand-made answers. Playing the games on trained models is marked slow (it trains the zoo).
"""

from __future__ import annotations

import pytest
import torch

from seethrough.bench.games import GAMES
from seethrough.bench.games.routes import RouteAnswer, RoutePlanted, blank_out_importance
from seethrough.bench.zoo.routes import ResidualNet, RouteTransformer, rotated_twin, route_task
from seethrough.core import capture
from seethrough.representations import attention_patterns


def test_games_are_registered_with_chance_below_bar() -> None:
    for name in ("known-route", "basis-change"):
        game = GAMES[name]
        for metric in game.metrics:
            assert metric.chance < metric.bar if metric.higher_is_better else metric.bar < metric.chance
        assert game.baselines and set(game.baselines) < set(game.methods)


def test_the_two_hop_last_layer_never_attends_to_the_first_half() -> None:
    model = RouteTransformer(16, 10, last_first_key=5, seed=3)
    tokens, labels, source = route_task("two_hop", torch.Generator().manual_seed(0), 8)
    assert bool((source < 5).all()) and bool((labels < 4).all())
    maps = attention_patterns(model, tokens, ["blocks.0.attn.pattern", "blocks.1.attn.pattern"]).values
    assert float(maps[:, 1, :, 5:, :5].abs().max()) == 0.0
    assert float(maps[:, 0, :, 5:, :5].sum()) > 0  # the first layer can gather from the first half


def test_blank_out_importance_respects_the_causal_mask() -> None:
    model = RouteTransformer(16, 10, seed=4)
    tokens = route_task("copy", torch.Generator().manual_seed(1), 6)[0]
    early = blank_out_importance(model, tokens, read=2)
    assert float(early[:, 3:].abs().max()) == 0.0 and float(early[:, :3].min()) > 0
    late = blank_out_importance(model, tokens)
    assert late.shape == (6, 10) and float(late.min()) >= 0


def test_the_rotated_twin_is_the_same_function_in_another_basis() -> None:
    model = ResidualNet(16, 10, seed=5).eval()
    twin, rotated = rotated_twin(model, 0)
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), atol=1e-4, rtol=1e-4)
        a, b = capture(model, x, rotated), capture(twin, x, rotated)
        q = twin.rotate.weight
        for site in rotated:
            torch.testing.assert_close(b[site], a[site] @ q.T, atol=1e-4, rtol=1e-4)
            assert float((b[site] - a[site]).abs().max()) > 0.1
    assert twin.rotate is not None and model.rotate is None  # the original is untouched
    assert rotated == ["blocks.1", "blocks.2"]


def test_route_scores_of_hand_made_answers() -> None:
    score = GAMES["known-route"].score
    blank = torch.tensor([[0.1, 0.9, 0.3, 0.0], [0.5, 0.2, 0.1, 0.0]])
    planted = RoutePlanted(torch.nn.Identity(), torch.zeros(2, 4, dtype=torch.long), torch.tensor([1, 0]), blank,
                           0.25, ("a", "b"))
    perfect = score(RouteAnswer(blank.double()), planted)
    assert perfect == {"spearman": 1.0, "source_top1": 1.0, "spearman_gain": 0.75}
    flat = score(RouteAnswer(torch.ones(2, 4, dtype=torch.float64)), planted)
    assert flat["spearman"] == 0.0 and flat["source_top1"] == pytest.approx(1 / 3)  # ties: a random pick of three
    raw = score(RouteAnswer(blank.double(), is_raw=True), planted)
    assert "spearman_gain" not in raw


@pytest.mark.slow
def test_the_games_on_trained_models() -> None:
    """Seed 0 of the two-hop and basis-change quick cases (trains three zoo models: ~25 s on 2 busy cores)."""
    route = GAMES["known-route"]
    case = next(c for c in route.cases(0, True) if c["task"] == "two_hop")
    rolled = route.play("rollout", case)
    assert rolled["source_top1"] >= 0.9 and rolled["spearman_gain"] > 0.3
    assert route.play("raw attention", case)["source_top1"] == 0.0  # planted: the last layer cannot see the source
    basis = GAMES["basis-change"]
    case = basis.cases(0, True)[0]
    tuned = basis.play("tuned lens", case)
    assert tuned["below_logit_lens"] == 1.0 and tuned["rotated_kl_fraction"] < 0.5
    assert basis.play("logit lens", case)["rotated_kl_fraction"] > 1.0
