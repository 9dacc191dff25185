"""Shared plumbing of the probing modules (private): features and labels in, examples out.

`site_examples` turns a captured site value and its labels into examples; `labelled_chunks` and
`collect_examples` stream a dataset (in memory, cut into ``batch_size`` chunks, or a list or
iterator of batches with one label array per batch) through the model and keep only the labelled
rows of each chunk, so the site's value of the whole dataset (padding included) is never held;
`behaviour_changes` scores edits of a site chunk by chunk; `split_by_input` holds out whole inputs,
`control_labels` draws the control task of Hewitt & Liang.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core.batching import batches, stream
from ..core.errors import InputError, InputTypeError
from ..core.hooks import Callback, capture, patch
from ..core.inputs import batch_size_of, validate_inputs
from ..core.sites import Site, resolve_site
from ..core.types import Inputs

__all__: list[str] = []


def _as_matrix(x: Any, name: str = "X", *, keep_float32: bool = False) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x.detach().cpu())
    if t.ndim != 2 or t.shape[0] == 0 or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise InputError(f"{name} must be a non-empty (n, d) array of numbers, got {t.dtype} of shape {tuple(t.shape)}.")
    t = t if keep_float32 and t.dtype == torch.float32 else t.to(torch.float64)
    # a finite sum means every entry is finite (NaN and inf propagate); only an overflowing sum needs the full check
    if not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
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


def is_batch_stream(inputs: Any) -> bool:
    """True for a list or iterator of input batches (not a single tensor, tuple or dict of inputs)."""
    return not isinstance(inputs, (Tensor, tuple, Mapping, str, bytes)) and isinstance(inputs, Iterable)


Chunk = tuple[Inputs, Tensor, Tensor | None]


def labelled_chunks(inputs: Any, labels: Any, groups: Any | None, batch_size: int) -> Iterator[Chunk]:
    """``(inputs, labels, groups)`` per chunk, checked where they can be before any forward pass.

    In-memory ``inputs`` (a tensor, tuple or dict) are cut into ``batch_size`` rows with their
    labels; a list or iterator of batches comes with a list or iterator of label arrays, one per
    batch (and of groups, if given), e.g. batches padded to different lengths.
    """
    if not is_batch_stream(inputs):
        y = _int_array("labels", labels)
        n = batch_size_of(inputs)
        if y.ndim == 0 or y.shape[0] != n:
            raise InputError(f"labels have {0 if y.ndim == 0 else y.shape[0]} entries but the inputs hold {n} "
                             "examples; give one label per input, or (batch, seq) labels for a (batch, seq, d) site.")
        g = None if groups is None else _int_array("groups", groups)
        if g is not None and g.shape != y.shape:
            raise InputError(f"groups have shape {tuple(g.shape)} but labels {tuple(y.shape)}; give one group per "
                             "label.")
        return ((chunk, y[i:i + batch_size], None if g is None else g[i:i + batch_size])
                for i, chunk in zip(range(0, n, batch_size), batches(inputs, batch_size), strict=True))
    if isinstance(labels, (Tensor, np.ndarray)) or not isinstance(labels, Iterable):
        raise InputTypeError(f"with a list or iterator of batches, labels must be a list or iterator of label "
                             f"arrays, one per batch; got {type(labels).__name__}.")
    if groups is not None and (isinstance(groups, (Tensor, np.ndarray)) or not isinstance(groups, Iterable)):
        raise InputTypeError(f"with a list or iterator of batches, groups must be a list or iterator of group "
                             f"arrays, one per batch; got {type(groups).__name__}.")
    if all(isinstance(v, (list, tuple)) for v in (inputs, labels)) and len(inputs) != len(labels):
        raise InputError(f"{len(inputs)} batches but {len(labels)} label arrays; give one label array per batch.")

    def chunks() -> Iterator[Chunk]:
        sentinel = object()
        label_iter, group_iter = iter(labels), None if groups is None else iter(groups)
        for i, batch in enumerate(inputs):
            y = next(label_iter, sentinel)
            g = None if group_iter is None else next(group_iter, sentinel)
            if y is sentinel or g is sentinel:
                raise InputError(f"batch {i} has no label (or group) array; give one per batch.")
            yield batch, _int_array("labels", y), None if g is None else _int_array("groups", g)

    return chunks()


def collect_examples(model: nn.Module, chunks: Iterable[Chunk], site: Site) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Stream ``chunks`` through the model; keep the labelled rows: ``(features, labels, groups, input_index)``.

    Each chunk's site value is captured under no_grad and reduced at once to its labelled rows
    (`site_examples`), so memory holds the labelled examples only. Default groups (one per example)
    and input indices run on across chunks. The result equals `site_examples` on the whole dataset.
    """
    feats, ys, gs, rows = [], [], [], []
    n_inputs = n_examples = 0
    seen = False
    for batch, y, g in chunks:
        seen = True
        validate_inputs(model, batch)
        with torch.no_grad():
            value = capture(model, batch, [site])[site].detach()
        n = value.shape[0]
        if y.ndim == 0 or not bool((y >= 0).any()):  # nothing labelled here (a bad shape is refused below)
            fits = y.ndim == 1 and y.shape[0] == n or y.ndim == 2 and value.ndim == 3 and \
                tuple(value.shape[:2]) == tuple(y.shape)
            if not fits:
                site_examples(value, y, g)  # raises the shape error
            n_inputs, n_examples = n_inputs + n, n_examples + y.numel()
            continue
        if g is None:  # one group per example, numbered across the dataset
            g = (torch.arange(y.numel()) + n_examples).view(y.shape)
        x, yy, gg, rr = site_examples(value, y, g)
        feats.append(x.cpu())
        ys.append(yy)
        gs.append(gg)
        rows.append(rr + n_inputs)
        n_inputs += n
        n_examples += y.numel()
    if not seen:
        raise InputError("the data yielded no batch; pass a non-empty dataset.")
    if not ys:
        raise InputError("every label is negative (< 0 means 'no label here'); give some labelled examples.")
    y_all = torch.cat(ys)
    widths = {x.shape[1] for x in feats}
    if len(widths) > 1:
        raise InputError(f"the site's value changes width across batches ({sorted(widths)}); a probe needs one "
                         "feature size.")
    width = widths.pop()
    return torch.cat([x.reshape(-1, width) for x in feats]), y_all, torch.cat(gs), torch.cat(rows)


