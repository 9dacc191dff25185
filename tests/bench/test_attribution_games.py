"""The attribution games (G3 localisation, G4 sanity checks, G5 faithfulness and ROAR), played directly.

Each game: one quick case per method gives the declared metrics in range; the planted ground truth
is really there (the trigger fires, the tabular model uses exactly the relevant features, the
randomised models really differ); the helpers have closed-form answers (Spearman, AUROC vs
scipy/scikit-learn). The score tables over seeds are in docs/neurons-attribution.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from seethrough.bench.games import GAMES, Game
from seethrough.bench.games.attribution import attribution_map, auroc_rows, sobel_map, spearman_rows
from seethrough.bench.games.roar import remove_top_pixels
from seethrough.bench.games.sanity_checks import random_label_twin, randomise_layers, weight_layers
from seethrough.bench.zoo.classifiers import trojaned_classifier
from seethrough.bench.zoo.tabular import tabular_task, trained_tabular_mlp


def test_rank_helpers_agree_with_scipy_and_sklearn() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 30, generator=gen), torch.randn(4, 30, generator=gen)
    b[:, :10] = 0.0  # ties
    expected = [spearmanr(a[i], b[i]).statistic for i in range(4)]
    np.testing.assert_allclose(spearman_rows(a, b).numpy(), expected, rtol=1e-10)
    mask = (torch.arange(30) % 7 == 0).float()
    np.testing.assert_allclose(auroc_rows(b, mask).numpy(), [roc_auc_score(mask, b[i]) for i in range(4)],
                               rtol=1e-10)
    assert spearman_rows(torch.ones(1, 5), a[:1, :5]).item() == 0.0  # a constant map has no ranking


def test_sobel_is_zero_on_flat_images_and_large_on_an_edge() -> None:
    x = torch.zeros(1, 1, 8, 8)
    assert float(sobel_map(x).abs().max()) == 0.0
    x[..., 4:] = 1.0
    edges = sobel_map(x)[0, 0]
    assert float(edges[:, 3:5].min()) > 0 and float(edges[:, :2].abs().max()) == 0.0


def _play_quick(game: Game, methods: tuple[str, ...]) -> dict[str, dict[str, float]]:
    case = game.cases(0, True)[0]
    return {m: game.play(m, case) for m in methods}


def test_localisation_game_scores_and_planted_trigger() -> None:
    game = GAMES["attribution-localisation"]
    model, meta = trojaned_classifier("mlp", "patch", 0)
    assert meta["attack_success_rate"] >= 0.9  # the trigger is really there
    scores = _play_quick(game, tuple(game.methods))
    names = {m.name for m in game.metrics}
    for method, result in scores.items():
        assert set(result) == names, method
        assert 0.0 <= result["pixel_auroc"] <= 1.0 and -1.0 <= result["spearman"] <= 1.0
    assert scores["saliency"]["pixel_auroc"] > scores["random"]["pixel_auroc"] + 0.2
    assert abs(scores["random"]["pixel_auroc"] - 0.5) < 0.1


def test_sanity_game_scores_and_that_randomisation_changes_the_model() -> None:
    game = GAMES["sanity-checks"]
    model, _ = trojaned_classifier("mlp", "none", 0)
    layers = weight_layers(model)
    assert layers == ["head", "fc2", "fc1"]
    top = randomise_layers(model, layers[:1], 0)
    assert not torch.equal(top.head.weight, model.head.weight) and torch.equal(top.fc1.weight, model.fc1.weight)
    twin, meta = random_label_twin("mlp", 0)
    assert meta["test_accuracy"] < 0.3  # learnt no digits
    scores = _play_quick(game, ("saliency", "guided-backprop", "sobel"))
    for result in scores.values():
        assert set(result) == {m.name for m in game.metrics}
        assert all(-1.0 <= v <= 1.0 for v in result.values())
    assert scores["sobel"]["rank_corr_top_randomised"] == pytest.approx(1.0)  # ignores the model
    assert scores["saliency"]["rank_corr_top_randomised"] < 0.2
    assert scores["guided-backprop"]["rank_corr_top_randomised"] > 0.3  # the known failure (Adebayo et al.)


def test_faithfulness_game_and_that_only_the_relevant_features_matter() -> None:
    game = GAMES["attribution-faithfulness"]
    model, meta = trained_tabular_mlp(0)
    assert meta["test_accuracy"] > 0.9
    x, y, rule = tabular_task(0, 300, split="test")
    assert rule["relevant"] == meta["relevant"]
    irrelevant = [j for j in range(20) if j not in rule["relevant"]]
    shuffled = x.clone()
    shuffled[:, irrelevant] = shuffled[torch.randperm(300, generator=torch.Generator().manual_seed(1))][:, irrelevant]
    with torch.no_grad():  # scrambling the irrelevant features barely changes the predictions
        assert float((model(shuffled).argmax(1) == model(x).argmax(1)).double().mean()) > 0.9
    scores = _play_quick(game, tuple(game.methods))
    assert all(0.0 <= r["feature_agreement"] <= 1.0 for r in scores.values())
    assert scores["saliency"]["feature_agreement"] > 0.7 and scores["random"]["feature_agreement"] < 0.4


def test_roar_removal_and_game() -> None:
    x = torch.arange(8.0).view(2, 1, 2, 2)
    scores = torch.tensor([[4.0, 3, 2, 1], [1, 2, 3, 4]]).view(2, 1, 2, 2)
    out = remove_top_pixels(x, scores, 0.5, torch.full((1, 2, 2), -1.0))
    assert out.flatten(1).tolist() == [[-1, -1, 2, 3], [4, 5, -1, -1]]
    game = GAMES["roar"]
    case = game.cases(0, True)[0]
    result = game.play("saliency", case)
    assert set(result) == {"area_vs_random"} and -1.0 <= result["area_vs_random"] <= 1.0
    with pytest.raises(KeyError, match="unknown method"):
        game.play("telepathy", case)


def test_attribution_map_names() -> None:
    model, _ = trojaned_classifier("mlp", "none", 0)
    x = torch.rand(2, 1, 16, 16)
    for method in ("saliency", "gradient-x-input", "integrated-gradients", "smoothgrad", "guided-backprop"):
        assert attribution_map(method, model, x, torch.tensor([1, 2])).shape == x.shape
    with pytest.raises(KeyError):
        attribution_map("lime", model, x, torch.tensor([1, 2]))


@pytest.mark.parametrize("game", [GAMES[name] for name in ("attribution-localisation", "sanity-checks",
                                                             "attribution-faithfulness", "roar")], ids=lambda g: g.name)
def test_games_declare_what_the_table_needs(game: Game) -> None:
    assert isinstance(game, Game) and game.item and game.description and game.metrics
    assert game.baselines and game.baselines < set(game.methods)
    for metric in game.metrics:
        assert 0 <= metric.chance < metric.bar if metric.higher_is_better else metric.bar < metric.chance
    for quick in (True, False):
        cases = game.cases(0, quick)
        assert cases and all("seed" in c for c in cases) and game.cases(0, quick) == cases
        assert game.cases(1, quick) != cases
