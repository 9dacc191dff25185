"""The planted-hazards game and its zoo entries: the planted truth is really there (issue #5)."""

from __future__ import annotations

import pytest
import torch

from seethrough.bench.games import GAMES
from seethrough.bench.games.hazards import precision_recall
from seethrough.bench.zoo import LOADING_THRESHOLD, digits16, trojaned_classifier
from seethrough.bench.zoo.hazards import PRUNE_TOLERANCE, planted_hazards, superposed_units


def test_precision_recall_closed_form() -> None:
    assert precision_recall({1, 2, 3, 4}, {1, 2, 5}) == (0.5, pytest.approx(2 / 3))
    assert precision_recall(set(), {1}) == (0.0, 0.0)
    assert precision_recall({frozenset((1, 2))}, {frozenset((2, 1))}) == (1.0, 1.0)


def test_planted_hazards_compute_the_base_function_and_hold_their_hazards() -> None:
    model, meta = planted_hazards(0)
    base, _ = trojaned_classifier("mlp", "none", 0)
    x = torch.cat([digits16("train")[0], digits16("test")[0]])
    with torch.no_grad():
        # dead units output 0 and idle ones are read by nothing; a duplicate pair sums to its source
        torch.testing.assert_close(model(x), base(x), rtol=1e-4, atol=1e-4)
        acts = model.act1(model.fc1(x.flatten(1)))
    w1, b1, w2 = model.fc1.weight.detach(), model.fc1.bias.detach(), model.fc2.weight.detach()
    assert meta["n_units"] == 76 == acts.shape[1]
    assert set(meta["planted_dead"]) <= set(meta["dead"])
    assert meta["dead"] == torch.nonzero(acts.amax(0) <= 0).flatten().tolist()
    for u in meta["planted_dead"]:  # can never fire on inputs in [0, 1]
        assert float(w1[u].clamp(min=0).sum() + b1[u]) < 0
    assert len(meta["duplicated"]) == 4
    for i, j in meta["duplicated"]:
        assert torch.equal(w1[i], w1[j]) and b1[i] == b1[j]
        assert 0 < float(acts[:, i].gt(0).double().mean()) < 1
        ratio = w2[:, j] / w2[:, i]
        torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio))  # the outgoing weight is split, not changed
    for u in meta["idle"]:
        assert float(w2[:, u].abs().max()) == 0.0 and 0.2 < float(acts[:, u].gt(0).double().mean()) < 0.8
    assert set(meta["dead"]) | set(meta["idle"]) <= set(meta["prunable"])
    assert all((d <= PRUNE_TOLERANCE) == (u in meta["prunable"]) for u, d in enumerate(meta["damage"]))
    again, _ = planted_hazards(0)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters(), strict=True))


def test_superposed_units_load_on_exactly_their_features() -> None:
    model, meta = superposed_units(0)
    w = model.W.detach()
    assert (w != 0).sum(1).tolist() == meta["features_per_unit"]
    assert [torch.nonzero(row).flatten().tolist() for row in w] == meta["loadings"]
    assert bool((w[w != 0].abs() > LOADING_THRESHOLD).all())
    assert len(set(meta["features_per_unit"])) > 1  # the counts vary, so a rank correlation is defined


def test_every_method_plays_a_quick_case_and_the_report_beats_random() -> None:
    game = GAMES["planted-hazards"]
    case = game.cases(0, True)[0]
    assert game.cases(0, True) == [case] and game.cases(1, True) != [case]
    scores = {m: game.play(m, case) for m in game.methods}
    names = {m.name for m in game.metrics}
    for method, result in scores.items():
        assert set(result) <= names and result, method
        for metric, value in result.items():
            low = -1.0 if metric.endswith("spearman") else 0.0
            assert low <= value <= 1.0, (method, metric, value)
    assert set(scores["hazard-report"]) == names == set(scores["random"])
    report, rand = scores["hazard-report"], scores["random"]
    for name in names:
        assert report[name] >= game.metric(name).bar, name
    assert sum(report[n] > rand[n] for n in names) == len(names)
    with pytest.raises(KeyError, match="unknown method"):
        game.play("telepathy", case)


def test_ablation_game_plays_resample_ablation() -> None:
    game = GAMES["ablation"]
    assert "resample-ablation" in game.methods
    result = game.play("resample-ablation", game.cases(0, True)[0])
    assert set(result) == {"precision_at_k", "validated"} and 0 <= result["precision_at_k"] <= 1
