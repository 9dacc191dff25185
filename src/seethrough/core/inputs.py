"""Model inputs: validation before any forward pass, calling the model, and batch slicing.

`inputs` is a tensor (``model(x)``), a tuple (``model(*args)``) or a mapping of keyword
arguments (``model(**kwargs)``). Validation catches the common mistakes (empty batch, NaN/inf,
dtype or device that disagrees with the model) with a message that says how to fix them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ForwardError, InputError, InputTypeError
from .types import Inputs

__all__ = ["validate_inputs", "call_model", "wrap_forward_error", "batch_size_of", "slice_inputs", "repeat_inputs",
           "describe_inputs"]


def _tensors(inputs: Inputs) -> list[tuple[str, Tensor]]:
    if isinstance(inputs, Tensor):
        return [("inputs", inputs)]
    if isinstance(inputs, tuple):
        return [(f"inputs[{i}]", t) for i, t in enumerate(inputs) if isinstance(t, Tensor)]
    if isinstance(inputs, Mapping):
        return [(f"inputs[{k!r}]", t) for k, t in inputs.items() if isinstance(t, Tensor)]
    raise InputTypeError(
        f"inputs must be a Tensor, a tuple of positional arguments or a dict of keyword arguments, "
        f"got {type(inputs).__name__}. Wrap a list as a tuple, or stack it into a tensor."
    )


def describe_inputs(inputs: Inputs) -> str:
    """A short description like ``inputs: float32 (8, 64)`` for error messages."""
    return ", ".join(f"{name}: {str(t.dtype).replace('torch.', '')} {tuple(t.shape)}" for name, t in _tensors(inputs))


def _parameters(model: nn.Module) -> Iterator[Tensor]:
    """The model's parameters, walked through _modules/_parameters directly.

    ``model.parameters()`` costs several µs per parameter in generator and memo overhead, which
    showed up in `capture`'s per-call cost on small models.
    """
    stack = [model]
    while stack:
        module = stack.pop()
        for p in module._parameters.values():
            if p is not None:
                yield p
        stack.extend(m for m in reversed(module._modules.values()) if m is not None)


def _check_dtype_and_device(model: nn.Module, name: str, t: Tensor) -> None:
    """Refuse a floating tensor whose dtype (or any tensor whose device) differs from the model's.

    Compares with the first parameter; only on a difference are all parameters read, and the
    input is refused only if the model has one floating dtype (one device), so mixed models pass.
    """
    first = next(_parameters(model), None)
    if first is None:
        return
    dtype_differs = t.is_floating_point() and first.is_floating_point() and t.dtype != first.dtype
    if not dtype_differs and t.device == first.device:
        return
    params = list(_parameters(model))
    dtypes = {p.dtype for p in params if p.is_floating_point()}
    devices = {p.device for p in params}
    if dtype_differs and dtypes == {first.dtype}:
        raise InputError(
            f"{name} is {t.dtype} but the model's parameters are {first.dtype}; "
            f"convert with .to({first.dtype}) (or convert the model)."
        )
    if t.device != first.device and devices == {first.device}:
        raise InputError(f"{name} is on {t.device} but the model is on {first.device}; move one with .to(device).")


def _all_finite(t: Tensor) -> bool:
    """Whether ``t`` has no NaN/inf, read from its min and max (NaN propagates, ±inf is an extreme).

    About 10× cheaper than ``isfinite(t).all()``, which allocates a boolean tensor of t's size.
    """
    if t.is_complex():
        return bool(torch.isfinite(t).all())
    lo, hi = torch.aminmax(t)
    return math.isfinite(lo.item()) and math.isfinite(hi.item())


def validate_inputs(model: nn.Module, inputs: Inputs) -> int:
    """Check ``inputs`` before a forward pass; return the batch size.

    Raises:
        InputTypeError: not a tensor/tuple/dict, or a dict with non-string keys.
        InputError: no tensor, a 0-dim or empty batch, NaN/inf values, batch sizes that disagree,
            or a floating dtype / device that differs from the model's parameters.
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if isinstance(inputs, Mapping) and not all(isinstance(k, str) for k in inputs):
        raise InputTypeError("keyword inputs must be a dict with string keys (argument names).")
    tensors = _tensors(inputs)
    if not tensors:
        raise InputError("inputs hold no tensor; pass the batch as a tensor (or a tuple/dict containing tensors).")
    for name, t in tensors:
        if t.ndim == 0:
            raise InputError(f"{name} is a 0-dim tensor; inputs need a leading batch dimension (use x[None]).")
        if t.shape[0] == 0:
            raise InputError(f"{name} has an empty batch (shape {tuple(t.shape)}); pass at least one example.")
        if t.is_floating_point() or t.is_complex():
            if not _all_finite(t):
                n_bad = int((~torch.isfinite(t)).sum())
                raise InputError(
                    f"{name} contains {n_bad} NaN/inf value(s) (shape {tuple(t.shape)}); "
                    "clean or impute the data first (e.g. torch.nan_to_num)."
                )
        _check_dtype_and_device(model, name, t)
    # Other tensors may have other leading sizes (a shared table is a legal argument), so the
    # first tensor alone defines the batch.
    return int(tensors[0][1].shape[0])


