"""The planted-modules game's lesion arm on one seed: verdicts against the measured truth (slow: trains zoo models)."""

from __future__ import annotations

import pytest
import torch

from seethrough.bench.games import modules as game


@pytest.mark.slow
def test_lesion_arm_on_seed_0() -> None:
    for case in game._cases(0, True):
        planted = game._build(case)
        scores = game._score(game._spectral(planted, torch.Generator()), planted)
        assert scores["lesion_correct"] == 1.0, (case, scores)
        if case.get("modular_training"):
            assert planted.specialised and scores["trained_dissociation"] >= 3 and scores["trained_z"] <= -5
        elif not case["dense"]:
            assert planted.specialised and scores["dissociation"] >= 3 and scores["ari"] >= 0.9
        else:
            assert not planted.specialised
