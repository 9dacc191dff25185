"""Games for self-explaining models (Representations / self-explaining): concept bottlenecks and prototypes.

* ``planted-concepts``: synthetic data whose four binary concepts decide the label (a parity of two
  of them) up to a hidden nuisance bit that flips 25% of labels and is visible in the inputs
  (`zoo.bottleneck.concept_task`): the true concepts cap accuracy at 0.75, so a bottleneck that beats
  that ceiling reads the nuisance through its concepts. Builds: joint training with a soft head
  (probabilities or logits: the task's gradient reaches the concept logits, the planted *leaky*
  builds; each one's held-out accuracy beats the ceiling, checked in
  tests/representations/test_self_explaining.py) and task-blind builds (sequential with
  probabilities or hard concepts, independent with logits: *clean*; the three head inputs
  compared). ``bottleneck`` is scored on concept accuracy and on intervention efficacy (on the
  held-out examples with a wrongly predicted concept, every concept set to its true value: does the
  output then follow the concepts' rule?); ``leakage-test`` (`representations.leakage_test`) must rank
  leaky builds above clean ones (AUROC over builds). Baselines: the model's own accuracy as the leak
  score, and a random score. The own-accuracy baseline separates the builds as well here (leaky
  builds are more accurate by construction: they read the nuisance); what the leakage test adds is
  *why*, from one build alone: its concept outputs carry more than the true concepts do.
* ``planted-prototypes``: 16×16 images whose class is told only by a class-specific 3×3 mark at a
  random place, with a distractor mark shared by all classes elsewhere (`zoo.bottleneck.marked_images`);
  a ProtoPNet-style network (`representations.train_prototype_network`, 2 prototypes per class,
  projected onto training patches). ``mark_hits``: for each prototype, on held-out images of its class,
  the share whose most similar cell sees the class mark's centre (the cell's 8×8 receptive field),
  averaged over prototypes; ``source_hits``: the share of prototypes whose projection source patch
  sees its image's mark. Baselines: a random cell and the brightest cell (a bright 3×3 blob is as
  likely the distractor).

Settings (concept weight 1, 60 epochs; leakage heads: MLPs with 64 hidden units; prototype cluster
0.8 and separation 0.08, 30 epochs) were chosen on seeds 100 and 101 (prototypes: held-out accuracy
0.998 and 0.975, mark hits 0.85 and 0.75; a first leakage head, gradient-boosted trees, overfitted the
soft outputs and gave clean builds −0.10, as large as the real leak: replaced); the bench scores seeds
0, 1, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...representations.bottleneck import ConceptBottleneck, intervene, leakage_test
from ...representations.prototypes import PrototypeNetwork, receptive_box, similarity_maps
from ..zoo.bottleneck import MarkedImages, concept_bottleneck, concept_task, marked_images, prototype_network
from .base import Game, Metric, register

__all__ = ["ConceptsPlanted", "PrototypesPlanted"]

#: (mode, head_input, leaky): the planted builds of `planted-concepts`.
BUILDS = (("joint", "probabilities", True), ("joint", "logits", True), ("sequential", "probabilities", False),
          ("independent", "logits", False), ("sequential", "hard", False))


@dataclass(frozen=True, eq=False)
class ConceptsPlanted:
    """One build: the bottleneck, held-out data (inputs, true concepts, labels), its accuracy and the ceiling."""

    model: ConceptBottleneck
    inputs: Tensor
    concepts: Tensor
    labels: Tensor
    accuracy: float
    ceiling: float
    seed: int


@dataclass(frozen=True)
class ConceptsAnswer:
    scores: Mapping[str, float]


def _concept_cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "mode": mode, "head_input": head, "leak": leak} for mode, head, leak in BUILDS]


def _concept_build(case: Mapping[str, Any]) -> ConceptsPlanted:
    model, meta = concept_bottleneck(case["seed"], mode=case["mode"], head_input=case["head_input"])
    held = concept_task(case["seed"] + 10_000, 2000)
    return ConceptsPlanted(model, held.inputs, held.concepts, held.labels, meta["accuracy"], meta["ceiling"],
                           case["seed"])


def _bottleneck(planted: ConceptsPlanted, generator: torch.Generator) -> ConceptsAnswer:
    with torch.no_grad():
        predicted = (planted.model.concept_logits(planted.inputs) > 0).float()
    rule = (planted.concepts[:, 0] != planted.concepts[:, 1]).long()
    fixed = intervene(planted.model, planted.inputs, planted.concepts, range(planted.concepts.shape[1])).argmax(1)
    wrong = (predicted != planted.concepts).any(1)  # the examples an expert's intervention is for
    return ConceptsAnswer({"concept_accuracy": float((predicted == planted.concepts).float().mean()),
                           "intervention_efficacy": float((fixed[wrong] == rule[wrong]).float().mean())})


def _leakage(planted: ConceptsPlanted, generator: torch.Generator) -> ConceptsAnswer:
    result = leakage_test(planted.model, planted.inputs, planted.concepts, planted.labels, seed=planted.seed)
    return ConceptsAnswer({"leak_score": result.leakage})


def _own_accuracy(planted: ConceptsPlanted, generator: torch.Generator) -> ConceptsAnswer:
    return ConceptsAnswer({"leak_score": planted.accuracy})


def _random_score(planted: ConceptsPlanted, generator: torch.Generator) -> ConceptsAnswer:
    return ConceptsAnswer({"leak_score": float(torch.rand(1, generator=generator))})


def _concept_score(answer: ConceptsAnswer, planted: ConceptsPlanted) -> dict[str, float]:
    return dict(answer.scores)


CONCEPTS = register(Game(
    name="planted-concepts",
    item="Representations / self-explaining models (concept bottlenecks)",
    description=("Four binary concepts decide the label (parity of two) up to a hidden nuisance bit that flips 25% of "
                 "labels and is visible in the inputs: the true concepts cap accuracy at 0.75. Builds: joint training "
                 "with a probability or logit head (planted leaky) and task-blind sequential/independent builds "
                 "(clean). Scored: concept accuracy, intervention efficacy (all concepts fixed: the output follows "
                 "their rule), and the AUROC of the leakage test over leaky vs clean builds."),
    metrics=(
        Metric("concept_accuracy", chance=0.5, bar=0.9, description="predicted concepts equal the true ones"),
        Metric("intervention_efficacy", chance=0.5, bar=0.9,
               description="on examples with a wrongly predicted concept, the share whose output follows the "
                           "concepts' rule once every concept is set to its true value"),
        Metric("leakage_auroc", chance=0.5, bar=0.9, ranks="leak_score", positive=(("leak", True),),
               negative=(("leak", False),),
               description="leakage score of leaky builds against clean ones (each leaky build's share of clean "
                           "builds it outranks; the mean is the AUROC)"),
    ),
    cases=_concept_cases,
    build=_concept_build,
    methods={"bottleneck": _bottleneck, "leakage-test": _leakage, "own-accuracy": _own_accuracy,
             "random": _random_score},
    score=_concept_score,
    baselines=frozenset({"own-accuracy", "random"}),
    order=163,
))


@dataclass(frozen=True, eq=False)
class PrototypesPlanted:
    """The trained prototype network, its training and held-out images (with mark positions)."""

    model: PrototypeNetwork
    train: MarkedImages
    held: MarkedImages


@dataclass(frozen=True)
class PrototypesAnswer:
    """Per prototype, the chosen feature cell ``(row, col)`` on each held-out image of its class; and source hits."""

    cells: tuple[Tensor, ...]
    source_hits: float | None


def _prototype_cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "n": 1200}]


def _prototype_build(case: Mapping[str, Any]) -> PrototypesPlanted:
    model, _ = prototype_network(case["seed"], n=case["n"])
    return PrototypesPlanted(model, marked_images(case["seed"], case["n"]),
                             marked_images(case["seed"], 400, split="test"))


def _sees(cell: tuple[int, int], mark: Tensor) -> bool:
    top, left, bottom, right = receptive_box(*cell)
    row, col = int(mark[0]) + 1, int(mark[1]) + 1  # the mark's centre pixel
    return top <= row <= bottom and left <= col <= right


def _own_images(planted: PrototypesPlanted, j: int) -> Tensor:
    return torch.nonzero(planted.held.labels == j // planted.model.per_class).flatten()


def _prototypes(planted: PrototypesPlanted, generator: torch.Generator) -> PrototypesAnswer:
    sims = similarity_maps(planted.model, planted.held.images)  # (n, m, h, w)
    width = sims.shape[-1]
    cells = []
    for j in range(sims.shape[1]):
        best = sims[_own_images(planted, j), j].flatten(1).argmax(1)
        cells.append(torch.stack([best // width, best % width], 1))
    sources = planted.model.sources or []
    hits = [_sees((s.row, s.col), planted.train.marks[s.image]) for s in sources]
    return PrototypesAnswer(tuple(cells), sum(hits) / len(hits))


def _random_cells(planted: PrototypesPlanted, generator: torch.Generator) -> PrototypesAnswer:
    size = planted.held.images.shape[-1] // 2
    cells = tuple(torch.randint(0, size, (len(_own_images(planted, j)), 2), generator=generator)
                  for j in range(len(planted.model.prototypes)))
    return PrototypesAnswer(cells, None)


def _brightest_cells(planted: PrototypesPlanted, generator: torch.Generator) -> PrototypesAnswer:
    pooled = torch.nn.functional.avg_pool2d(planted.held.images, 2)[:, 0]  # (n, h, w): each cell's 2×2 block
    width = pooled.shape[-1]
    cells = []
    for j in range(len(planted.model.prototypes)):
        best = pooled[_own_images(planted, j)].flatten(1).argmax(1)
        cells.append(torch.stack([best // width, best % width], 1))
    return PrototypesAnswer(tuple(cells), None)


def _prototype_score(answer: PrototypesAnswer, planted: PrototypesPlanted) -> dict[str, float]:
    per_prototype = []
    for j, cells in enumerate(answer.cells):
        marks = planted.held.marks[_own_images(planted, j)]
        per_prototype.append(sum(_sees((int(r), int(c)), m) for (r, c), m in zip(cells, marks, strict=True))
                             / max(len(marks), 1))
    out = {"mark_hits": sum(per_prototype) / len(per_prototype)}
    if answer.source_hits is not None:
        out["source_hits"] = answer.source_hits
    return out


PROTOTYPES = register(Game(
    name="planted-prototypes",
    item="Representations / self-explaining models (prototypes)",
    description=("16×16 images whose class is told only by a class-specific 3×3 mark at a random place, with a "
                 "distractor mark shared by all classes. A ProtoPNet-style network (2 prototypes per class, projected "
                 "onto training patches) must retrieve the marks: mark_hits is the share of held-out own-class images "
                 "whose most similar cell sees the mark (mean over prototypes); source_hits the share of prototypes "
                 "whose projection source sees its image's mark. Baselines: a random cell, the brightest cell."),
    metrics=(
        Metric("mark_hits", chance=0.25, bar=0.7,
               description="share of held-out own-class images where the prototype's best cell sees the class mark "
                           "(chance: a random cell, 0.25)"),
        Metric("source_hits", chance=0.25, bar=0.7,
               description="share of prototypes whose projected training patch sees its image's class mark"),
    ),
    cases=_prototype_cases,
    build=_prototype_build,
    methods={"prototypes": _prototypes, "random-cell": _random_cells, "brightest-cell": _brightest_cells},
    score=_prototype_score,
    baselines=frozenset({"random-cell", "brightest-cell"}),
    order=164,
))
