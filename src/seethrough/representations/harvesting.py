"""Sharded harvesting: a site's activations computed shard by shard, stored on disk, read back in batches.

Representations / dictionary learning (survey §5.3). `site_activations` re-runs the model every
epoch; for a large dataset or an expensive model `harvest` runs it once: the inputs are cut into
contiguous shards (`core.batching.shards`), each shard is streamed through the model chunk by
chunk by any ``map``-like executor (the builtin ``map``, or `seethrough.bench.executors.ray_map`
for Ray tasks) and written as safetensors files of at most ``rows_per_file`` rows, so a worker's
memory is bounded by one file whatever the dataset size. The `Harvest` it returns is a
re-iterable of ``(rows, d)`` batches in dataset order, the same rows whatever the number of shards,
for `SparseAutoencoder.fit` (or, harvested at a module's input and output, `Transcoder.fit`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..core.batching import batches, shards, stream
from ..core.checks import check_int
from ..core.errors import InputError, InputTypeError, LoadError
from ..core.io import atomic_write, load_tensors, save_tensors
from ..core.sites import Site, as_sites, resolve_site
from ..core.types import Inputs

__all__ = ["Harvest", "harvest"]

_INDEX = "harvest.json"


class Harvest:
    """Activations stored by `harvest`: a re-iterable of ``(rows, d)`` float32 batches in dataset order.

    Attributes:
        directory: where the files are. files: their names, in dataset order; rows: each file's rows.
        n_rows, d: the sizes.
        site: the site's path and point. batch_size: rows per batch when iterating.
    """

    def __init__(self, directory: Path, files: list[str], rows: list[int], d: int, site: dict[str, str],
                 batch_size: int) -> None:
        self.directory, self.files, self.rows, self.d, self.site = directory, files, rows, d, site
        self.n_rows = sum(rows)
        self.batch_size = batch_size

    def __len__(self) -> int:
        """The number of batches one iteration yields."""
        return sum(-(-r // self.batch_size) for r in self.rows)

    def __iter__(self) -> Iterator[Tensor]:
        for name in self.files:  # one file in memory at a time
            rows = load_tensors(self.directory / name)[0]["activations"]
            yield from rows.split(self.batch_size)

    def tensor(self) -> Tensor:
        """All rows as one ``(n_rows, d)`` tensor (only when they fit in memory)."""
        return torch.cat(list(self)) if self.files else torch.zeros(0, self.d)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, batch_size: int = 256) -> Harvest:
        """Open a harvest written earlier (its ``harvest.json`` index lists the files)."""
        check_int("batch_size", batch_size, at_least=1)
        root = Path(directory)
        index = root / _INDEX
        if not index.is_file():
            raise LoadError(f"{str(root)!r} has no {_INDEX}; it is not a finished harvest (run harvest(...) again).")
        meta = json.loads(index.read_text())
        return cls(root, list(meta["files"]), [int(r) for r in meta["rows"]], int(meta["d"]), dict(meta["site"]),
                   batch_size)

    def __repr__(self) -> str:
        return f"Harvest({str(self.directory)!r}, n_rows={self.n_rows}, d={self.d}, files={len(self.files)})"


def _harvest_shard(model: nn.Module, site: Site, directory: Path, batch_size: int, rows_per_file: int,
                   shard: tuple[int, tuple[Inputs, int]]) -> list[tuple[str, int, int]]:
    """Stream one shard through the model; write its rows in files of at most ``rows_per_file`` rows."""
    number, (inputs, _) = shard
    written: list[tuple[str, int, int]] = []
    pending: list[Tensor] = []

    def flush() -> None:
        rows = torch.cat(pending)
        pending.clear()
        for part in rows.split(rows_per_file):
            name = f"shard{number:05d}-{len(written):05d}.safetensors"
            save_tensors(directory / name, {"activations": part.contiguous()})
            written.append((name, part.shape[0], part.shape[1]))

    held = 0
    for _, values in stream(model, batches(inputs, batch_size), [site]):
        value = values[site]
        axis = site.unit_axis(value)
        pending.append(value.movedim(axis, -1).reshape(-1, value.shape[axis]).detach().float().cpu())
        held += pending[-1].shape[0]
        if held >= rows_per_file:
            flush()
            held = 0
    if pending:
        flush()
    return written


def harvest(model: nn.Module, inputs: Inputs, site: Site | str, directory: str | os.PathLike[str], *,
            n_shards: int = 1, mapper: Callable[..., Iterable[Any]] = map, batch_size: int = 256,
            rows_per_file: int = 65_536) -> Harvest:
    """Run ``model`` once over ``inputs`` in shards and store the activations of ``site`` under ``directory``.

    Args:
        model: any ``nn.Module`` (left as found; run under ``no_grad``).
        inputs: model inputs held in memory (a tensor, tuple or dict), cut into ``n_shards``
            contiguous shards.
        site: one site; its unit axis becomes the last axis and every other axis becomes rows.
        directory: where the files go (created if needed); an earlier harvest there is replaced
            (its index is removed first, so an interrupted harvest is never read as finished).
        n_shards: how many shards (fewer when there are fewer examples).
        mapper: runs the shards, a ``map``-like callable: ``map`` (this process, the default),
            ``concurrent.futures.Executor.map``, or `seethrough.bench.executors.ray_map`; ``model``
            is then pickled to the workers.
        batch_size: examples per forward pass, and rows per batch when the harvest is read.
        rows_per_file: the most rows a file (and a worker's memory) holds.

    Returns:
        A `Harvest`: the same rows in the same order whatever ``n_shards`` and ``mapper``.

    Raises:
        SiteNotFoundError: unknown site. InputError: bad counts, or a non-empty batch of inputs missing.

    Example:
        >>> import tempfile
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     h = harvest(model, torch.randn(10, 3), "1", tmp, n_shards=3, batch_size=4)
        ...     h.n_rows, h.d, len(h.files), [tuple(b.shape) for b in h][:2]
        (10, 4, 3, [(3, 4), (3, 4)])
    """
    check_int("n_shards", n_shards, at_least=1)
    check_int("batch_size", batch_size, at_least=1)
    check_int("rows_per_file", rows_per_file, at_least=1)
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be an nn.Module, got {type(model).__name__}.")
    keys = as_sites(site)
    if len(keys) != 1:
        raise InputTypeError(f"give one site, got {len(keys)}.")
    key = keys[0] if isinstance(keys[0], Site) else Site(keys[0])
    resolve_site(model, key)
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise InputError(f"{str(root)!r} is a file; give a directory for the harvest.")
    root.mkdir(parents=True, exist_ok=True)
    (root / _INDEX).unlink(missing_ok=True)
    parts = list(enumerate(shards(inputs, n_shards)))
    written = [entry for found in mapper(partial(_harvest_shard, model, key, root, batch_size, rows_per_file), parts)
               for entry in found]
    widths = {d for _, _, d in written}
    if len(widths) != 1:
        raise InputError(f"{key!r} gave values of different widths {sorted(widths)} across shards.")
    files, rows = [name for name, _, _ in written], [r for _, r, _ in written]
    meta = {"files": files, "rows": rows, "d": widths.pop(), "site": {"path": key.path, "point": key.point}}
    atomic_write(root / _INDEX, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return Harvest(root, files, rows, int(meta["d"]), dict(meta["site"]), batch_size)
