"""The clean and corrupted means of a metric, checked once for every patching method (private)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core.errors import InputError, InputTypeError
from ..core.inputs import call_model, validate_inputs
from ..core.types import Inputs

__all__: list[str] = []


def metric_means(model: nn.Module, clean: Inputs, corrupted: Inputs, metric: Callable[[Any], Tensor], *,
                 require_change: bool = True) -> tuple[float, float]:
    """The metric's mean on the clean and on the corrupted inputs (float64), after checking them.

    Raises:
        InputError: batches of different sizes, a metric without one score per row, or equal means
            (the normalised effect would divide by zero) unless ``require_change`` is False.
    """
    if not callable(metric):
        raise InputTypeError(f"metric must be a callable output -> (rows,) scores, got {type(metric).__name__}.")
    n, n_corrupted = validate_inputs(model, clean), validate_inputs(model, corrupted)
    if n != n_corrupted:
        raise InputError(f"clean has {n} examples but corrupted has {n_corrupted}; patching pairs example i of "
                         "clean with example i of corrupted, so pass batches of the same size.")
    with torch.no_grad():
        scores = [metric(call_model(model, x)) for x in (clean, corrupted)]
    for s in scores:
        if not isinstance(s, Tensor) or tuple(s.shape) != (n,):
            got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
            raise InputError(f"metric must return one score per example, shape ({n},); got {got}.")
    clean_mean, corrupted_mean = (float(s.double().mean()) for s in scores)
    if not np.isfinite(clean_mean - corrupted_mean) or (require_change and clean_mean == corrupted_mean):
        raise InputError(f"the metric's mean is {clean_mean} on clean and {corrupted_mean} on corrupted inputs; "
                         "normalised effects need a clean-to-corrupted change: pick inputs or a metric that differ.")
    return clean_mean, corrupted_mean
