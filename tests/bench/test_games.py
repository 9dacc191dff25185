"""The game harness (issues #3 and #9): closed-form helpers, and one common check over every registered game.

Like scikit-learn's ``check_estimator``, each check below runs on every game in the registry, and a
planted-bug test shows that each check fails on a deliberately broken game. End-to-end runs are in
test_bench_cli.py (which also checks, from the quick run, that every metric of every game gets rows).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
import torch

from seethrough.bench.games import GAMES, Game, GameError, Metric, base, mask_iou, register
from seethrough.bench.games.base import registered
from seethrough.bench.zoo.cache import config_hash

#: Games whose seed-0 quick cases take seconds (models cached): the metric-coverage check plays them
#: here. The others (tens of seconds) are covered by the quick bench run in test_bench_cli.py.
# Games whose quick cases train or search for more than a few seconds are not replayed here: the quick bench
# run of tests/bench/test_bench_cli.py already scores every metric of every game (test_quick_rows_score_...).
EXPENSIVE = {"roar", "trigger-rediscovery", "trojan-repair", "dissection", "trojan-detection", "sae-dictionary",
             "known-factors", "known-task-weights", "planted-irrelevance", "mask-recovery", "decodable-but-unused",
             "planted-reliance", "planted-modules", "planted-circuits", "known-factors-images", "robust-twins",
             "planted-concepts", "planted-prototypes", "sparse-circuits", "layer-correspondence", "known-route",
             "basis-change"}
DECLARED = [g for g in GAMES.values() if isinstance(g, Game)]


# ---- the checks ------------------------------------------------------------------------------------


def check_cases(game: Game[Any, Any]) -> None:
    """Cases are plain JSON (the ledger stores them), hash to distinct config hashes, and depend on the seed only."""
    for quick in (True, False):
        for seed in (0, 1):
            cases = game.cases(seed, quick)
            assert cases, f"{game.name}: no cases for seed {seed}"
            for case in cases:
                assert case.get("seed") == seed, f"{game.name}: case {case} does not carry its seed {seed}"
                try:
                    text = json.dumps(case, sort_keys=True, allow_nan=False)
                except (TypeError, ValueError) as err:
                    raise AssertionError(f"{game.name}: case {case!r} is not plain JSON ({err})") from err
                assert json.loads(text) == case, f"{game.name}: case {case!r} changes through JSON (use lists)"
            hashes = [config_hash(case) for case in cases]
            assert len(set(hashes)) == len(hashes), f"{game.name}: two cases of seed {seed} share a config hash"
            assert game.cases(seed, quick) == cases, f"{game.name}: cases are not deterministic"
        assert game.cases(0, quick) != game.cases(1, quick), f"{game.name}: seeds 0 and 1 give the same cases"


def check_unknown_method_refused_before_build(game: Game[Any, Any]) -> None:
    """``play`` with a method the game does not run raises ``KeyError`` before anything is built."""
    built: list[Mapping[str, Any]] = []
    spy = dataclasses.replace(game, build=lambda case: built.append(case))
    try:
        spy.play("telepathy", game.cases(0, True)[0])
    except KeyError as err:
        assert "unknown method" in str(err), f"{game.name}: unhelpful error {err}"
    else:
        raise AssertionError(f"{game.name}: play ran the unknown method 'telepathy'")
    assert not built, f"{game.name}: play built the case before refusing an unknown method"


def check_scores_are_checked(game: Game[Any, Any]) -> None:
    """``play`` refuses scores under unknown metric names and non-finite scores (``GameError``)."""
    case, method = game.cases(0, True)[0], next(iter(game.methods))
    for bad in ({"no_such_metric": 0.5}, {game.metrics[0].name: math.nan}, {game.metrics[0].name: "high"}):
        fake = dataclasses.replace(game, build=lambda case: None, methods=dict.fromkeys(game.methods, lambda p, g: None),
                                   score=lambda answer, planted, bad=bad: bad)
        try:
            fake.play(method, case)
        except GameError:
            continue
        raise AssertionError(f"{game.name}: play accepted the scores {bad}")


def unscored_metrics(game: Game[Any, Any], scored: Iterable[str]) -> list[str]:
    """The game's metrics that no score names (a ranking metric is scored through the per-case score it ranks)."""
    names = set(scored)
    return [m.name for m in game.metrics if (m.ranks if m.ranks is not None else m.name) not in names]


