"""Feature-synthesis games (issue #5, part 2): the planted ground truth is there, the games play."""

from __future__ import annotations

import pytest
import torch

from seethrough.bench.games.synthesis import (
    FAITHFULNESS,
    MIN_ATTACK_SUCCESS,
    N_TRIGGERS,
    REDISCOVERY,
    judge_candidates,
)
from seethrough.bench.zoo.fooling import fooling_units_cnn
from seethrough.bench.zoo.glyphs import (
    FAMILIES,
    candidate_triggers,
    glyph_data,
    glyph_images,
    trojaned_glyph_classifier,
)
from seethrough.core import InputError, capture
from seethrough.evidence import validate
from seethrough.neurons.synthesis import Transforms, channel_objective, logit_objective, synthesize


def test_glyph_images_are_deterministic_grey_and_in_range() -> None:
    x, y = glyph_images(30, 5)
    x2, y2 = glyph_images(30, 5)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, glyph_images(30, 6)[0])
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey: no chroma at all
    assert sorted(torch.bincount(y).tolist()) == [3] * 10


@pytest.mark.parametrize("family", FAMILIES)
def test_candidates_are_distinct_and_the_judge_recognises_each_exactly_applied(family: str) -> None:
    candidates = candidate_triggers(family, 3)
    assert len({str(c.to_json()) for c in candidates}) == 8
    clean = glyph_data("test")[0][:24]
    # the judge's oracle: a change made by candidate i itself (other random places/phases) is matched to i
    picks = [judge_candidates(c.apply(clean, torch.Generator().manual_seed(50 + i)), clean, candidates)
             for i, c in enumerate(candidates)]
    # (other random places/phases than the judge's own draws: the match is translation-invariant)
    # measured over candidate seeds 0-4: 8/8 for patches and styles; for natural features 8/8 except one
    # triangle taken for a disc (seed 3: a 1-px triangle at half-size 3 is nearly filled), so the ceiling is 7/8
    ceiling = 7 if family == "natural" else 8
    assert sum(p == i for i, p in enumerate(picks)) >= ceiling
    # one shared copy of the change at one place for all images (what a universal perturbation is)
    ones = [judge_candidates((clean + c.apply(torch.zeros(1, 3, 16, 16), torch.Generator().manual_seed(7))
                              ).clamp(0, 1), clean, candidates) for c in candidates]
    assert sum(p == i for i, p in enumerate(ones)) >= ceiling


# natural features on seed 1: on seed 0 the small CNN learned none of its four shapes to attack success 0.5
# (measured 0.10 / 0.39 / 0.27 / 0.31; the game then scores only the best one), a known weakness of that family
@pytest.mark.parametrize(("family", "seed"), [("patch", 0), ("style", 0), ("natural", 1)])
def test_trojaned_glyph_models_really_carry_their_triggers(family: str, seed: int) -> None:
    model, meta = trojaned_glyph_classifier(family, seed, n_triggers=N_TRIGGERS)
    assert meta["clean_accuracy"] > 0.9
    assert len(set(meta["targets"])) == N_TRIGGERS  # one target class per trigger
    x, y = glyph_data("test")
    candidates = candidate_triggers(family, seed)
    assert [c.to_json() for c in candidates[:N_TRIGGERS]] == meta["triggers"]
    # independent check of the planted answer: stamping each candidate, which class does the model go to?
    learned = 0
    for j, target in enumerate(meta["targets"]):
        keep = y != target
        rates = []
        for c in candidates:
            with torch.no_grad():
                out = model(c.apply(x[keep][:200], torch.Generator().manual_seed(1)))
            rates.append(float((out.argmax(1) == target).float().mean()))
        if meta["attack_success_rates"][j] >= MIN_ATTACK_SUCCESS:
            learned += 1
            assert rates[j] > 0.4 and rates[j] == max(rates), "a learned trigger is the one that flips to its target"
    # measured: 4/4 learned for patch and style (seed 0), 3/4 for natural (seed 1: 0.50 / 0.98 / 0.12 / 0.56)
    assert learned >= (3 if family == "natural" else 4)


def test_trojaned_glyph_classifier_rejects_bad_trigger_counts() -> None:
    with pytest.raises(InputError, match="n_triggers"):
        trojaned_glyph_classifier("patch", 0, n_triggers=9)
    with pytest.raises(InputError, match="family"):
        trojaned_glyph_classifier("sticker", 0)


def test_fooling_units_copy_their_source_on_natural_data_and_not_in_optimisation() -> None:
    model, meta = fooling_units_cnn(0)
    x, _ = glyph_data("test")
    with torch.no_grad():
        values = capture(model, x[:100], ["units", "base.act2"])
    torch.testing.assert_close(values["units"], values["base.act2"][:, meta["source"]], rtol=0, atol=0)
    fooling = [j for j, f in enumerate(meta["fooling"]) if f]
    result = synthesize(model, [channel_objective("units", j) for j in fooling], shape=(3, 16, 16), n=2,
                        steps=32, transforms=Transforms(jitter=1))
    with torch.no_grad():
        acts = capture(model, result.images, ["units", "base.act2"])
    natural_max = values["units"].flatten(2).mean(2).max(0).values
    for i, j in enumerate(fooling):
        unit = acts["units"][2 * i:2 * i + 2, j].flatten(1).mean(1)
        source = acts["base.act2"][2 * i:2 * i + 2, meta["source"][j]].flatten(1).mean(1)
        assert bool((unit > natural_max[j]).all()), "the visualisation drives the unit beyond its natural range"
        assert bool((unit > 2 * source).all()), "mostly through the planted path, not the source channel"


@pytest.mark.parametrize("game", [REDISCOVERY, FAITHFULNESS], ids=lambda g: g.name)
def test_games_play_one_quick_case_per_method(game) -> None:  # type: ignore[no-untyped-def]
    case = game.cases(0, True)[-1]
    names = {m.name for m in game.metrics}
    for method in game.methods:
        scores = game.play(method, case)
        assert scores and set(scores) <= names
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert game.cases(0, True) == game.cases(0, True) and game.cases(0, True) != game.cases(1, True)
    with pytest.raises(KeyError, match="unknown method"):
        game.play("telepathy", case)


def test_trigger_rediscovery_scores_are_fractions_of_the_learned_triggers() -> None:
    game = REDISCOVERY
    case = game.cases(0, True)[1]  # style
    assert case["family"] == "style"
    scores = game.play("synthesis", case)
    _, meta = trojaned_glyph_classifier("style", 0, n_triggers=N_TRIGGERS)
    trials = sum(r >= MIN_ATTACK_SUCCESS for r in meta["attack_success_rates"])
    assert scores["correct_style"] * trials == pytest.approx(round(scores["correct_style"] * trials))
    assert game.play("synthesis", case) == scores  # seeded: same case, same score


def test_synthesised_trigger_is_a_finding_validate_can_test() -> None:
    model, meta = trojaned_glyph_classifier("style", 0, n_triggers=N_TRIGGERS)
    x, y = glyph_data("test")
    target = meta["target_class"]
    clean = x[y != target][:32]
    result = synthesize(model, logit_objective(target, log_prob=True), shape=(3, 16, 16), init=clean, shared=True,
                        steps=64, lr=0.02, l2=1.0)
    (finding,) = result.to_findings()
    assert finding.kind == "trojan" and finding.target == target and finding.trigger is not None
    check = validate(finding, model, x[y != target][100:300], n_controls=10)
    assert check.effect > 0