def behaviour_changes(model: nn.Module, chunks: Iterable[Inputs], site: Site, edits: list[Callback],
                      metric: Callable[[Any], Tensor] | None) -> list[float]:
    """Per edit: the fraction of predictions it changes (``metric`` None) or ``mean |Δ metric|``, over all chunks.

    The default prediction is the argmax of the output's last dim at every row and position.
    Chunks are read once (the unedited run and every edit of a chunk, then the next chunk).
    """
    sums = [0.0] * len(edits)
    count = 0
    for chunk in chunks:
        with torch.no_grad():
            before = _behaviour(patch(model, chunk, {site: lambda v, s: None}), metric)
            count += before.numel()
            for j, edit in enumerate(edits):
                after = _behaviour(patch(model, chunk, {site: edit}), metric)
                if after.shape != before.shape:
                    raise InputError(f"metric returned shape {tuple(after.shape)} after the edit but "
                                     f"{tuple(before.shape)} before; return one score per row.")
                sums[j] += float((after != before).double().sum() if metric is None
                                 else (after - before).abs().sum())
    if count == 0:
        raise InputError("the data yielded no batch; pass a non-empty dataset.")
    return [s / count for s in sums]


def _behaviour(output: Any, metric: Callable[[Any], Tensor] | None) -> Tensor:
    if metric is not None:
        return metric(output).double()
    if not isinstance(output, Tensor) or not output.is_floating_point() or output.ndim < 2:
        raise InputError("the default behaviour is the model's prediction (argmax over the last dim of a floating "
                         "output with a batch dim); give metric= for other outputs.")
    return output.argmax(-1).flatten()