def _all_quick_scores(game: Game[Any, Any]) -> set[str]:
    return {name for case in game.cases(0, True) for method in game.methods for name in game.play(method, case)}


# ---- every registered game -------------------------------------------------------------------------


def test_every_game_is_declared_and_registered_in_table_order() -> None:
    assert all(isinstance(game, Game) for game in GAMES.values())
    assert list(GAMES) == [g.name for g in registered()]
    assert list(GAMES)[:3] == ["ablation", "planted-hazards", "dissection"]  # the table's order is compared


@pytest.mark.parametrize("game", DECLARED, ids=lambda g: g.name)
def test_cases_are_json_and_hashable(game: Game[Any, Any]) -> None:
    check_cases(game)


@pytest.mark.parametrize("game", DECLARED, ids=lambda g: g.name)
def test_unknown_method_is_refused_before_building(game: Game[Any, Any]) -> None:
    check_unknown_method_refused_before_build(game)


@pytest.mark.parametrize("game", DECLARED, ids=lambda g: g.name)
def test_unknown_and_non_finite_scores_are_refused(game: Game[Any, Any]) -> None:
    check_scores_are_checked(game)


@pytest.mark.parametrize("game", [g for g in DECLARED if g.name not in EXPENSIVE], ids=lambda g: g.name)
def test_every_metric_is_scored_on_quick_cases(game: Game[Any, Any]) -> None:
    assert not unscored_metrics(game, _all_quick_scores(game))


@pytest.mark.parametrize("game", list(GAMES.values()), ids=lambda g: g.name)
def test_every_game_declares_what_the_table_needs(game: Game[Any, Any]) -> None:
    assert game.item and game.description and game.metrics
    assert game.baselines and game.baselines < set(game.methods), "each game runs a trivial baseline"
    for metric in game.metrics:
        assert 0 <= metric.chance < metric.bar if metric.higher_is_better else metric.bar < metric.chance


# ---- planted bugs: each check fails on a broken game -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Coin:
    heads: float


def _toy(**changes: Any) -> Game[_Coin, float]:
    """A cheap, correct game (a planted coin; the method guesses it); ``changes`` break one thing."""
    fields: dict[str, Any] = dict(
        name="toy", item="Tests / toy", description="guess a planted coin",
        metrics=(Metric("error", chance=0.5, bar=0.1, higher_is_better=False),),
        cases=lambda seed, quick: [{"seed": seed, "n": 2 if quick else 3}],
        build=lambda case: _Coin(float(case["seed"] % 2)),
        methods={"oracle": lambda planted, gen: planted.heads,
                 "random": lambda planted, gen: float(torch.rand(1, generator=gen) < 0.5)},
        score=lambda answer, planted: {"error": abs(answer - planted.heads)},
        baselines=frozenset({"random"}))
    return Game(**{**fields, **changes})


def test_the_toy_game_passes_every_check() -> None:
    game = _toy()
    check_cases(game)
    check_unknown_method_refused_before_build(game)
    check_scores_are_checked(game)
    assert not unscored_metrics(game, _all_quick_scores(game))
    assert game.play("oracle", {"seed": 1, "n": 2}) == {"error": 0.0}


@pytest.mark.parametrize("cases", [
    lambda seed, quick: [{"seed": seed, "mask": torch.ones(2)}],  # not JSON
    lambda seed, quick: [{"seed": seed, "sizes": (1, 2)}],  # a tuple: the ledger gives back a list
    lambda seed, quick: [{"seed": seed}, {"seed": seed}],  # two cases, one hash
    lambda seed, quick: [{"seed": 0}],  # ignores the seed
    lambda seed, quick: [{"seed": seed, "nan": math.nan}],
], ids=["tensor", "tuple", "duplicate", "seedless", "nan"])
def test_check_cases_fails_on_broken_cases(cases: Any) -> None:
    with pytest.raises(AssertionError):
        check_cases(_toy(cases=cases))


def test_check_unknown_method_fails_when_play_builds_first() -> None:
    @dataclasses.dataclass(frozen=True, eq=False)
    class BuildsFirst(Game[_Coin, float]):
        def play(self, method: str, case: Mapping[str, Any]) -> dict[str, float]:
            planted = self.build(case)  # the bug: a model is built before the method is checked
            self.check_method(method)
            return dict(self.score(self.methods[method](planted, torch.Generator()), planted))

    with pytest.raises(AssertionError, match="built the case"):
        check_unknown_method_refused_before_build(BuildsFirst(**{f.name: getattr(_toy(), f.name)
                                                                 for f in dataclasses.fields(Game)}))


