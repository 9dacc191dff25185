"""The sae-dictionary game's scoring (issue #14): the answer key itself scores perfectly, absorption is what
its definition says on a planted absorbing answer, and every case kind scores its own metrics."""

from __future__ import annotations

import torch

from seethrough.bench.games import GAMES
from seethrough.bench.games.sae import DictionaryAnswer, DictionaryPlanted
from seethrough.bench.zoo.dictionaries import hierarchical_dictionary_data

GAME = GAMES["sae-dictionary"]


def _planted() -> DictionaryPlanted:
    data = hierarchical_dictionary_data(0, n_features=64, d=32, mean_l0=5.0, n_parents=4, n_samples=3000)
    return DictionaryPlanted(data.activations[:1000], data.activations[1000:], data.codes[1000:], data.dictionary,
                             64, 5, "hierarchy", data.parent_of)


def test_the_answer_key_scores_perfectly_and_has_no_absorption() -> None:
    planted = _planted()
    key = DictionaryAnswer(planted.dictionary, planted.held_out_codes, 1.0, other_decoder=planted.dictionary)
    scores = GAME.score(key, planted)
    assert scores == {"absorption": 0.0, "seed_stability": 1.0, "dead_fraction": 0.0, "hierarchy_recovered": 1.0}
    plain = DictionaryPlanted(planted.train, planted.held_out, planted.held_out_codes, planted.dictionary, 64, 5)
    assert GAME.score(key, plain) == {"mmcs": 1.0, "recovered": 1.0, "firing_f1": 1.0, "explained_variance": 1.0}


def test_a_parent_latent_that_never_fires_is_fully_absorbed() -> None:
    planted = _planted()
    codes = planted.held_out_codes.clone()
    parents = torch.nonzero(planted.parent_of >= 0).flatten()
    codes[:, planted.parent_of[parents].unique()] = 0  # the parents' latents are silent: children absorb them
    answer = DictionaryAnswer(planted.dictionary, codes, 1.0, other_decoder=planted.dictionary)
    scores = GAME.score(answer, planted)
    assert scores["absorption"] == 1.0 and scores["dead_fraction"] == 4 / 64


def test_quick_cases_cover_the_three_settings() -> None:
    assert [c["setting"] for c in GAME.cases(0, True)] == ["plain", "hierarchy", "toy"]
    assert GAME.cases(0, True)[2]["sparsities"] == [0.7, 0.9]  # quick: the dense and the best setting
    assert GAME.cases(0, False)[2]["sparsities"] == [0.7, 0.9, 0.99]  # the full run keeps the whole sweep
    assert GAME.cases(0, True)[2]["n_features"] == GAME.cases(0, False)[2]["n_features"] == 40