def call_model(model: nn.Module, inputs: Inputs) -> Any:
    """Call ``model`` with ``inputs`` as a tensor, positional tuple or keyword dict.

    A forward pass of a module in training mode may update its buffers (BatchNorm's running mean,
    variance and batch count); a method that only looks must not, so the buffers of modules in
    training mode are restored, in place, when the call returns or fails. Eval-mode models pay
    nothing.

    Example:
        >>> bn = nn.BatchNorm1d(2).train()
        >>> _ = call_model(bn, torch.randn(8, 2))
        >>> bn.running_mean.tolist(), int(bn.num_batches_tracked)
        ([0.0, 0.0], 0)
    """
    saved = _training_buffers(model)
    try:
        if isinstance(inputs, Tensor):
            return model(inputs)
        if isinstance(inputs, tuple):
            return model(*inputs)
        return model(**inputs)
    finally:
        # Through .data, so the write does not bump the buffers' version counters: native batch norm
        # keeps the running stats in its autograd graph (unused by its training-mode backward), and
        # a counted in-place write would make a later backward through this forward refuse to run.
        for buffer, value in saved:
            buffer.data.copy_(value)


def _training_buffers(model: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """``(buffer, copy)`` for every buffer of a module in training mode (walked like `_parameters`)."""
    saved: list[tuple[Tensor, Tensor]] = []
    stack = [model]
    while stack:
        module = stack.pop()
        if module.training:
            saved.extend((b, b.detach().clone()) for b in module._buffers.values() if b is not None)
        stack.extend(m for m in module._modules.values() if m is not None)
    return saved


def wrap_forward_error(err: Exception, model: nn.Module, inputs: Inputs) -> ForwardError:
    """A `ForwardError` that says which model failed on which inputs, chained to ``err``."""
    return ForwardError(
        f"{type(model).__name__}'s forward failed on {describe_inputs(inputs)}: "
        f"{type(err).__name__}: {err}. Check that the inputs' shape and dtype are what the model expects."
    )


def batch_size_of(inputs: Inputs) -> int:
    """The leading size of the first tensor in ``inputs``."""
    tensors = _tensors(inputs)
    if not tensors:
        raise InputError("inputs hold no tensor.")
    return int(tensors[0][1].shape[0])


def slice_inputs(inputs: Inputs, start: int, stop: int) -> Inputs:
    """Rows ``start:stop`` of every tensor whose leading size equals the batch size.

    Non-tensor values and tensors with another leading size are passed through unchanged.
    """
    n = batch_size_of(inputs)

    def cut(v: Any) -> Any:
        return v[start:stop] if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == n else v

    if isinstance(inputs, Tensor):
        return inputs[start:stop]
    if isinstance(inputs, tuple):
        return tuple(cut(v) for v in inputs)
    return {k: cut(v) for k, v in inputs.items()}


def repeat_inputs(inputs: Inputs, times: int) -> Inputs:
    """``times`` copies of the batch stacked along dim 0 (copy ``j`` is rows ``j*n:(j+1)*n``).

    Tensors whose leading size is not the batch size, and non-tensors, pass through unchanged.

    Example:
        >>> repeat_inputs(torch.tensor([[1], [2]]), 2).flatten().tolist()
        [1, 2, 1, 2]
    """
    n = batch_size_of(inputs)

    def tile(v: Any) -> Any:
        if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == n:
            return v.repeat(times, *([1] * (v.ndim - 1)))
        return v

    if isinstance(inputs, Tensor):
        return tile(inputs)
    if isinstance(inputs, tuple):
        return tuple(tile(v) for v in inputs)
    return {k: tile(v) for k, v in inputs.items()}
