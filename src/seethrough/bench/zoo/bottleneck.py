"""Synthetic data for self-explaining models: concepts with a planted leak, and images with class marks.

Four binary concepts ``c`` (fair coins) and a hidden nuisance bit ``z`` (1 with probability 0.25),
independent of them. The label is the parity ``c₀ ⊕ c₁`` flipped where ``z = 1``, so the true concepts
alone cap accuracy at 0.75, and anything that reads ``z`` can do better. The 12 observed features are
each concept plus Gaussian noise (σ 0.3), ``z`` plus noise (twice), and six noise features. A
bottleneck whose concept outputs carry ``z`` *leaks*: its concepts look right while its head reads the
label from their confidence. Generated from the seed in milliseconds. `marked_images` and
`prototype_network` are the prototype arm: images whose class is told only by a class-specific mark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._seeding import generator
from .cache import cached

__all__ = ["ConceptTask", "concept_task", "N_CONCEPTS", "LEAK_RATE", "MarkedImages", "marked_images",
           "prototype_network", "concept_bottleneck"]

N_CONCEPTS = 4
LEAK_RATE = 0.25


@dataclass(frozen=True, eq=False)
class ConceptTask:
    """Inputs ``(n, 12)``, concepts ``(n, 4)`` 0/1, labels ``(n,)``, the hidden nuisance bit ``(n,)``."""

    inputs: Tensor
    concepts: Tensor
    labels: Tensor
    nuisance: Tensor


def concept_task(seed: int, n: int = 2000, noise: float = 0.3) -> ConceptTask:
    """``n`` examples of the planted-concepts task (see the module docstring).

    Example:
        >>> t = concept_task(0, n=4000)
        >>> float((t.labels == (t.concepts[:, 0] != t.concepts[:, 1]).long()).float().mean()) > 0.7
        True
    """
    gen = generator(seed, "concept-task")
    c = torch.randint(0, 2, (n, N_CONCEPTS), generator=gen).float()
    z = (torch.rand(n, generator=gen) < LEAK_RATE).float()
    labels = ((c[:, 0] != c[:, 1]).float() != z.bool().float()).long()
    features = torch.cat([c, z[:, None].expand(n, 2), torch.zeros(n, 6)], dim=1)
    inputs = features + noise * torch.randn(features.shape, generator=gen)
    return ConceptTask(inputs, c, labels, z)


@dataclass(frozen=True, eq=False)
class MarkedImages:
    """Images ``(n, 1, size, size)``, labels, and the top-left corner ``(n, 2)`` of each image's class mark."""

    images: Tensor
    labels: Tensor
    marks: Tensor


def _patterns(gen: torch.Generator, count: int) -> Tensor:
    """``count`` distinct 3×3 binary patterns with 4 to 6 pixels on."""
    found: list[Tensor] = []
    while len(found) < count:
        p = (torch.rand(3, 3, generator=gen) < 0.55).float()
        if 4 <= int(p.sum()) <= 6 and all(not torch.equal(p, q) for q in found):
            found.append(p)
    return torch.stack(found)


def marked_images(seed: int, n: int = 1200, n_classes: int = 4, size: int = 16, split: str = "train") -> MarkedImages:
    """The prototype game's data: each class has its own 3×3 mark at a random place; a shared distractor mark too.

    The background is smooth noise in [0, 0.4]; the class mark (pattern ``label``, pixels 1.0) sits at a
    random place, and a distractor mark (one of ``n_classes`` patterns shared by every class) at another
    place not overlapping it, so a bright 3×3 blob alone does not tell the class. The patterns come from
    the seed (the same for every ``split``; the examples differ by split); ``marks`` holds each class
    mark's top-left corner.
    """
    patterns = _patterns(generator(seed, "marked-patterns"), 2 * n_classes)
    gen = generator(seed, f"marked-images-{split}")
    own, shared = patterns[:n_classes], patterns[n_classes:]
    labels = torch.randint(0, n_classes, (n,), generator=gen)
    coarse = torch.rand(n, 1, size // 4, size // 4, generator=gen) * 0.4
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    marks = torch.zeros(n, 2, dtype=torch.long)
    for i in range(n):
        while True:
            (r, c), (r2, c2) = torch.randint(1, size - 4, (2, 2), generator=gen).tolist()
            if abs(r - r2) > 3 or abs(c - c2) > 3:
                break
        images[i, 0, r:r + 3, c:c + 3] = torch.maximum(images[i, 0, r:r + 3, c:c + 3], own[labels[i]])
        distractor = shared[int(torch.randint(0, n_classes, (1,), generator=gen))]
        images[i, 0, r2:r2 + 3, c2:c2 + 3] = torch.maximum(images[i, 0, r2:r2 + 3, c2:c2 + 3], distractor)
        marks[i] = torch.tensor([r, c])
    return MarkedImages(images, labels, marks)


def prototype_network(seed: int, *, n: int = 1200, per_class: int = 2, epochs: int = 30) -> tuple[Any, dict[str, Any]]:
    """A `PrototypeNetwork` trained on ``marked_images(seed, n)``; cached. ``meta["sources"]``: projection sources."""
    from ...representations.prototypes import PrototypeNetwork, PrototypeSource, train_prototype_network

    config = {"seed": seed, "n": n, "per_class": per_class, "epochs": epochs}

    def build() -> PrototypeNetwork:
        return PrototypeNetwork(1, 4, per_class=per_class)

    def train(model: PrototypeNetwork) -> dict[str, Any]:
        data = marked_images(seed, n)
        trained = train_prototype_network(data.images, data.labels, per_class=per_class, epochs=epochs, seed=seed)
        model.load_state_dict(trained.state_dict())
        held = marked_images(seed, 400, split="test")
        with torch.no_grad():
            accuracy = float((trained(held.images).argmax(1) == held.labels).float().mean())
        return {"sources": [[s.image, s.row, s.col] for s in trained.sources or []], "accuracy": accuracy}

    model, meta = cached("prototype_network", config, build, train)
    model.sources = [PrototypeSource(*s) for s in meta["sources"]]
    return model, meta


def concept_bottleneck(seed: int, *, mode: str, head_input: str, n: int = 2000) -> tuple[Any, dict[str, Any]]:
    """A `ConceptBottleneck` trained on ``concept_task(seed, n)`` (``mode``, ``head_input``); cached.

    ``meta``: held-out accuracy (on ``concept_task(seed + 10_000, n)``) and the true concepts' ceiling.
    """
    from ...representations.bottleneck import ConceptBottleneck, train_concept_bottleneck

    config = {"seed": seed, "mode": mode, "head_input": head_input, "n": n}

    def build() -> ConceptBottleneck:
        return ConceptBottleneck(12, N_CONCEPTS, 2, head_input=head_input)

    def train(model: ConceptBottleneck) -> dict[str, Any]:
        data, held = concept_task(seed, n), concept_task(seed + 10_000, n)
        trained = train_concept_bottleneck(data.inputs, data.concepts, data.labels, mode=mode, head_input=head_input,
                                           seed=seed)
        model.load_state_dict(trained.state_dict())
        with torch.no_grad():
            accuracy = float((trained(held.inputs).argmax(1) == held.labels).float().mean())
        rule = (held.concepts[:, 0] != held.concepts[:, 1]).long()
        return {"accuracy": accuracy, "ceiling": float((rule == held.labels).float().mean())}

    return cached("concept_bottleneck", config, build, train)
