"""Allocation: which weights (PackNet) and which hidden units each task owns.

The weights area of the taxonomy (continual learning as a lens, §3.1). `allocate` trains a copy of a
model on tasks in sequence the PackNet way (train the free weights, keep the largest fraction of
what the task used, release the rest, retrain, freeze): each task ends up owning a disjoint set of
weights, and its outputs never change again. `unit_allocation` asks the same question per hidden
unit of one layer, from each task's unit importance (ablation or Fisher), and measures the overlap.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError
from ..core.results import Result, jsonable, new_figure
from ._functional import eval_mode, frozen_parameters, run
from ._training import check_settings, check_tasks, fit_task, task_accuracy
from .importance import importance
from .overlap import Overlap, overlap

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["Allocation", "allocate", "UnitAllocation", "unit_allocation", "UNIT_METHODS"]

UNIT_METHODS = ("ablation", "fisher")


@dataclass(frozen=True)
class Allocation(Result):
    """A PackNet allocation: the trained copy, each task's weights (disjoint) and accuracies.

    Attributes:
        model: the trained copy; every weight no task owns is zero. Left out of `to_dict`.
        masks: per task ``{parameter name: bool tensor}``, the weights it owns (disjoint across tasks).
        accuracy: per task, its accuracy after all tasks, through `task_parameters` (its weights and
            earlier tasks'); by construction the accuracy it had when it was frozen.
        dense_accuracy: per task, its accuracy after its first training, before pruning.
        prune: the fraction of each task's weights released after its training.
    """

    model: nn.Module
    masks: tuple[dict[str, Tensor], ...]
    accuracy: tuple[float, ...]
    dense_accuracy: tuple[float, ...]
    prune: float

    def task_parameters(self, task: int) -> dict[str, Tensor]:
        """The parameters task ``task`` runs with: the weights of tasks ``0..task``, every other weight zero."""
        task = check_int("task", task, at_least=0, at_most=len(self.masks) - 1)
        params, _ = frozen_parameters(self.model)
        return {n: p * _union(self.masks[:task + 1], n, p).to(p.dtype) for n, p in params.items()}

    def task_model(self, task: int) -> nn.Module:
        """A copy of the model with `task_parameters` in place: the network task ``task`` owns."""
        edited = copy.deepcopy(self.model)
        with torch.no_grad():
            for n, p in self.task_parameters(task).items():
                edited.get_parameter(n).copy_(p)
        return edited

    def overlap(self, a: int, b: int) -> Overlap:
        """`overlap` of two tasks' weights (none shared, by construction)."""
        return overlap(self.masks[a], self.masks[b])

    def density(self) -> tuple[float, ...]:
        """Per task, the fraction of all parameters it owns."""
        total = sum(m.numel() for m in self.masks[0].values())
        return tuple(sum(int(m.sum()) for m in masks.values()) / total for masks in self.masks)

    def to_dict(self) -> dict[str, Any]:
        return {"masks": jsonable(self.masks), "accuracy": jsonable(self.accuracy),
                "dense_accuracy": jsonable(self.dense_accuracy), "prune": self.prune}

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        rows = [{"task": t, "parameter": n, "owned": int(m.sum()), "numel": m.numel(),
                 "accuracy": self.accuracy[t], "dense_accuracy": self.dense_accuracy[t]}
                for t, masks in enumerate(self.masks) for n, m in masks.items()]
        return pd.DataFrame(rows, columns=["task", "parameter", "owned", "numel", "accuracy", "dense_accuracy"])

    def plot(self) -> Figure:
        names = list(self.masks[0])
        fig = new_figure(max(4.0, 0.6 * len(names) + 2), 3)
        ax = fig.add_subplot()
        bottom = [0.0] * len(names)
        for t, masks in enumerate(self.masks):
            share = [float(masks[n].float().mean()) for n in names]
            ax.bar(range(len(names)), share, bottom=bottom, label=f"task {t} ({self.accuracy[t]:.2f})")
            bottom = [b + s for b, s in zip(bottom, share, strict=True)]
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("fraction of weights owned")
        ax.legend()
        return fig


def _union(masks: Sequence[Mapping[str, Tensor]], name: str, like: Tensor) -> Tensor:
    out = torch.zeros(like.shape, dtype=torch.bool)
    for m in masks:
        out |= m[name]
    return out


def allocate(
    model: nn.Module,
    tasks: Sequence[tuple[Tensor, Tensor]],
    *,
    prune: float = 0.5,
    epochs: int = 10,
    retrain_epochs: int = 5,
    lr: float = 1e-2,
    batch_size: int = 32,
    seed: int = 0,
    heads: Sequence[tuple[int, int]] | None = None,
    eval_tasks: Sequence[tuple[Tensor, Tensor]] | None = None,
    optimizer: str = "adam",
) -> Allocation:
    """Train a copy of ``model`` on ``tasks`` in sequence with PackNet: each task gets its own frozen weights.

    For task t: train every free weight (owned by no earlier task; earlier tasks' weights are used
    but frozen), on the task's head; of the free weights the training moved, keep the ``1 − prune``
    largest by magnitude in each parameter and release the rest (set to zero); retrain the kept ones
    for ``retrain_epochs`` with every unowned weight at zero; freeze them: they are task t's. Task t
    then runs with the weights of tasks ``0..t`` only (`Allocation.task_parameters`), so training later
    tasks cannot change its outputs. Released weights restart from their initial values for the next
    task. Every parameter entry (biases too) is allocated; buffers (batch-norm statistics) are not, so
    a model with running statistics breaks the guarantee.

    Args:
        model: a classifier returning logits; it is copied, never modified.
        tasks: ``[(inputs, labels), ...]``; labels index the task's head columns.
        prune: the fraction of a task's trained weights released for later tasks (PackNet: 0.5–0.75).
        epochs, retrain_epochs: training before and after pruning.
        lr, batch_size, optimizer, seed, heads, eval_tasks: as in `train_sequential`.

    Returns:
        `Allocation`: the trained copy, each task's weight mask and its accuracies.

    Raises:
        InputError: bad settings, tasks or heads (before any training).

    Example:
        >>> torch.manual_seed(0) and None
        >>> model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> x = torch.randn(64, 4)
        >>> r = allocate(model, [(x, (x[:, 0] > 0).long()), (x, (x[:, 1] > 0).long())], heads=[(0, 2), (2, 4)],
        ...              epochs=3, retrain_epochs=1)
        >>> r.overlap(0, 1).jaccard
        0.0

    References:
        Mallya and Lazebnik 2018, "PackNet: adding multiple tasks to a single network by iterative pruning".
    """
    prune = check_float("prune", prune, at_least=0.0, at_most=1.0)
    retrain_epochs = check_int("retrain_epochs", retrain_epochs, at_least=0)
    seed = check_int("seed", seed)
    settings = check_settings(epochs, lr, batch_size, optimizer)
    retrain = check_settings(max(retrain_epochs, 1), lr, batch_size, optimizer)
    pairs, columns = check_tasks(model, tasks, heads)
    evals = pairs if eval_tasks is None else check_tasks(model, eval_tasks, heads, "eval_tasks")[0]
    if len(evals) != len(pairs):
        raise InputError(f"eval_tasks must give one (inputs, labels) pair per task ({len(pairs)}), got {len(evals)}.")
    trained = copy.deepcopy(model)
    for p in trained.parameters():
        p.grad = None
    modes = [(m, m.training) for m in trained.modules()]
    params = dict(trained.named_parameters())
    initial = {n: p.detach().clone() for n, p in params.items()}
    owned = {n: torch.zeros(p.shape, dtype=torch.bool) for n, p in params.items()}
    generator = torch.Generator().manual_seed(seed)
    masks: list[dict[str, Tensor]] = []
    dense: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for (x, y), cols, (ex, ey) in zip(pairs, columns, evals, strict=True):
            free = {n: ~o for n, o in owned.items()}
            before = {n: p.detach().clone() for n, p in params.items()}
            fit_task(trained, x, y, cols, settings, generator, trainable=free)
            _restore(modes)
            dense.append(task_accuracy(trained, ex, ey, cols))
            keep = {n: _largest(p.detach(), free[n] & (p.detach() != before[n]), 1 - prune) for n, p in params.items()}
            with torch.no_grad():
                for n, p in params.items():
                    p.mul_((owned[n] | keep[n]).to(p.dtype))  # every weight this task does not own (yet) is zero
            if retrain_epochs:
                fit_task(trained, x, y, cols, retrain, generator, trainable=keep)
                _restore(modes)
            masks.append(keep)
            owned = {n: owned[n] | keep[n] for n in owned}
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(torch.where(owned[n], p, initial[n]))  # released weights restart for the next task
    with torch.no_grad():
        for n, p in params.items():
            p.mul_(owned[n].to(p.dtype))
    result = Allocation(trained, tuple(masks), (), tuple(dense), prune)
    accuracy = tuple(task_accuracy(trained, ex, ey, cols, result.task_parameters(t))
                     for t, ((ex, ey), cols) in enumerate(zip(evals, columns, strict=True)))
    return Allocation(trained, tuple(masks), accuracy, tuple(dense), prune)


def _restore(modes: list[tuple[nn.Module, bool]]) -> None:
    for module, mode in modes:
        module.training = mode


def _largest(values: Tensor, candidates: Tensor, fraction: float) -> Tensor:
    """The ``fraction`` of ``candidates`` with the largest ``|values|`` (ties by order), as a bool mask."""
    keep = torch.zeros(values.shape, dtype=torch.bool)
    idx = torch.nonzero(candidates.flatten()).squeeze(1)
    k = round(fraction * idx.numel())
    if k:
        order = torch.argsort(values.flatten()[idx].abs(), descending=True, stable=True)[:k]
        keep.view(-1)[idx[order]] = True
    return keep


@dataclass(frozen=True)
class UnitAllocation(Result):
    """Which hidden units of one layer each task owns, from per-task unit importance.

    Attributes:
        layer: the module path of the ``nn.Linear`` whose output units are scored.
        method: ``"ablation"`` (task loss increase when the unit's pre-activation is zeroed) or ``"fisher"``
            (the empirical Fisher of the unit's incoming weights and bias, summed).
        scores: per task, one score per unit (``(n_units,)``).
        units: per task, the units it owns: those scoring more than ``threshold`` × its total score.
        jaccard: the pairwise Jaccard index of the tasks' unit sets (``jaccard[a][b]``).
        threshold: the share of a task's total score a unit must exceed to be owned.
    """

    layer: str
    method: str
    scores: tuple[Tensor, ...]
    units: tuple[tuple[int, ...], ...]
    jaccard: tuple[tuple[float, ...], ...]
    threshold: float

    @property
    def shared(self) -> tuple[int, ...]:
        """Units owned by more than one task."""
        counts: dict[int, int] = {}
        for units in self.units:
            for u in units:
                counts[u] = counts.get(u, 0) + 1
        return tuple(sorted(u for u, c in counts.items() if c > 1))

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        rows = [{"task": t, "unit": u, "score": float(s[u]), "owned": u in self.units[t]}
                for t, s in enumerate(self.scores) for u in range(len(s))]
        return pd.DataFrame(rows, columns=["task", "unit", "score", "owned"])

    def plot(self) -> Figure:
        n = len(self.scores[0])
        fig = new_figure(max(4.0, 0.15 * n + 2), 3)
        ax = fig.add_subplot()
        width = 0.8 / len(self.scores)
        for t, s in enumerate(self.scores):
            share = (s / s.sum().clamp(min=1e-12)).tolist()
            ax.bar([u + t * width for u in range(n)], share, width=width, label=f"task {t}")
        ax.set_xlabel(f"unit of {self.layer}")
        ax.set_ylabel("share of the task's importance")
        ax.set_title(f"{self.method}: shared units {len(self.shared)}")
        ax.legend()
        return fig


def unit_allocation(
    model: nn.Module,
    tasks: Sequence[tuple[Tensor, Tensor]],
    layer: str,
    *,
    method: str = "ablation",
    heads: Sequence[tuple[int, int]] | None = None,
    threshold: float = 0.01,
) -> UnitAllocation:
    """Score every output unit of ``layer`` (an ``nn.Linear``) for every task and say which units each task owns.

    A task owns the units scoring more than ``threshold`` × its total score (``threshold=0``: every unit
    with any effect). The model is read through `torch.func.functional_call` in eval mode and left exactly as found.

    Args:
        model: a classifier returning logits.
        tasks: ``[(inputs, labels), ...]``; labels index the task's head columns.
        layer: module path of an ``nn.Linear`` (its rows are the units).
        method: one of `UNIT_METHODS`: ``"ablation"`` zeroes the unit's row and bias (its
            pre-activation is 0, so after ReLU it is silent) and measures the increase of the task's
            loss (negative increases count 0); ``"fisher"`` sums the empirical Fisher of the row and bias.
        heads: per task ``(start, stop)`` output columns, or None (all columns for every task).
        threshold: the share of a task's total score a unit must exceed to be owned.

    Returns:
        `UnitAllocation` with per-task scores, unit sets and their pairwise Jaccard index.

    Raises:
        InputError: unknown method, a layer that is not an ``nn.Linear`` of the model, bad tasks or heads.

    Example:
        >>> torch.manual_seed(0) and None
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x = torch.randn(32, 4)
        >>> r = unit_allocation(model, [(x, (x[:, 0] > 0).long())], "0")
        >>> r.scores[0].shape, len(r.units[0]) <= 8
        (torch.Size([8]), True)
    """
    if method not in UNIT_METHODS:
        raise InputError(f"method must be one of {', '.join(UNIT_METHODS)}, got {method!r}.")
    threshold = check_float("threshold", threshold, at_least=0.0, at_most=1.0)
    modules = dict(model.named_modules())
    if not isinstance(modules.get(layer), nn.Linear):
        linear = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        raise InputError(f"layer must name an nn.Linear of the model, got {layer!r}; its linear layers are {linear}.")
    pairs, columns = check_tasks(model, tasks, heads)
    weight, bias = f"{layer}.weight", f"{layer}.bias"
    params, buffers = frozen_parameters(model)
    scores = []
    with eval_mode(model):
        for (x, y), cols in zip(pairs, columns, strict=True):
            if method == "fisher":
                view = _Head(model, cols)
                fisher = importance(view, x, y, method="fisher").scores
                s = fisher[f"net.{weight}"].sum(1) + (fisher[f"net.{bias}"] if f"net.{bias}" in fisher else 0.0)
            else:
                with torch.no_grad():
                    base = F.cross_entropy(run(model, params, buffers, x)[:, cols], y)
                    rises = []
                    for u in range(params[weight].shape[0]):
                        edited = dict(params)
                        edited[weight] = params[weight].clone()
                        edited[weight][u] = 0.0
                        if bias in params:
                            edited[bias] = params[bias].clone()
                            edited[bias][u] = 0.0
                        rises.append(F.cross_entropy(run(model, edited, buffers, x)[:, cols], y) - base)
                    s = torch.stack(rises).clamp(min=0)
            scores.append(s.detach())
    units = tuple(_owned(s, threshold) for s in scores)
    jaccard = tuple(tuple(_jaccard(a, b) for b in units) for a in units)
    return UnitAllocation(layer, method, tuple(scores), units, jaccard, threshold)


class _Head(nn.Module):
    def __init__(self, net: nn.Module, columns: slice) -> None:
        super().__init__()
        self.net = net
        self.columns = columns

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[:, self.columns]


def _owned(scores: Tensor, threshold: float) -> tuple[int, ...]:
    total = float(scores.sum())
    if total <= 0:
        return ()
    return tuple(int(u) for u in torch.nonzero(scores > threshold * total).flatten())


def _jaccard(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    union = set(a) | set(b)
    return len(set(a) & set(b)) / len(union) if union else 0.0
