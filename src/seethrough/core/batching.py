"""Streaming a dataset through a model in chunks, with bounded memory.

`batches` cuts in-memory inputs into chunks; `stream` runs `capture` on each chunk under
``torch.no_grad`` and yields the values with the offset of the chunk's first row, so statistics
(see `seethrough.core.stats`) can be accumulated without holding the whole dataset's activations.
`sharded_pass` splits a dataset pass into shards, runs them through any ``map``-like callable
(in this process by default; Ray tasks with `seethrough.bench.executors.ray_map`) and merges
the shards' mergeable states in shard order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from .checks import check_int
from .errors import InputError, InputTypeError
from .hooks import capture
from .inputs import batch_size_of, slice_inputs
from .sites import Site, as_sites, resolve_site
from .stats import Mergeable
from .types import Inputs

__all__ = ["batches", "stream", "shards", "sharded_pass"]

S = TypeVar("S", bound=Mergeable)


def batches(inputs: Inputs, batch_size: int) -> Iterator[Inputs]:
    """Yield consecutive chunks of at most ``batch_size`` rows of ``inputs``.

    Example:
        >>> [b.shape[0] for b in batches(torch.zeros(10, 3), 4)]
        [4, 4, 2]
    """
    check_int("batch_size", batch_size, at_least=1)
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


def shards(inputs: Inputs, n_shards: int) -> list[tuple[Inputs, int]]:
    """Cut ``inputs`` into ``n_shards`` contiguous shards as even as possible; ``(shard, offset)`` pairs.

    The offset is the dataset index of the shard's first row. Fewer shards come back when there
    are fewer rows than shards (a shard is never empty).

    Example:
        >>> [(s.shape[0], offset) for s, offset in shards(torch.zeros(10, 3), 3)]
        [(3, 0), (3, 3), (4, 6)]
    """
    n_shards = check_int("n_shards", n_shards, at_least=1)
    n = batch_size_of(inputs)
    if n == 0:
        raise InputError("inputs have an empty batch; pass at least one example.")
    cuts = sorted({n * i // n_shards for i in range(n_shards)} | {n})
    return [(slice_inputs(inputs, start, stop), start) for start, stop in zip(cuts[:-1], cuts[1:], strict=True)]


def _run_shard(fn: Callable[[Inputs, int], S], shard: tuple[Inputs, int]) -> S:
    return fn(*shard)


def sharded_pass(inputs: Inputs, fn: Callable[[Inputs, int], S], *, n_shards: int = 1,
                 mapper: Callable[..., Iterable[Any]] = map) -> S:
    """One dataset pass split into shards: ``fn(shard, offset) -> state`` on each, merged in shard order.

    The states must be mergeable (``a.merge(b)`` folds in ``b`` and returns ``a``; every state of
    `seethrough.core.stats` and `seethrough.core.quantiles` is). Shards are contiguous, so
    ``offset + i`` is the dataset index of a shard's row ``i`` and index-keyed states (`TopK`)
    give the same result as one pass.

    Args:
        inputs: model inputs (a tensor, tuple or dict) held in memory.
        fn: builds the state of one shard; ``offset`` is the index of its first row.
        n_shards: how many shards (fewer if there are fewer rows).
        mapper: a ``map``-like callable, ``mapper(f, items)`` → results in order: the builtin
            ``map`` (serial, in this process; the default), ``concurrent.futures.Executor.map``, or
            `seethrough.bench.executors.ray_map` for Ray tasks. ``fn`` must then be picklable.

    Returns:
        The merged state of the whole pass.

    Example:
        >>> from seethrough.core.stats import RunningMean
        >>> def shard_mean(shard, offset):
        ...     m = RunningMean(); m.update(shard); return m
        >>> sharded_pass(torch.arange(10.0)[:, None], shard_mean, n_shards=3).mean.item()
        4.5
    """
    from functools import partial

    states = iter(mapper(partial(_run_shard, fn), shards(inputs, n_shards)))
    merged = next(states)
    for state in states:
        merged = merged.merge(state)
    return merged
