"""The engine of the weights area: the model as a pure function of its parameters.

Every method here reads the model through `torch.func.functional_call` with *detached copies* of
its parameters, so nothing is ever written onto the model (no ``.grad``, no ``requires_grad``
change, no hook). Per-example gradients are ``vmap(grad(loss of one example))``, never a Python
loop over examples. The model runs in eval mode (its inference function: no dropout noise, batch
norm on its running statistics, which per-example gradients need); every module's mode is
restored on exit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from ..core.errors import InputError, InputTypeError
from ..core.inputs import validate_inputs
from ..core.modes import eval_mode  # noqa: F401 - re-exported for the weights modules
from ..core.types import Inputs

#: ``loss(output, targets) -> scalar`` (mean over the rows it is given), like ``F.cross_entropy``.
Loss = Callable[[Tensor, Tensor], Tensor]


def frozen_parameters(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Detached ``(parameters, buffers)`` by name: read-only views that autograd cannot reach the model through."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    return params, buffers


def split_inputs(inputs: Inputs, n: int) -> tuple[list[Tensor], Callable[[list[Tensor]], Inputs]]:
    """The tensors of ``inputs`` with ``n`` rows, and a function that rebuilds inputs from replacements for them.

    Other values (a shared table, a flag) pass through unchanged, so `vmap` maps over the batch only.
    """
    def batched(v: Any) -> bool:
        return isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == n

    if isinstance(inputs, Tensor):
        return [inputs], lambda ts: ts[0]
    if isinstance(inputs, tuple):
        where = [i for i, v in enumerate(inputs) if batched(v)]

        def rebuild_tuple(ts: list[Tensor]) -> Inputs:
            out = list(inputs)
            for i, t in zip(where, ts, strict=True):
                out[i] = t
            return tuple(out)
        return [inputs[i] for i in where], rebuild_tuple
    if isinstance(inputs, Mapping):
        keys = [k for k, v in inputs.items() if batched(v)]

        def rebuild_dict(ts: list[Tensor]) -> Inputs:
            return {**inputs, **dict(zip(keys, ts, strict=True))}
        return [inputs[k] for k in keys], rebuild_dict
    raise InputTypeError(f"inputs must be a Tensor, a tuple or a dict of keyword arguments, got {type(inputs).__name__}.")


def run(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], inputs: Inputs) -> Any:
    """``model(inputs)`` with the given parameters and buffers in place of its own (nothing is written onto it)."""
    state = {**buffers, **params}
    if isinstance(inputs, Tensor):
        return functional_call(model, state, (inputs,))
    if isinstance(inputs, tuple):
        return functional_call(model, state, inputs)
    return functional_call(model, state, (), dict(inputs))


def cross_entropy(output: Tensor, targets: Tensor) -> Tensor:
    """The default classification loss: mean cross-entropy of logits ``(batch, n_classes)`` at class indices."""
    return F.cross_entropy(output, targets)


def as_targets(targets: Any, n: int, *, classes: bool) -> Tensor:
    """``targets`` as a tensor with ``n`` rows (class indices as int64 when ``classes``); refused in one line otherwise."""
    if isinstance(targets, Tensor):
        t = targets.detach()
    else:
        try:
            t = torch.as_tensor(targets)
        except (TypeError, ValueError, RuntimeError) as err:
            raise InputTypeError(f"targets must be a tensor or array with one row per example, got "
                                 f"{type(targets).__name__}.") from err
    if t.ndim == 0 or t.shape[0] != n:
        raise InputError(f"targets must have one row per example ({n}), got shape {tuple(t.shape)}; "
                         "pass the class index (or target) of every input.")
    if classes:
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool or t.ndim != 1:
            raise InputError(f"targets must be class indices, an integer tensor of shape ({n},), got "
                             f"{str(t.dtype).replace('torch.', '')} {tuple(t.shape)}; for other targets pass loss=.")
        t = t.long()
    return t


def check_logits(output: Any, targets: Tensor | None) -> int:
    """The number of classes of a ``(batch, n_classes)`` output; refuses targets outside ``0..n_classes-1``."""
    if not isinstance(output, Tensor) or output.ndim != 2:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise InputError(f"the default loss needs logits of shape (batch, n_classes), the model gave {shape}; "
                         "pass loss=fn(output, targets) -> scalar for other outputs.")
    n_classes = int(output.shape[1])
    if targets is not None and targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= n_classes):
        raise InputError(f"targets must be class indices in 0..{n_classes - 1}, got values "
                         f"{int(targets.min())}..{int(targets.max())}.")
    return n_classes


def prepare(model: nn.Module, inputs: Inputs, targets: Any, loss: Loss | None, *, need_targets: bool = True
            ) -> tuple[int, Tensor | None]:
    """Validate ``inputs`` and ``targets`` before any work; return ``(n, targets as a tensor)``."""
    n = validate_inputs(model, inputs)
    if loss is not None and not callable(loss):
        raise InputTypeError(f"loss must be a callable loss(output, targets) -> scalar, got {type(loss).__name__}.")
    if targets is None:
        if need_targets:
            raise InputError("this method needs targets (the class index of every input); got None.")
        return n, None
    return n, as_targets(targets, n, classes=loss is None)


def per_example_grads(model: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], inputs: Inputs,
                      n: int, objective: Callable[[Any, Tensor | None], Tensor], targets: Tensor | None,
                      batch_size: int | None) -> dict[str, Tensor]:
    """``{name: (n, *shape)}``: the gradient of ``objective(output of example i, target i)`` for every example i.

    One ``vmap(grad(...))`` over the batch (``chunk_size=batch_size`` bounds memory), never a loop.
    """
    tensors, rebuild = split_inputs(inputs, n)

    def one(p: dict[str, Tensor], rows: list[Tensor], target: Tensor | None) -> Tensor:
        out = run(model, p, buffers, rebuild([r.unsqueeze(0) for r in rows]))
        return objective(out, None if target is None else target.unsqueeze(0))

    in_dims = (None, [0] * len(tensors), None if targets is None else 0)
    return vmap(grad(one), in_dims=in_dims, chunk_size=batch_size)(params, tensors, targets)


def per_example_mean(model: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], inputs: Inputs,
                     n: int, objective: Callable[[Any, Tensor | None], Tensor], targets: Tensor | None,
                     chunk: int, transform: Callable[[str, Tensor], Tensor]) -> dict[str, Tensor]:
    """``{name: mean_i transform(name, g_i)}`` over per-example gradients ``g_i`` (see `per_example_grads`).

    The batch goes through `per_example_grads` in chunks of ``chunk`` rows, each reduced before the
    next, so memory is ``chunk × n_parameters`` whatever ``n`` (and the small per-chunk tensors stay in
    cache: faster than materialising all ``n`` gradients at once).
    """
    from ..core.inputs import slice_inputs

    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for start in range(0, n, chunk):
        part = slice_inputs(inputs, start, start + chunk)
        rows = min(chunk, n - start)
        t = None if targets is None else targets[start:start + chunk]
        grads = per_example_grads(model, params, buffers, part, rows, objective, t, None)
        for k, g in grads.items():
            total[k] += transform(k, g).sum(0)
    return {k: v / n for k, v in total.items()}


def masked_copy(model: nn.Module, masks: Mapping[str, Tensor], *, keep: bool) -> nn.Module:
    """A deep copy of ``model`` with each masked parameter multiplied by its boolean mask (``keep``) or its complement.

    ``model`` is untouched. A mask naming a parameter the model lacks is refused before copying.
    """
    params = dict(model.named_parameters())
    missing = sorted(set(masks) - set(params))
    if missing:
        raise InputError(f"the mask names parameters the model lacks: {missing[:3]}; apply it to the model "
                         "it was made for.")
    for name, m in masks.items():
        if tuple(m.shape) != tuple(params[name].shape):
            raise InputError(f"the mask of {name!r} has shape {tuple(m.shape)}, the parameter {tuple(params[name].shape)}.")
    edited = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in edited.named_parameters():
            if name in masks:
                kept = masks[name].bool()
                p.mul_((kept if keep else ~kept).to(p.dtype))
    return edited


def mask_table(kept: Mapping[str, Tensor]) -> Any:
    """One row per masked parameter of boolean masks: its size, the weights kept and their fraction."""
    import pandas as pd

    rows = [{"parameter": n, "numel": m.numel(), "kept": int(m.sum()), "density": float(m.float().mean())}
            for n, m in kept.items()]
    return pd.DataFrame(rows, columns=["parameter", "numel", "kept", "density"])


def mask_figure(kept: Mapping[str, Tensor], title: str) -> Any:
    """A bar per masked parameter of boolean masks: the fraction of its weights kept."""
    from ..core.results import new_figure

    names = list(kept)
    fig = new_figure(max(4.0, 0.5 * len(names) + 2), 3)
    ax = fig.add_subplot()
    ax.bar(range(len(names)), [float(m.float().mean()) for m in kept.values()])
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of weights kept")
    ax.set_title(title)
    return fig
