"""The layer-correspondence game (issue #13 item 3): twins compute the same function, scores have closed-form ends."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from seethrough import capture
from seethrough.bench.games import GAMES
from seethrough.bench.games.correspondence import (
    INDEX_OF_METHOD,
    QUICK_EXAMPLES,
    RANDOM_TWIN_ERROR,
    CorrespondencePlanted,
)
from seethrough.bench.zoo.correspondence import STAGES, StagedCNN, digits8, permuted_twin
from seethrough.representations import compare_sites

GAME = GAMES["layer-correspondence"]


def _inputs(n: int = 60) -> torch.Tensor:
    return digits8("test")[0][:n].double()


def test_the_twin_computes_the_same_function_with_each_stage_permuted() -> None:
    model = StagedCNN(seed=3).double().eval()
    before = copy.deepcopy(model.state_dict())
    twin, perms = permuted_twin(model, 11)
    twin = twin.double()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    x = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), rtol=0, atol=1e-12)  # float64: rounding of sums only
        va, vt = capture(model, x, list(STAGES)), capture(twin, x, list(STAGES))
    for stage, perm in perms.items():
        assert not torch.equal(perm, torch.arange(len(perm)))  # a real permutation
        torch.testing.assert_close(vt[stage], va[stage][:, perm], rtol=0, atol=1e-12)
    assert "stage5" not in perms


def test_random_twin_chance_is_the_expected_max_of_five_uniform_differences() -> None:
    gen = torch.Generator().manual_seed(0)
    u, v = torch.rand(200_000, 5, generator=gen, dtype=torch.float64), torch.rand(200_000, 5, generator=gen,
                                                                                  dtype=torch.float64)
    assert float((u - v).abs().amax(1).mean()) == pytest.approx(RANDOM_TWIN_ERROR, abs=0.002)


def test_a_network_against_itself_scores_perfectly_and_the_random_index_does_not() -> None:
    # Untrained networks (no zoo training): B = A, so every invariant index finds every depth.
    model = StagedCNN(seed=5).double().eval()
    twin, _ = permuted_twin(model, 5)
    planted = CorrespondencePlanted(model, model, twin.double(), _inputs())
    gen = torch.Generator().manual_seed(0)
    for method in ("linear CKA", "Procrustes"):
        scores = GAME.score(GAME.methods[method](planted, gen), planted)
        assert scores["depth_accuracy"] == 1.0 and scores["twin_error"] < 1e-10
    random = [GAME.score(GAME.methods["random index"](planted, torch.Generator().manual_seed(s)), planted)
              for s in range(200)]
    assert sum(r["depth_accuracy"] for r in random) / 200 == pytest.approx(0.2, abs=0.04)
    assert min(r["twin_error"] for r in random) > 1e-3


def test_cases_pair_distinct_scored_seeds() -> None:
    cases = [GAME.cases(seed, False)[0] for seed in range(10)]
    models = [c["model_a"] for c in cases] + [c["model_b"] for c in cases]
    assert len(set(models)) == 20 and min(models) >= 1000  # zoo seeds 0-5 calibrated the architecture
    assert GAME.cases(0, True)[0]["n_examples"] == QUICK_EXAMPLES <= 450  # quick inputs: held-out digits only
    assert GAME.cases(0, False)[0]["n_examples"] == 1797


@pytest.mark.parametrize("method", ["linear CKA", "PWCCA", "Procrustes"])
def test_indices_from_shared_values_match_compare_sites(method: str) -> None:
    # The methods score every index from one capture per network; compare_sites streams the
    # models itself: both must give the same matrix, best matches and twin changes.
    model_a, model_b = StagedCNN(seed=1).double().eval(), StagedCNN(seed=2).double().eval()
    twin, _ = permuted_twin(model_a, 1)
    planted = CorrespondencePlanted(model_a, model_b, twin.double(), _inputs(40))
    assert planted.values is planted.values  # captured once, then kept
    index = INDEX_OF_METHOD[method]
    with pytest.warns(UserWarning) if method == "PWCCA" else contextlib.nullcontext():  # 40 rows < widths
        answer = GAME.methods[method](planted, torch.Generator().manual_seed(0))
        sim = compare_sites(model_a, model_b, planted.inputs, STAGES, STAGES, index=index)
        twin_diag = [float(compare_sites(planted.twin_a, model_b, planted.inputs, s, s, index=index).values[0, 0])
                     for s in STAGES]
    assert answer.matches == tuple(sim.best_match().tolist())
    expected = [abs(t - float(sim.values[k, k])) for k, t in enumerate(twin_diag)]
    assert answer.twin_changes == pytest.approx(expected, abs=1e-12)

