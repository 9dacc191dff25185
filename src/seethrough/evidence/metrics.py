"""Metrics from per-example data, for methods that stack copies of a batch in one forward.

Integrated gradients, unit importance, patching sweeps and the chapters' batched methods run k
copies of an n-example batch in one forward, stacked copy-major (``torch.cat`` of the copies), so
row ``r`` of the output is example ``r mod n``. A metric that needs per-example data (labels, a
pooling mask, a paired sentence's embedding) must therefore accept any multiple of n rows;
`per_example` builds one from data given once per example.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from ..core.errors import InputError, InputTypeError

__all__ = ["per_example"]


def _rows(output: Any) -> int:
    """The number of rows of a model output: the leading size of its first tensor."""
    if isinstance(output, Tensor):
        return int(output.shape[0])
    values = output.values() if isinstance(output, Mapping) else output if isinstance(output, (tuple, list)) else ()
    for value in values:
        if isinstance(value, Tensor) and value.ndim > 0:
            return int(value.shape[0])
    raise InputTypeError(f"per_example cannot count the rows of a {type(output).__name__} output; "
                         "the model output must be a tensor or hold one.")


def per_example(fn: Callable[..., Tensor], **data: Tensor) -> Callable[[Any], Tensor]:
    """A metric ``output -> (rows,)`` that hands ``fn`` each per-example tensor tiled to the output's rows.

    ``fn(output, **tiled)`` is called with every tensor of ``data`` (leading size n) repeated
    copy-major to the output's ``k·n`` rows, so ``tiled[name][r] == data[name][r % n]``: the
    stacking every seethrough method uses. It must return one score per row.

    Args:
        fn: ``fn(output, **data) -> Tensor`` of shape ``(rows,)``.
        **data: per-example tensors, each with the batch's n examples on dim 0.

    Returns:
        The metric, for ``metric=`` arguments (integrated gradients, unit importance, patching).

    Raises:
        InputError: (when called) the output's rows are not a multiple of n, or ``fn`` returns
            other than one score per row.

    Example:
        >>> import torch
        >>> labels = torch.tensor([2, 0])
        >>> metric = per_example(lambda out, labels: out.gather(1, labels[:, None])[:, 0], labels=labels)
        >>> metric(torch.arange(12.0).reshape(4, 3)).tolist()   # 2 copies of a 2-example batch
        [2.0, 3.0, 8.0, 9.0]
    """
    if not callable(fn):
        raise InputTypeError(f"per_example needs a callable fn(output, **data), got {type(fn).__name__}.")
    if not data:
        raise InputError("per_example needs at least one per-example tensor, e.g. per_example(fn, mask=mask).")
    sizes = {}
    for name, value in data.items():
        if not isinstance(value, Tensor) or value.ndim == 0:
            raise InputTypeError(f"per_example data {name!r} must be a tensor with the examples on dim 0, "
                                 f"got {type(value).__name__}{'' if not isinstance(value, Tensor) else ' (0-dim)'}.")
        sizes[name] = int(value.shape[0])
    if len(set(sizes.values())) != 1:
        raise InputError(f"per_example data disagree on the number of examples: {sizes}; give one row per example.")
    n = next(iter(sizes.values()))

    def metric(output: Any) -> Tensor:
        rows = _rows(output)
        if rows % n:
            raise InputError(f"the metric got {rows} output rows, not a multiple of the {n} examples its data "
                             "describe; give per_example the data of the batch the method was called with.")
        copies = rows // n
        tiled = {name: value.to(device=_device(output)).repeat(copies, *([1] * (value.ndim - 1)))
                 for name, value in data.items()}
        scores = fn(output, **tiled)
        if not isinstance(scores, Tensor) or scores.shape != (rows,):
            shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise InputError(f"the per-example metric returned {shape}; it must return one score per row, ({rows},).")
        return scores

    return metric


def _device(output: Any) -> Any:
    if isinstance(output, Tensor):
        return output.device
    values = output.values() if isinstance(output, Mapping) else output if isinstance(output, (tuple, list)) else ()
    return next((v.device for v in values if isinstance(v, Tensor)), "cpu")
