"""Oracles for circuit_stability (issue #12 item 4: bootstrap stability of a circuit's top-k edges).

The reweighted run equals find_circuit on the resampled inputs themselves; a one-pair batch gives
identical resamples (Jaccard 1); a hand-built linear stream whose top edge depends on which of two
examples was drawn gives the Jaccard counted by hand from the documented draws.
"""

from __future__ import annotations

from itertools import combinations

import pytest
import torch
from test_circuits import READERS, WRITERS, Residual, _data, _metric
from torch import nn

from seethrough import InputError
from seethrough.subnetworks import circuit_stability, find_circuit, jaccard


def test_reweighting_equals_running_on_the_resampled_pairs() -> None:
    model = Residual(seed=3)
    clean, corrupted = _data(4)
    for method in ("exact", "eap", "eap-ig"):
        res = circuit_stability(model, clean, corrupted, _metric, writers=WRITERS, readers=READERS, k=4,
                                method=method, n_samples=3, seed=5)
        draws = torch.stack([torch.randint(0, 8, (8,), generator=g) for g in [torch.Generator().manual_seed(5)]
                             for _ in range(3)])
        assert res.draws.tolist() == draws.tolist()
        for s, idx in enumerate(draws):
            direct = find_circuit(model, clean[idx], corrupted[idx], _metric, writers=WRITERS, readers=READERS,
                                  method=method)
            assert list(res.edge_sets[s]) == direct.select(4), (method, s)


class Hand(nn.Module):
    """embed(x) = x; block(h) = (5 h1, 0); head = h0 + h1: (embed, head) matters for both examples equally,
    (embed, block) and (block, head) only for example 1 (x = (0, 1)), five times as much."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.block, self.head = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()
            self.embed.weight.copy_(torch.eye(2))
            self.block.weight[0, 1] = 5.0
            self.head.weight.fill_(1.0)

    def forward(self, x):
        h = self.embed(x)
        return self.head(h + self.block(h))


def test_hand_case_jaccard_from_the_draws() -> None:
    clean, corrupted = torch.eye(2), torch.zeros(2, 2)
    kwargs = {"writers": ["embed", "block"], "readers": ["block", "head"], "method": "exact", "seed": 3}
    for k, when_drawn, when_not in ((1, {("embed", "block")}, {("embed", "head")}),
                                    (2, {("embed", "block"), ("block", "head")}, {("embed", "head"), ("embed", "block")})):
        res = circuit_stability(Hand(), clean, corrupted, lambda out: out[:, 0], k=k, n_samples=6, **kwargs)
        # example 1 drawn at least once: the two example-1 edges score 2.5 or 5 > 1 (ties: the earlier edge);
        # never drawn: (embed, head) scores 1, the others 0
        expected = [when_drawn if 1 in row.tolist() else when_not for row in res.draws]
        assert [set(s) for s in res.edge_sets] == expected
        pairs = [jaccard(a, b) for a, b in combinations(expected, 2)]
        assert res.jaccard == pytest.approx(sum(pairs) / len(pairs))
        assert res.pairwise.diagonal().tolist() == [1.0] * 6
    assert 0.0 < res.jaccard < 1.0  # seed 3 draws both kinds of resample (else this hand case tests nothing)
    assert res.frequency[("embed", "block")] == 1.0


def test_identical_resamples_are_perfectly_stable() -> None:
    model = Residual(seed=1)
    clean, corrupted = _data(2)
    res = circuit_stability(model, clean[:1], corrupted[:1], _metric, writers=WRITERS, readers=READERS, k=3,
                            method="eap-ig", n_samples=4)
    assert res.jaccard == 1.0 and (res.pairwise == 1.0).all()
    assert sorted(f for f in res.frequency.values() if f) == [1.0, 1.0, 1.0]
    assert res.to_frame().shape == (10, 3)  # 10 edges


def test_jaccard_by_hand_and_refusals() -> None:
    assert jaccard([1, 2], [2, 3]) == 1 / 3 and jaccard([], []) == 1.0
    model = Residual()
    clean, corrupted = _data()
    kwargs = {"writers": WRITERS, "readers": READERS}
    with pytest.raises(InputError, match="k must"):
        circuit_stability(model, clean, corrupted, _metric, k=0, **kwargs)
    with pytest.raises(InputError, match="k must"):
        circuit_stability(model, clean, corrupted, _metric, k=11, **kwargs)
    with pytest.raises(InputError, match="n_samples"):
        circuit_stability(model, clean, corrupted, _metric, k=2, n_samples=1, **kwargs)
    with pytest.raises(InputError, match="method"):
        circuit_stability(model, clean, corrupted, _metric, k=2, method="magic", **kwargs)
