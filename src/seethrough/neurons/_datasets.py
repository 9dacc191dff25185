"""Dataset passes shared by the dataset-based neuron methods (private to neurons).

How the methods read data: in-memory inputs or an iterable of batches, cut into chunks, run in
one pass or split into shards (`seethrough.core.sharded_pass`), with a site's value viewed as
``(batch, n_units, positions)`` and, for ``(batch, seq, d)`` values, the positions that count
(`seethrough.core.position_mask`: an HF ``attention_mask`` by default).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from torch import Tensor, nn

from ..core.batching import batches, sharded_pass, stream
from ..core.checks import check_int
from ..core.errors import InputError, InputTypeError
from ..core.inputs import batch_size_of
from ..core.interventions import check_position_mask, position_mask
from ..core.sites import Site
from ..core.stats import Mergeable
from ..core.types import Inputs

__all__: list[str] = []

Data = Inputs | Iterable[Inputs]
Mask = Tensor | bool | None
Mapper = Callable[..., Iterable[Any]]
S = TypeVar("S", bound=Mergeable)


def _chunk_source(data: Data, batch_size: int, *, passes: int = 1) -> Callable[[], Iterable[Inputs]]:
    """A function returning a fresh iterable of chunks; refuses one-shot iterators when passes > 1."""
    check_int("batch_size", batch_size, at_least=1)
    if isinstance(data, (Tensor, tuple, Mapping)):
        return lambda: batches(data, batch_size)
    if not isinstance(data, Iterable) or isinstance(data, (str, bytes)):
        raise InputTypeError(f"data must be model inputs (a tensor, tuple or dict) or an iterable of input batches, "
                             f"got {type(data).__name__}.")
    if passes > 1 and iter(data) is data:
        raise InputError(f"this method reads the data {passes} or more times, but got a one-shot iterator "
                         f"({type(data).__name__}); pass a tensor, a list of batches or a DataLoader instead.")
    return lambda: data


def _dataset_pass(data: Data, fn: Callable[[Data, int], S], *, n_shards: int, mapper: Mapper) -> S:
    """``fn(shard, offset)`` over ``n_shards`` shards through ``mapper``, merged; iterables run as one shard here."""
    n_shards = check_int("n_shards", n_shards, at_least=1)
    if isinstance(data, (Tensor, tuple, Mapping)):
        return sharded_pass(data, fn, n_shards=n_shards, mapper=mapper)
    if n_shards != 1 or mapper is not map:
        raise InputError(f"n_shards={n_shards} with a mapper needs the data in memory as one tensor, tuple or dict "
                         f"(to cut into shards), got {type(data).__name__}; pass the inputs themselves, or n_shards=1.")
    return fn(data, 0)


def _units_last(value: Tensor, site: Site) -> tuple[Tensor, tuple[int, ...]]:
    """``(batch, n_units, positions)`` view of a site value, and the shape of its positions."""
    if value.ndim < 2:
        raise InputError(f"{site!r} gives values of shape {tuple(value.shape)}; a unit needs (batch, n_units, ...).")
    axis = site.unit_axis(value)
    moved = value.movedim(axis, 1)
    spatial = tuple(moved.shape[2:])
    return moved.reshape(moved.shape[0], moved.shape[1], -1), spatial


def _check_dataset_mask(data: Data, mask: Mask) -> None:
    """Validate ``mask=`` before any forward pass: None, False, or ``(N, seq)`` for in-memory data of N examples."""
    given = check_position_mask(mask)
    if given is not None and isinstance(data, (Tensor, tuple, Mapping)) and len(given) != batch_size_of(data):
        raise InputError(f"mask has {len(given)} rows but the data has {batch_size_of(data)} examples; pass one "
                         "(batch, seq) row per example, in data order.")


def _masked_stream(model: nn.Module, chunks: Iterable[Inputs], site: Site, mask: Mask, offset: int, *,
                   progress: bool = False, total: int | None = None) -> Iterator[tuple[int, Tensor, Tensor | None]]:
    """``(dataset index of the chunk's first row, site value, positions that count or None)`` per chunk.

    ``mask`` is the whole dataset's (rows picked by dataset index), or None for each chunk's own
    ``attention_mask`` (`seethrough.core.position_mask`), or False.
    """
    current: list[Inputs] = []

    def remember() -> Iterator[Inputs]:  # `stream` reads one chunk per value it yields
        for chunk in chunks:
            current[:] = [chunk]
            yield chunk

    for start, values in stream(model, remember(), [site], progress=progress, total=total):
        value, first = values[site], offset + start
        given = mask[first:first + len(value)] if isinstance(mask, Tensor) else mask
        if isinstance(mask, Tensor) and len(given) != len(value):
            raise InputError(f"mask has {len(mask)} rows but the data has more examples; pass one row per example.")
        yield first, value, position_mask(current[0], value, site, given)
