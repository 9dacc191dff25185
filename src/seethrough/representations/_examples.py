"""Shared plumbing of the probing modules (private): features and labels in, examples out.

`site_examples` turns a captured site value and its labels into examples, `split_by_input` holds
out whole inputs, `control_labels` draws the control task of Hewitt & Liang.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core.batching import batches, stream
from ..core.errors import InputError, InputTypeError
from ..core.inputs import validate_inputs
from ..core.sites import Site, resolve_site
from ..core.types import Inputs

__all__: list[str] = []


def _as_matrix(x: Any, name: str = "X") -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x.detach().cpu())
    if t.ndim != 2 or t.shape[0] == 0 or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise InputError(f"{name} must be a non-empty (n, d) array of numbers, got {t.dtype} of shape {tuple(t.shape)}.")
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"{name} contains NaN/inf; clean the features first.")
    return t


def _as_labels(y: Any, n: int) -> Tensor:
    t = torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y.detach().cpu())
    if t.is_floating_point() or t.dtype == torch.bool or t.shape != (n,):
        raise InputError(f"y must be (n,) = ({n},) integer class labels, got {t.dtype} of shape {tuple(t.shape)}.")
    return t.long()



def _capture_site(model: nn.Module, inputs: Inputs, site: Site | str, batch_size: int) -> Tensor:
    resolve_site(model, site)
    validate_inputs(model, inputs)
    parts = [values[site].detach().cpu() for _, values in stream(model, batches(inputs, batch_size), site)]
    return torch.cat(parts)


def _int_array(name: str, value: Any) -> Tensor:
    if not isinstance(value, (Tensor, np.ndarray, list, tuple)):
        raise InputTypeError(f"{name} must be an integer array or tensor, got {type(value).__name__}.")
    t = torch.as_tensor(np.asarray(value) if not isinstance(value, Tensor) else value.detach().cpu())
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise InputTypeError(f"{name} must hold integers (class indices), got {t.dtype}; use .long().")
    return t.long()


def site_examples(values: Tensor, labels: Any, groups: Any | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The labelled examples of a site's values: ``(features, labels, groups, input_index)``.

    ``(batch, ...)`` values with ``(batch,)`` labels give one example per input (the value flattened);
    ``(batch, seq, d)`` values with ``(batch, seq)`` labels give one example per position. Labels < 0
    mean "no label here" and are left out. ``groups`` (same shape as ``labels``) default to one
    group per example.

    Example:
        >>> x, y, g, row = site_examples(torch.zeros(2, 3, 4), torch.tensor([[0, 1, -1], [1, -1, -1]]))
        >>> tuple(x.shape), y.tolist(), row.tolist()
        ((3, 4), [0, 1, 1], [0, 0, 1])
    """
    y = _int_array("labels", labels)
    n = values.shape[0]
    if y.ndim == 1:
        if y.shape[0] != n:
            raise InputError(f"labels have {y.shape[0]} entries but the inputs hold {n} examples; give one label "
                             "per input, or (batch, seq) labels for a (batch, seq, d) site.")
        feats, rows = values.reshape(n, -1), torch.arange(n)
    elif y.ndim == 2:
        if values.ndim != 3 or tuple(values.shape[:2]) != tuple(y.shape):
            raise InputError(f"labels of shape {tuple(y.shape)} label positions, which needs a (batch, seq, d) site "
                             f"value of the same batch and seq; the site's value is {tuple(values.shape)}.")
        feats = values.reshape(-1, values.shape[-1])
        rows = torch.arange(n).repeat_interleave(values.shape[1])
    else:
        raise InputError(f"labels must be (batch,) or (batch, seq), got shape {tuple(y.shape)}.")
    g = torch.arange(y.numel()).view(y.shape) if groups is None else _int_array("groups", groups)
    if g.shape != y.shape:
        raise InputError(f"groups have shape {tuple(g.shape)} but labels {tuple(y.shape)}; give one group per label.")
    keep = y.flatten() >= 0
    if int(keep.sum()) == 0:
        raise InputError("every label is negative (< 0 means 'no label here'); give some labelled examples.")
    return feats[keep], y.flatten()[keep], g.flatten()[keep], rows[keep]


def split_by_input(rows: Tensor, test_fraction: float, seed: int) -> Tensor:
    """A boolean test mask over examples: a random ``test_fraction`` of the *inputs* (all their positions)."""
    inputs = torch.unique(rows)
    gen = torch.Generator().manual_seed(int(seed))
    order = inputs[torch.randperm(len(inputs), generator=gen)]
    n_test = max(1, round(test_fraction * len(inputs)))
    if n_test >= len(inputs):
        raise InputError(f"{len(inputs)} labelled input(s) cannot be split into train and test; give more inputs.")
    return torch.isin(rows, order[:n_test])


def control_labels(labels: Tensor, groups: Tensor, seed: int) -> Tensor:
    """The control task (Hewitt & Liang): each group's label drawn from the labels' empirical distribution.

    With one group per example this is a permutation of ``labels`` (exactly the same frequencies);
    with shared groups (e.g. token ids) every member of a group gets its group's random label.

    Example:
        >>> sorted(control_labels(torch.tensor([0, 0, 1, 2]), torch.arange(4), 0).tolist())
        [0, 0, 1, 2]
    """
    gen = torch.Generator().manual_seed(int(seed) + 1)
    unique, inverse = torch.unique(groups, return_inverse=True)
    if len(unique) == len(groups):  # one group per example: a permutation keeps the frequencies exactly
        return labels[torch.randperm(len(labels), generator=gen)]
    draws = labels[torch.randint(0, len(labels), (len(unique),), generator=gen)]
    return draws[inverse]
