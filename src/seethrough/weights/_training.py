"""The training engine of the weights area's trainers (sequential tasks, PackNet allocation).

Trains a *copy* of the caller's model (the caller makes it) with plain mini-batch SGD or Adam on one
task's cross-entropy, seen through the task's output columns (its head). On top of the task loss it
adds quadratic penalties (EWC, SI, MAS: ``strength/2 · Σ Ω (θ − θ*)²``, their gradient added
analytically, so the task gradient stays at hand) and tracks Synaptic Intelligence's path integral
``ω = −Σ_steps g_task · Δθ``; ``trainable`` masks freeze single weights bit-exactly (PackNet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError
from ._functional import check_logits, eval_mode, frozen_parameters, run

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class Anchor:
    """One quadratic penalty term: ``strength/2 · Σ importance · (θ − anchor)²`` (parameters by name)."""

    strength: float
    importance: Mapping[str, Tensor]
    anchor: Mapping[str, Tensor]


@dataclass(frozen=True)
class Settings:
    epochs: int
    lr: float
    batch_size: int
    optimizer: str


def check_settings(epochs: object, lr: object, batch_size: object, optimizer: object) -> Settings:
    epochs = check_int("epochs", epochs, at_least=1)
    lr = check_float("lr", lr, at_least=0.0)
    batch_size = check_int("batch_size", batch_size, at_least=1)
    if optimizer not in OPTIMIZERS:
        raise InputError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}.")
    return Settings(epochs, lr, batch_size, str(optimizer))


def check_tasks(model: nn.Module, tasks: object, heads: object, what: str = "tasks"
                ) -> tuple[list[tuple[Tensor, Tensor]], list[slice]]:
    """Validate ``tasks`` (``[(inputs, labels), ...]``) and ``heads`` before any work; return them and each task's columns."""
    if not isinstance(tasks, Sequence) or isinstance(tasks, (str, bytes)) or len(tasks) == 0:
        raise InputTypeError(f"{what} must be a non-empty list of (inputs, labels) pairs, got {type(tasks).__name__}.")
    pairs = []
    for i, task in enumerate(tasks):
        if not (isinstance(task, (tuple, list)) and len(task) == 2 and all(isinstance(t, Tensor) for t in task)):
            raise InputTypeError(f"{what}[{i}] must be an (inputs, labels) pair of tensors, got {type(task).__name__}.")
        x, y = task
        if y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool or len(y) != len(x) or len(x) == 0:
            raise InputError(f"{what}[{i}]: labels must be integer class indices, one per input row; got "
                             f"{str(y.dtype).replace('torch.', '')} {tuple(y.shape)} for {len(x)} inputs.")
        pairs.append((x.detach(), y.detach().long()))
    with eval_mode(model), torch.no_grad():
        params, buffers = frozen_parameters(model)
        n_outputs = check_logits(run(model, params, buffers, pairs[0][0][:1]), None)
    if heads is None:
        columns = [slice(0, n_outputs)] * len(pairs)
    else:
        if not isinstance(heads, Sequence) or len(heads) != len(pairs):
            raise InputError(f"heads must give one (start, stop) column range per task ({len(pairs)}), got {heads!r}.")
        columns = []
        for i, head in enumerate(heads):
            if not (isinstance(head, (tuple, list)) and len(head) == 2 and 0 <= int(head[0]) < int(head[1]) <= n_outputs):
                raise InputError(f"heads[{i}] must be (start, stop) with 0 <= start < stop <= {n_outputs} "
                                 f"(the model's outputs), got {head!r}.")
            columns.append(slice(int(head[0]), int(head[1])))
    for i, ((_, y), cols) in enumerate(zip(pairs, columns, strict=True)):
        width = cols.stop - cols.start
        if int(y.min()) < 0 or int(y.max()) >= width:
            raise InputError(f"{what}[{i}]: labels must be class indices in 0..{width - 1} (the task's head), got "
                             f"{int(y.min())}..{int(y.max())}.")
    return pairs, columns


def fit_task(model: nn.Module, inputs: Tensor, labels: Tensor, columns: slice, settings: Settings,
             generator: torch.Generator, *, anchors: Sequence[Anchor] = (),
             trainable: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Train ``model`` in place on one task; return SI's path integral ``ω`` per trained parameter.

    ``ω = −Σ_steps g · Δθ`` with ``g`` the gradient of the task's mini-batch loss (without the
    penalties, as in Zenke et al.'s code) at the step's start and ``Δθ`` the step taken. Parameters
    with ``requires_grad=False`` are not trained; entries where ``trainable`` is False never move.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    tensors = [p for _, p in named]
    optimiser = (torch.optim.Adam(tensors, lr=settings.lr) if settings.optimizer == "adam"
                 else torch.optim.SGD(tensors, lr=settings.lr))
    omega = {n: torch.zeros_like(p) for n, p in named}
    masks = {n: trainable[n].to(p.dtype) for n, p in named if trainable is not None and n in trainable}
    n = len(inputs)
    model.train()
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, settings.batch_size):
            rows = order[start:start + settings.batch_size]
            loss = F.cross_entropy(model(inputs[rows])[:, columns], labels[rows])
            grads = torch.autograd.grad(loss, tensors, allow_unused=True)
            before = [p.detach().clone() for p in tensors]
            for (name, p), g in zip(named, grads, strict=True):
                g = torch.zeros_like(p) if g is None else g
                total = g.clone()
                for term in anchors:  # d/dθ of strength/2 · Ω (θ − θ*)²
                    if name in term.importance:
                        total += term.strength * term.importance[name] * (p.detach() - term.anchor[name])
                if name in masks:
                    total *= masks[name]
                p.grad = total
            optimiser.step()
            with torch.no_grad():
                for (name, p), g, old in zip(named, grads, before, strict=True):
                    if name in masks:  # frozen entries stay bit-identical whatever the optimiser's state
                        p.copy_(torch.where(masks[name].bool(), p, old))
                    if g is not None:
                        omega[name] -= g * (p - old)
    for p in tensors:
        p.grad = None
    return omega


def task_accuracy(model: nn.Module, inputs: Tensor, labels: Tensor, columns: slice,
                  params: Mapping[str, Tensor] | None = None) -> float:
    """Accuracy of the task's head (argmax over its columns), in eval mode, optionally with other parameters."""
    with eval_mode(model), torch.no_grad():
        own, buffers = frozen_parameters(model)
        out = run(model, {**own, **(params or {})}, buffers, inputs)
    return float((out[:, columns].argmax(1) == labels).float().mean())
