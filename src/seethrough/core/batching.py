"""Streaming a dataset through a model in chunks, with bounded memory.

`batches` cuts in-memory inputs into chunks; `stream` runs `capture` on each chunk under
``torch.no_grad`` and yields the values with the offset of the chunk's first row, so statistics
(see `seethrough.core.stats`) can be accumulated without holding the whole dataset's activations.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from .errors import InputError, InputTypeError
from .hooks import capture
from .inputs import batch_size_of, slice_inputs
from .sites import Site, as_sites, resolve_site
from .types import Inputs

__all__ = ["batches", "stream"]


def batches(inputs: Inputs, batch_size: int) -> Iterator[Inputs]:
    """Yield consecutive chunks of at most ``batch_size`` rows of ``inputs``.

    Example:
        >>> [b.shape[0] for b in batches(torch.zeros(10, 3), 4)]
        [4, 4, 2]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}.")
    n = batch_size_of(inputs)
    if n == 0:
        raise InputError("inputs have an empty batch; pass at least one example.")
    for start in range(0, n, batch_size):
        yield slice_inputs(inputs, start, min(start + batch_size, n))


def stream(model: nn.Module, chunks: Iterable[Inputs], sites: Site | str | Iterable[Site | str], *,
           progress: bool = False, total: int | None = None) -> Iterator[tuple[int, dict[Any, Tensor]]]:
    """Capture ``sites`` on every chunk; yield ``(offset, {site: tensor})`` per chunk.

    Each capture runs under ``torch.no_grad`` (the caller's code between chunks keeps its own
    grad mode), so no graph is kept between chunks; memory is bounded by one
    chunk's activations. Sites are resolved before the first chunk is read.

    Args:
        model: any ``nn.Module``.
        chunks: an iterable of model inputs, e.g. ``batches(x, 256)`` or a DataLoader yielding
            tensors / tuples / dicts.
        sites: as for `capture`.
        progress: show a tqdm progress bar (``total`` = number of chunks, if known).

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 2))
        >>> [(offset, v["0"].shape[0]) for offset, v in stream(model, batches(torch.ones(5, 3), 2), "0")]
        [(0, 2), (2, 2), (4, 1)]
    """
    keys = as_sites(sites)
    for key in keys:
        resolve_site(model, key)
    if not isinstance(chunks, Iterable):
        raise InputTypeError(f"chunks must be an iterable of model inputs, got {type(chunks).__name__}.")
    iterator: Iterable[Inputs] = chunks
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(chunks, total=total, desc="stream", unit="batch")
    offset = 0
    seen = False
    for chunk in iterator:
        seen = True
        with torch.no_grad():  # only around our own work: never while the caller's loop body runs
            values = capture(model, chunk, keys)
        yield offset, values
        offset += batch_size_of(chunk)
    if not seen:
        raise InputError("the data yielded no batch; pass a non-empty dataset.")
