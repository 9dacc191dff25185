"""TCAV over several concepts with and without a multiple-testing correction (issue #13 item 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import seeded
from torch import nn

from seethrough.core import InputError
from seethrough.evidence import benjamini_hochberg
from seethrough.representations import ConceptTests, tcav, tcav_concepts


class _ConceptReader(nn.Module):
    """``hidden`` copies the input; logit 1 is ``tanh(h0) + ½ Σ_{k≥1} h_k²`` (see test_concepts.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(6, 6)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.eye(6))
            self.hidden.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(x)
        return torch.stack([torch.zeros_like(h[:, 0]), torch.tanh(h[:, 0]) + 0.5 * (h[:, 1:] ** 2).sum(1)], 1)


def _holm_by_definition(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's step-down procedure as stated: reject p_(1), p_(2), ... while p_(j) <= alpha / (m - j + 1)."""
    order = np.argsort(p, kind="stable")
    reject = np.zeros(len(p), dtype=bool)
    for j, i in enumerate(order):
        if p[i] > alpha / (len(p) - j):
            break
        reject[i] = True
    return reject


def _concepts(g: torch.Generator) -> dict[str, torch.Tensor]:
    used = torch.randn(30, 6, generator=g) * 0.3 + torch.tensor([2.0, 0, 0, 0, 0, 0])
    return {"used": used, "noise a": torch.randn(30, 6, generator=g), "noise b": torch.randn(30, 6, generator=g)}


def test_each_concept_is_tcav_with_its_seed_and_the_corrections_match_their_definitions() -> None:
    model = _ConceptReader().eval()
    g = seeded(0)
    concepts, pool, inputs = _concepts(g), torch.randn(200, 6, generator=g), torch.randn(40, 6, generator=g)
    r = tcav_concepts(model, concepts, pool, "hidden", inputs, 1, n_random=59, n_runs=5, seed=3)
    assert isinstance(r, ConceptTests) and list(r.results) == list(concepts)
    for i, (name, concept) in enumerate(concepts.items()):
        alone = tcav(model, concept, pool, "hidden", inputs, 1, n_random=59, n_runs=5, seed=3 + i)
        assert r.results[name].p_value == alone.p_value and r.results[name].score == alone.score
    p = np.array([x.p_value for x in r.results.values()])
    np.testing.assert_allclose(r.q_bh, benjamini_hochberg(p))
    assert all(h >= q - 1e-12 for h, q in zip(r.p_holm, p, strict=True))  # a correction never lowers a p-value
    assert r.significant["used"] and r.significant_holm["used"] and r.significant_bh["used"]
    frame = r.to_frame()
    assert list(frame["n_random"]) == [59] * 3 and set(frame.columns) >= {"p_value", "p_holm", "q_bh"}


def test_holm_adjusted_p_values_reject_exactly_what_the_step_down_procedure_rejects() -> None:
    model = _ConceptReader().eval()
    g = seeded(1)
    r = tcav_concepts(model, _concepts(g), torch.randn(100, 6, generator=g), "hidden", torch.randn(20, 6, generator=g),
                      1, n_random=59, n_runs=2)
    p = np.array([x.p_value for x in r.results.values()])
    assert len(set(p.tolist())) > 1  # distinct p-values, so the step-down order matters
    for alpha in np.linspace(0.01, 0.5, 50):
        decided = np.array(r.p_holm) <= alpha
        assert (decided == _holm_by_definition(p, alpha)).all()


def test_too_few_random_runs_for_the_correction_warns_and_bad_input_is_refused() -> None:
    model = _ConceptReader().eval()
    g = seeded(2)
    concepts = _concepts(g)
    with pytest.warns(UserWarning, match="can reject none"):
        tcav_concepts(model, concepts, torch.randn(60, 6, generator=g), "hidden", torch.randn(10, 6, generator=g), 1,
                      n_random=19, n_runs=1)
    with pytest.raises(InputError, match="non-empty mapping"):
        tcav_concepts(model, {}, torch.randn(60, 6), "hidden", torch.randn(10, 6), 1)
