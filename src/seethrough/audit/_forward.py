"""The audit's guards around the model's own forward pass (issue #10, item 7).

Before any search the audit runs the model once over the data (`checked_logits`): a model that
does not fit the data, or whose outputs are NaN/inf, is refused in one line. During the search,
`model_failures` turns any failure of the model's forward into one `ForwardError` line that names
the stage, the inputs and the fix (the original error is chained). `check_labels` checks class
indices against the model's output width before any work.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..core.errors import ForwardError, InputError, SeethroughError
from ..core.inputs import describe_inputs

_FIX = ("check that the data fits the model (x shaped and scaled as the model's inputs: (N, C, H, W) or (N, D)) "
        "and that the model runs on it")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


@contextmanager
def model_failures(model: nn.Module, inputs: Tensor, stage: str) -> Iterator[None]:
    """Re-raise a failure of ``model``'s forward during ``stage`` as one `ForwardError` line.

    The package's own errors pass unchanged; ``KeyboardInterrupt`` is not caught.
    """
    try:
        yield
    except SeethroughError:
        raise
    except Exception as err:
        raise ForwardError(f"{type(model).__name__}'s forward failed during the audit's {stage} on "
                           f"{describe_inputs(inputs)}: {type(err).__name__}: {_one_line(err)}; {_FIX}.") from err


def checked_logits(model: nn.Module, inputs: Tensor, *, batch_size: int = 512) -> Tensor:
    """The model's logits ``(N, n_classes)`` on every input, in one checked pass (no grad).

    Raises:
        ForwardError: the model's forward fails on the inputs (shape, dtype), with the fix.
        InputError: the output is not ``(N, n_classes)``, or is NaN/inf on some input.
    """
    with torch.no_grad(), model_failures(model, inputs, "first pass over the data"):
        outputs = [model(inputs[i:i + batch_size]) for i in range(0, inputs.shape[0], batch_size)]
    if not all(isinstance(o, Tensor) and o.ndim == 2 for o in outputs):
        got = outputs[0].shape if isinstance(outputs[0], Tensor) else type(outputs[0]).__name__
        raise InputError(f"the model must return logits (batch, n_classes); got {got}.")
    logits = torch.cat(outputs)
    bad = ~torch.isfinite(logits).all(1)
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        raise InputError(f"the model's outputs are NaN or infinite on {int(bad.sum())} of {logits.shape[0]} clean "
                         f"inputs (first: row {first}); a non-finite output cannot be scored: check the weights "
                         "(NaN, or values that overflow) and the data's scale.")
    return logits


def check_labels(labels: object, n_inputs: int, n_classes: int) -> Tensor:
    """``labels`` as int64 class indices ``(n_inputs,)``, each in ``[0, n_classes)``.

    Raises:
        InputError: not an integer tensor of that shape, or a label outside the model's classes
            (named, with its row).
    """
    if not isinstance(labels, Tensor) or labels.shape != (n_inputs,):
        raise InputError(f"labels must be class indices of shape ({n_inputs},); got "
                         f"{getattr(labels, 'shape', type(labels).__name__)}.")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise InputError(f"labels must be integer class indices; got dtype {labels.dtype}.")
    values = labels.to(torch.int64)  # unsigned labels beyond int64 wrap to negatives here: refused below
    outside = ((values < 0) | (values >= n_classes)).nonzero()
    if outside.numel():
        row = int(outside[0])
        raise InputError(f"label {labels[row].item()} (row {row}) is not a class of the model, which has {n_classes} "
                         f"outputs (classes 0-{n_classes - 1}); give labels of the model's classes.")
    return values
