"""Concept vectors and TCAV with a calibrated null (issue #13, item 2)."""

from __future__ import annotations

import pytest
import torch
from models import seeded
from scipy.stats import binom
from torch import nn

from seethrough import patch
from seethrough.core import InputError, add_direction
from seethrough.representations import TCAVResult, directional_derivatives, fit_cavs, tcav


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # the test's own model; the function under test never touches the global RNG
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3)).eval()


def _hand_derivatives(model: nn.Module, inputs: torch.Tensor, site: str, target: int,
                      direction: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """The slow reference: one example at a time, central finite differences through `patch`."""
    out = []
    for i in range(len(inputs)):
        x = inputs[i:i + 1]
        with torch.no_grad():
            up = patch(model, x, {site: add_direction(direction.to(x.dtype), alpha=eps)})[0, target]
            down = patch(model, x, {site: add_direction(direction.to(x.dtype), alpha=-eps)})[0, target]
        out.append(float((up - down) / (2 * eps)))
    return torch.tensor(out, dtype=torch.float64)


def test_directional_derivatives_match_a_hand_loop_of_finite_differences() -> None:
    model = _mlp().double()  # float64, so central differences with a small step are accurate
    x = torch.randn(12, 6, generator=seeded(1), dtype=torch.float64)
    directions = torch.randn(3, 12, generator=seeded(2), dtype=torch.float64)
    with torch.no_grad():
        fast = directional_derivatives(model, x, "0", 1, directions)
    for j in range(3):
        # step 1e-6 in float64: O(1e-12) truncation, O(1e-10) rounding error (no ReLU kink within a step)
        hand = _hand_derivatives(model, x, "0", 1, directions[j], eps=1e-6)
        torch.testing.assert_close(fast[j], hand, rtol=1e-6, atol=1e-8)


def test_tcav_scores_are_fractions_of_positive_directional_derivatives_by_hand() -> None:
    model = _mlp()
    g = seeded(3)
    concept, random, inputs = torch.randn(20, 6, generator=g) + 1.0, torch.randn(60, 6, generator=g), \
        torch.randn(15, 6, generator=g)
    r = tcav(model, concept, random, "0", inputs, 2, n_random=6)
    assert isinstance(r, TCAVResult)
    for j in range(6):
        signs = _hand_derivatives(model, inputs, "0", 2, r.concept_cavs[j]) > 0
        assert float(signs.double().mean()) == pytest.approx(float(r.concept_scores[j]), abs=1e-12)
    assert r.score == pytest.approx(float(r.concept_scores.mean()))
    expected_p = (1 + int(((r.random_scores - 0.5).abs() >= abs(r.score - 0.5) - 1e-12).sum())) / 7
    assert r.p_value == pytest.approx(expected_p) and r.significant == (r.p_value <= 0.05)


def test_fit_cavs_separates_each_problem_like_a_single_fit() -> None:
    g = seeded(4)
    shift = torch.randn(5, 1, 8, generator=g) * 3
    pos = torch.randn(5, 30, 8, generator=g) + shift
    neg = torch.randn(5, 30, 8, generator=g)
    together = fit_cavs(pos, neg)
    alone = torch.cat([fit_cavs(pos[i:i + 1], neg[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)  # separable objective, same optimum
    assert torch.allclose(together.norm(dim=1), torch.ones(5, dtype=torch.float64))
    cosines = torch.nn.functional.cosine_similarity(together, shift[:, 0].double())
    assert float(cosines.min()) > 0.8


class _ConceptReader(nn.Module):
    """``hidden`` copies the input; logit 1 is ``tanh(h0) + ½ Σ_{k≥1} h_k²``, logit 0 is 0.

    The gradient of logit 1 at ``hidden`` is ``(tanh'(h0), h1, ..., h5)``: along the concept
    direction e0 it is positive for every input; along a random direction its sign varies by input.
    """

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(6, 6)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.eye(6))
            self.hidden.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(x)
        return torch.stack([torch.zeros_like(h[:, 0]), torch.tanh(h[:, 0]) + 0.5 * (h[:, 1:] ** 2).sum(1)], 1)


def _concept_reader() -> nn.Module:
    return _ConceptReader().eval()


def test_a_concept_the_target_uses_is_significant() -> None:
    model = _concept_reader()
    g = seeded(5)
    concept = torch.randn(30, 6, generator=g) * 0.3 + torch.tensor([2.0, 0, 0, 0, 0, 0])
    r = tcav(model, concept, torch.randn(200, 6, generator=g), "hidden", torch.randn(40, 6, generator=g), 1)
    assert r.score >= 0.95 and r.significant and r.p_value == pytest.approx(1 / 21)
    opposite = tcav(model, -concept, torch.randn(200, 6, generator=g), "hidden", torch.randn(40, 6, generator=g), 1)
    assert opposite.score <= 0.2 and opposite.significant  # two-sided: a concept that lowers the target


def test_meaningless_concepts_are_significant_at_most_alpha_of_the_time() -> None:
    """The calibration claim of DESIGN.md §6 with the default n_random = 20 and alpha = 0.05.

    60 concepts, each 30 fresh examples from the random pool's distribution, on a ReLU MLP. If the
    test holds its level, the count of significant concepts is at most Binomial(60, 0.05); the bound
    is that distribution's 99.9% quantile (a calibrated test fails this 0.1% of the time).
    """
    model = _mlp(1)
    g = seeded(6)
    pool, inputs = torch.randn(200, 6, generator=g), torch.randn(50, 6, generator=g)
    n_concepts = 60
    hits = sum(tcav(model, torch.randn(30, 6, generator=g), pool, "0", inputs, 0, seed=i).significant
               for i in range(n_concepts))
    bound = int(binom.ppf(0.999, n_concepts, 0.05))
    assert hits <= bound, f"{hits}/{n_concepts} meaningless concepts significant (bound {bound})"


def test_tcav_refuses_bad_arguments_before_work() -> None:
    model = _mlp()
    x = torch.randn(10, 6)
    with pytest.raises(InputError, match="n_random"):
        tcav(model, x, x, "0", x, 0, n_random=0)
    with pytest.raises(InputError, match="pool"):
        tcav(model, x, x[:1], "0", x, 0)
    with pytest.raises(InputError, match="out of range"):
        tcav(model, x, x, "0", x, 7, n_random=2)


def test_same_seed_same_result() -> None:
    model = _mlp()
    g = seeded(7)
    args = (torch.randn(10, 6, generator=g), torch.randn(30, 6, generator=g), "0", torch.randn(8, 6, generator=g), 0)
    a, b = tcav(model, *args, n_random=4, seed=3), tcav(model, *args, n_random=4, seed=3)
    assert torch.equal(a.random_scores, b.random_scores) and a.score == b.score


def test_fewer_runs_per_statistic_keep_one_null_statistic_per_random_set() -> None:
    model = _mlp()
    g = seeded(8)
    r = tcav(model, torch.randn(10, 6, generator=g), torch.randn(30, 6, generator=g), "0",
             torch.randn(8, 6, generator=g), 0, n_random=9, n_runs=3)
    assert r.concept_scores.shape == (3,) and r.random_scores.shape == (9,) and r.concept_cavs.shape == (3, 12)
    assert r.p_value >= 1 / 10


def test_the_cosine_statistic_is_the_mean_cosine_of_cav_and_gradient_by_hand() -> None:
    model = _mlp()
    g = seeded(9)
    concept, random, inputs = torch.randn(20, 6, generator=g) + 1.0, torch.randn(60, 6, generator=g), \
        torch.randn(15, 6, generator=g)
    r = tcav(model, concept, random, "0", inputs, 2, n_random=6, n_runs=4, statistic="cosine")
    sign = tcav(model, concept, random, "0", inputs, 2, n_random=6, n_runs=4)
    assert r.statistic == "cosine" and r.score == sign.score  # the TCAV score does not depend on the statistic
    torch.testing.assert_close(r.concept_cavs, sign.concept_cavs)
    # the gradients along the axes (directional_derivatives matches finite differences, tested above)
    grads = directional_derivatives(model, inputs, "0", 2, torch.eye(12)).T  # (inputs, 12)
    cosines = (r.concept_cavs @ grads.T) / grads.norm(dim=1)
    assert r.observed == pytest.approx(float(cosines.mean()), abs=1e-12)
    expected_p = (1 + int((r.random_scores.abs() >= abs(r.observed) - 1e-12).sum())) / 7
    assert r.p_value == pytest.approx(expected_p)
    with pytest.raises(InputError, match="statistic"):
        tcav(model, concept, random, "0", inputs, 2, n_random=2, statistic="magnitude")


def test_the_cosine_statistic_detects_the_used_concept_and_a_significant_result_is_a_validated_finding() -> None:
    from seethrough.evidence import validate

    model = _concept_reader()
    g = seeded(10)
    concept = torch.randn(30, 6, generator=g) * 0.3 + torch.tensor([2.0, 0, 0, 0, 0, 0])
    r = tcav(model, concept, torch.randn(200, 6, generator=g), "hidden", torch.randn(40, 6, generator=g), 1,
             statistic="cosine")
    assert r.significant and r.observed > 0.2
    (finding,) = r.to_findings()
    assert finding.kind == "direction" and finding.target == 1 and torch.equal(finding.direction, r.cav)
    # projecting the concept direction out lowers the target on inputs that show the concept; random directions less
    held_out = torch.randn(100, 6, generator=g) * 0.3 + torch.tensor([1.0, 0, 0, 0, 0, 0])
    v = validate(finding, model, held_out, n_controls=30, seed=2)
    assert v.validated and v.effect > 0.1


@pytest.mark.slow
def test_meaningless_concepts_are_significant_at_most_alpha_of_the_time_with_the_cosine_statistic() -> None:
    """The calibration claim for ``statistic="cosine"``: the same 60 concepts and bound as the sign test."""
    model = _mlp(1)
    g = seeded(6)
    pool, inputs = torch.randn(200, 6, generator=g), torch.randn(50, 6, generator=g)
    n_concepts = 60
    hits = sum(tcav(model, torch.randn(30, 6, generator=g), pool, "0", inputs, 0, seed=i,
                    statistic="cosine").significant for i in range(n_concepts))
    bound = int(binom.ppf(0.999, n_concepts, 0.05))
    assert hits <= bound, f"{hits}/{n_concepts} meaningless concepts significant (bound {bound})"
