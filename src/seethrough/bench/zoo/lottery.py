"""A planted sparse teacher for lottery tickets (issue #15, frivolous weights).

A random *sparse teacher* MLP ``x → Linear → ReLU → Linear → logits`` labels Gaussian inputs: only
``d_support`` of the ``d_in`` inputs reach it (the rest are pure noise), each of its hidden units reads
``fan_in`` of those, and its head is dense; the head is centred on the data so every class is a real
share of the labels. A dense *student* MLP (wider) is what lottery-ticket methods prune; its
initialisation comes from the seed. Built, not trained: nothing here is cached (the game caches the
training it runs on these cases).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._seeding import generator

__all__ = ["SparseTeacher", "sparse_teacher", "student_mlp"]


@dataclass(frozen=True, eq=False)
class SparseTeacher:
    """The teacher's weights, its input support, the labelled splits and the student's initialisation.

    ``support`` holds the indices of the inputs the teacher reads; ``n_teacher_weights`` its
    non-zero weights (first layer and head), so ``n_teacher_weights / student weights`` is the
    density a student needs at the very least to hold the teacher exactly.
    """

    first: Tensor
    bias: Tensor
    head: Tensor
    support: Tensor
    train: tuple[Tensor, Tensor]
    validation: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    student: nn.Module
    n_teacher_weights: int

    @property
    def teacher_density(self) -> float:
        """The teacher's non-zero weights over the student's Linear weights."""
        total = sum(m.weight.numel() for m in self.student.modules() if isinstance(m, nn.Linear))
        return self.n_teacher_weights / total


def student_mlp(d_in: int, width: int, n_classes: int) -> nn.Sequential:
    """The student architecture: ``Linear(d_in, width) → ReLU → Linear(width, n_classes)``."""
    return nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, n_classes))


def sparse_teacher(seed: int, *, d_in: int = 32, d_support: int = 8, n_hidden: int = 16, fan_in: int = 3,
                   n_classes: int = 4, width: int = 64, n_train: int = 3000, n_validation: int = 1000,
                   n_test: int = 2000) -> SparseTeacher:
    """Build the teacher, its data (train / validation / test) and the student's initialisation for ``seed``."""
    gen = generator(seed, "sparse_teacher")
    support = torch.randperm(d_in, generator=gen)[:d_support].sort().values
    first = torch.zeros(n_hidden, d_in)
    for unit in range(n_hidden):
        cols = support[torch.randperm(d_support, generator=gen)[:fan_in]]
        first[unit, cols] = torch.randn(fan_in, generator=gen)
    bias = torch.randn(n_hidden, generator=gen) * 0.5
    head = torch.randn(n_classes, n_hidden, generator=gen)
    n = n_train + n_validation + n_test
    x = torch.randn(n, d_in, generator=gen)
    logits = torch.relu(x @ first.T + bias) @ head.T
    y = (logits - logits.mean(0)).argmax(1)
    init = generator(seed, "student")
    student = student_mlp(d_in, width, n_classes)
    with torch.no_grad():
        for m in (student[0], student[2]):
            bound = 1.0 / m.weight.shape[1] ** 0.5
            m.weight.copy_(torch.rand(m.weight.shape, generator=init) * 2 * bound - bound)
            m.bias.copy_(torch.rand(m.bias.shape, generator=init) * 2 * bound - bound)
    splits = (slice(0, n_train), slice(n_train, n_train + n_validation), slice(n_train + n_validation, n))
    tr, va, te = ((x[s], y[s]) for s in splits)
    return SparseTeacher(first, bias, head, support, tr, va, te, student.eval(),
                         int((first != 0).sum()) + head.numel())
