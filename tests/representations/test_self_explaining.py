"""Concept bottlenecks, the leakage test and prototype networks (issue #14 item 3).

Oracles: a task-blind concept predictor is the same network whatever the head (sequential and
independent share it); an intervention writes exactly the true concepts; a hand-built leaky
representation (the nuisance bit written into a concept's confidence) against an honest one; the
planted builds' own held-out accuracy against the true concepts' ceiling; projection makes every
prototype an own-class training patch; the receptive box from autograd.
"""

from __future__ import annotations

import pytest
import torch

from seethrough.bench.zoo.bottleneck import concept_bottleneck, concept_task, marked_images
from seethrough.core import InputError
from seethrough.representations import (
    ConceptBottleneck,
    PrototypeNetwork,
    intervene,
    leakage_test,
    receptive_box,
    similarity_maps,
    train_concept_bottleneck,
    train_prototype_network,
)


def test_task_blind_builds_share_their_concept_predictor_and_joint_builds_do_not() -> None:
    t = concept_task(3, 600)
    kw = {"epochs": 5, "seed": 0}
    seq = train_concept_bottleneck(t.inputs, t.concepts, t.labels, mode="sequential", **kw)
    ind = train_concept_bottleneck(t.inputs, t.concepts, t.labels, mode="independent", head_input="logits", **kw)
    joint = train_concept_bottleneck(t.inputs, t.concepts, t.labels, mode="joint", **kw)
    for a, b in zip(seq.concepts.parameters(), ind.concepts.parameters(), strict=True):
        assert torch.equal(a, b)  # the label never reached the concept predictor
    assert not all(torch.equal(a, b) for a, b in zip(seq.concepts.parameters(), joint.concepts.parameters(), strict=True))
    assert not seq.training and all(p.grad is None for p in seq.parameters())


def test_intervention_writes_the_true_concepts() -> None:
    torch.manual_seed(0)
    model = ConceptBottleneck(6, 3, 2, hidden=8, head_input="probabilities")
    x, c = torch.randn(10, 6), torch.randint(0, 2, (10, 3)).float()
    with torch.no_grad():
        expected = model.head(torch.sigmoid(8 * c - 4))
        own = model(x)
    assert torch.allclose(intervene(model, x, c, [0, 1, 2]), expected)
    assert torch.allclose(intervene(model, x, c, []), own)
    with pytest.raises(InputError, match="concept indices"):
        intervene(model, x, c, [3])
    with pytest.raises(InputError, match=r"\(n, 6\)"):
        intervene(model, x[:, :5], c, [0])


class _Fixed(ConceptBottleneck):
    """A 'bottleneck' whose concept logits are given: the leakage test's hand-made oracle."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__(1, logits.shape[1], 2)
        self.fixed = logits

    def concept_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fixed


def test_leakage_test_finds_a_nuisance_hidden_in_confidence_and_not_in_honest_outputs() -> None:
    t = concept_task(4, 3000)
    honest = 4 * (2 * t.concepts - 1)  # right values, constant confidence
    leaky = honest * (1 + t.nuisance[:, None])  # right values, the nuisance bit in how sure they are
    x = torch.zeros(3000, 1)
    clean = leakage_test(_Fixed(honest), x, t.concepts, t.labels)
    leak = leakage_test(_Fixed(leaky), x, t.concepts, t.labels)
    assert abs(clean.leakage) < 0.03 and clean.hard_accuracy == pytest.approx(clean.truth_accuracy, abs=0.03)
    assert leak.leakage > 0.15 and leak.hard_accuracy < leak.truth_accuracy + 0.03  # only the confidence leaks
    assert list(leak.to_frame()["accuracy"]) == [leak.soft_accuracy, leak.hard_accuracy, leak.truth_accuracy]


@pytest.mark.parametrize("mode, head_input, leaky", [("joint", "probabilities", True), ("joint", "logits", True),
                                                      ("sequential", "probabilities", False),
                                                      ("independent", "logits", False), ("sequential", "hard", False)])
def test_the_games_planted_builds_are_what_they_claim(mode: str, head_input: str, leaky: bool) -> None:
    _, meta = concept_bottleneck(0, mode=mode, head_input=head_input)  # the bench's seed-0 build (cached)
    assert (meta["accuracy"] > meta["ceiling"] + 0.03) == leaky  # beating the true concepts' ceiling = reading z


def test_prototypes_are_projected_onto_own_class_training_patches() -> None:
    data = marked_images(5, 240)
    model = train_prototype_network(data.images, data.labels, per_class=1, epochs=2, width=8, seed=0)
    with torch.no_grad():
        features = model.trunk(data.images)
    assert model.sources is not None and len(model.sources) == 4
    for j, source in enumerate(model.sources):
        assert int(data.labels[source.image]) == j  # one prototype per class, in class order
        assert torch.equal(model.prototypes[j], features[source.image, :, source.row, source.col])
    maps = similarity_maps(model, data.images[:3])
    assert maps.shape == (3, 4, 8, 8)
    with torch.no_grad():
        d = model.distances(data.images[:3]).flatten(2).min(2).values
        logits = torch.log((d + 1) / (d + 1e-4)) @ model.connection
    assert torch.allclose(maps.flatten(2).max(2).values @ model.connection, logits, atol=1e-5)
    assert torch.allclose(model(data.images[:3]), logits)


def test_receptive_box_matches_autograd() -> None:
    torch.manual_seed(0)
    model = PrototypeNetwork(1, 2, width=4)
    for row, col in [(0, 0), (3, 4), (7, 7)]:
        support = torch.zeros(16, 16, dtype=torch.bool)
        for _ in range(4):  # a few inputs: ReLUs switch different paths off
            x = torch.rand(1, 1, 16, 16, requires_grad=True)
            (grad,) = torch.autograd.grad(model.trunk(x)[0, :, row, col].sum(), x)
            support |= grad[0, 0] != 0
        rows, cols = torch.nonzero(support).unbind(1)
        top, left, bottom, right = receptive_box(row, col)
        assert rows.min() >= top and rows.max() <= bottom and cols.min() >= left and cols.max() <= right
        if (row, col) == (3, 4):  # an interior cell: the box is tight, every edge is reached
            assert (rows.min(), rows.max(), cols.min(), cols.max()) == (top, bottom, left, right)