def test_check_scores_fails_when_play_skips_the_score_check() -> None:
    @dataclasses.dataclass(frozen=True, eq=False)
    class Unchecked(Game[_Coin, float]):
        def checked_scores(self, scores: Mapping[str, Any]) -> dict[str, float]:
            return dict(scores)  # the bug: any name, any value

    with pytest.raises(AssertionError, match="accepted the scores"):
        check_scores_are_checked(Unchecked(**{f.name: getattr(_toy(), f.name) for f in dataclasses.fields(Game)}))


def test_unscored_metrics_names_a_metric_no_method_scores() -> None:
    game = _toy(metrics=(Metric("error", chance=0.5, bar=0.1, higher_is_better=False),
                         Metric("auroc", chance=0.5, bar=0.9, ranks="suspicion"),
                         Metric("forgotten", chance=0.0, bar=0.5)))
    assert unscored_metrics(game, _all_quick_scores(game)) == ["auroc", "forgotten"]
    assert unscored_metrics(game, {"error", "suspicion"}) == ["forgotten"]


def test_play_refuses_unknown_metrics_and_non_finite_scores() -> None:
    with pytest.raises(GameError, match="unknown metric"):
        _toy(score=lambda answer, planted: {"eror": 0.0}).play("oracle", {"seed": 0, "n": 2})
    with pytest.raises(GameError, match="finite"):
        _toy(score=lambda answer, planted: {"error": math.inf}).play("oracle", {"seed": 0, "n": 2})
    ranked = _toy(metrics=(Metric("auroc", chance=0.5, bar=0.9, ranks="suspicion"),),
                  score=lambda answer, planted: {"suspicion": 0.3})
    assert ranked.play("oracle", {"seed": 0, "n": 2}) == {"suspicion": 0.3}  # a ranked per-case score is known


def test_a_game_is_declared_consistently(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # leave the real registry as found
    with pytest.raises(GameError, match="baselines"):
        _toy(baselines=frozenset({"coin"}))
    with pytest.raises(GameError, match="unique metric names"):
        _toy(metrics=(Metric("error", 0.5, 0.1), Metric("error", 0.5, 0.2)))
    game = _toy(name="toy-registered")
    assert register(game) is game and register(game) is game  # registering twice is harmless
    with pytest.raises(GameError, match="two games"):
        register(_toy(name="toy-registered"))


# ---- helpers with closed-form answers ----------------------------------------------------------------


def test_mask_iou_closed_form() -> None:
    planted = torch.zeros(5, 5)
    planted[1:3, 1:3] = 1  # 4 pixels
    assert mask_iou(planted * 0.7, planted) == 1.0
    shifted = torch.zeros(5, 5)
    shifted[1:3, 2:4] = 1  # overlaps 2 of 4: IoU 2 / 6
    assert mask_iou(shifted, planted) == pytest.approx(2 / 6)
    assert mask_iou(-planted, planted) == 0.0  # the 4 smallest pixels are elsewhere


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


def test_trojan_detection_plays_every_family_and_scores_two_target_recall() -> None:
    """Issue #11: warp and two-patch cases beside patch, blend and clean; the audit searches every planted family;
    a two-patch model's recall counts each planted target once (oracle: hand-counted sets)."""
    from seethrough.bench.games import trojan

    game = GAMES["trojan-detection"]
    quick = game.cases(0, True)
    assert [c["trojan"] for c in quick] == ["patch", "blend", "warp", "two-patch", "none"]
    assert {c["arch"] for c in quick} == {"mlp"} and {c["arch"] for c in game.cases(0, False)} == {"mlp", "cnn"}
    assert set(trojan.AUDIT_FAMILIES) == {c["trojan"] for c in quick} - {"two-patch", "none"}
    assert game.metric("mask_iou_patch").bar == 0.6 and game.metric("mask_iou_identifiable_patch").bar == 0.7
    assert game.metric("auroc_warp").bar == 0.9 and game.metric("target_recall_two_patch").bar == 0.9
    planted = tuple(trojan.Trigger(torch.zeros(2, 2), torch.zeros(1, 2, 2), k) for k in (3, 7))
    assert [trojan.target_recall(named, planted) for named in ((), (3,), (7, 3), (3, 3, 1), (1, 2))] == [
        0.0, 0.5, 1.0, 0.5, 0.0]
