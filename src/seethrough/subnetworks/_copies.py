"""The engines behind `activation_patching` and `attribution_patching` (private to `seethrough.subnetworks`).

A `Pieces` is one site cut into pieces: a bool mask per piece (the whole value; one unit; one
position; one head, a contiguous group of units; or a position × unit/head pair) and the source
each piece takes (the corrupted run's value, or its zero, mean or resample ablation).
`run_batched` runs every piece of every site as one copy of the clean batch, the copies of all
sites stacked copy-major in as few forward passes as ``max_rows`` allows (one `patch` call per
pass, every site hooked in it). `check_chain` and `run_prefix` are the prefix-reusing path for
blocks the stream passes through one after another: a copy joins the batch at the block where
its piece is patched, so the blocks before it run once, on the clean batch, and never per copy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core.errors import InputError
from ..core.hooks import Callback, hooks, patch
from ..core.inputs import call_model, repeat_inputs
from ..core.sites import Site, resolve_site
from ..core.types import Inputs

__all__: list[str] = []


@dataclass(frozen=True)
class Pieces:
    """``masks[k]`` (bool, shaped like one example of the site's value) selects piece ``k``; it takes ``source``."""

    site: Site  # the whole site (no unit or position selection)
    masks: Tensor  # (n_pieces, *value.shape[1:])
    source: Tensor  # (n, *value.shape[1:])
    shape: tuple[int, ...]  # the effects' shape


def cut(site: Site, source: Tensor, n_heads: int | None) -> Pieces:
    """The pieces of ``site`` (as given, with its selection) for a value shaped like ``source``."""
    whole = dataclasses.replace(site, units=None, positions=None)
    rest = tuple(source.shape[1:])
    if site.positions is None and site.units is None and n_heads is None:
        return Pieces(whole, torch.ones((1, *rest), dtype=torch.bool, device=source.device), source, ())
    axis = site.unit_axis(source)
    n_units = source.shape[axis]
    groups: list[Any]
    if n_heads is not None:
        if site.units is not None:
            raise InputError(f"{site!r} selects units, but n_heads={n_heads} splits the whole unit axis into heads; "
                             "select positions only (or leave n_heads out).")
        if n_units % n_heads:
            raise InputError(f"{site!r} has {n_units} units along its unit axis, which n_heads={n_heads} does not "
                             "divide; a head is a contiguous group of n_units // n_heads units.")
        d_head = n_units // n_heads
        groups = [slice(h * d_head, (h + 1) * d_head) for h in range(n_heads)]
    elif site.units is not None:
        bad = [u for u in site.units if not -n_units <= u < n_units]
        if bad:
            raise InputError(f"units {bad} are out of range for {n_units} units at {site!r}.")
        groups = [u % n_units for u in site.units]
    else:
        groups = [slice(None)]
    positions: list[Any] = [slice(None)]
    if site.positions is not None:
        if source.ndim < 3 or axis == 1:
            raise InputError(f"{site!r} selects positions, but its value has shape {tuple(source.shape)}; positions "
                             "index dim 1 of (batch, seq, d) values.")
        seq = source.shape[1]
        bad = [p for p in site.positions if not -seq <= p < seq]
        if bad:
            raise InputError(f"positions {bad} are out of range for {seq} positions at {site!r}.")
        positions = [p % seq for p in site.positions]
    # piece (p, g) = position p (dim 1 of the value) and unit group g (along the unit axis), built by broadcasting
    dims = len(rest)
    at = torch.zeros((len(positions), source.shape[1]), dtype=torch.bool, device=source.device)
    for row, p in enumerate(positions):
        at[row, p] = True
    units = torch.zeros((len(groups), n_units), dtype=torch.bool, device=source.device)
    for row, g in enumerate(groups):
        units[row, g] = True
    if source.ndim < 3 or axis == 1:  # no position axis apart from the unit axis: every piece is a unit group
        at = torch.ones((len(positions), 1), dtype=torch.bool, device=source.device)
    pos_shape = [len(positions), 1] + [at.shape[1] if d == 0 else 1 for d in range(dims)]
    unit_shape = [1, len(groups)] + [n_units if d == axis - 1 else 1 for d in range(dims)]
    masks = (at.view(pos_shape) & units.view(unit_shape)).expand(len(positions), len(groups), *rest)
    masks = masks.reshape(len(positions) * len(groups), *rest)
    shape = tuple(n for n, given in ((len(positions), site.positions is not None),
                                     (len(groups), site.units is not None or n_heads is not None)) if given)
    return Pieces(whole, masks, source, shape)


def _check_scores(scores: Any, rows: int, copies: int) -> Tensor:
    if not isinstance(scores, Tensor) or tuple(scores.shape) != (rows,):
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise InputError(f"metric must return one score per row, ({rows},) for {copies} copies of "
                         f"{rows // max(copies, 1)} examples; got {got}.")
    return scores


def _split(means: Tensor, pieces: Sequence[Pieces]) -> list[Tensor]:
    sizes = [len(p.masks) for p in pieces]
    return list(means.split(sizes))


def run_batched(model: nn.Module, clean: Inputs, n: int, pieces: Sequence[Pieces],
                metric: Callable[[Any], Tensor], max_rows: int) -> list[Tensor]:
    """The metric's mean over the n examples for every piece, one list entry per `Pieces`.

    Every piece is one copy of the clean batch; ``max(1, max_rows // n)`` copies, of any sites,
    run in one forward pass, each site's hook editing the copies that are its own.
    """
    jobs = [(i, k) for i, p in enumerate(pieces) for k in range(len(p.masks))]
    per_pass = max(1, max_rows // n)
    means: list[Tensor] = []
    for start in range(0, len(jobs), per_pass):
        chunk = jobs[start:start + per_pass]
        c = len(chunk)
        at: dict[Site, list[tuple[int, int, int]]] = {}  # site -> (copy, pieces index, piece)
        for copy, (i, k) in enumerate(chunk):
            at.setdefault(pieces[i].site, []).append((copy, i, k))
        callbacks: dict[Site | str, Callback | Tensor] = {site: _edit(c, n, pieces, mine) for site, mine in at.items()}
        scores = _check_scores(metric(patch(model, repeat_inputs(clean, c), callbacks)), c * n, c)
        means.append(scores.detach().double().view(c, n).mean(1))
    return _split(torch.cat(means), pieces)


def _edit(c: int, n: int, pieces: Sequence[Pieces], mine: list[tuple[int, int, int]]) -> Callback:
    """The hook of one site in a pass over ``c`` copies: copy ``j`` of ``mine`` takes its piece's source."""

    def edit(value: Tensor, site: Site) -> Tensor:
        tiles = value.reshape(c, n, *value.shape[1:])
        source = pieces[mine[0][1]].source.to(value)
        full = torch.zeros((c, 1, *value.shape[1:]), dtype=torch.bool, device=value.device)
        for copy, i, k in mine:
            full[copy, 0] = pieces[i].masks[k]
        return torch.where(full, source.unsqueeze(0), tiles).view_as(value)

    return edit


# -- prefix reuse: a chain of blocks ------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """Blocks the stream passes through in order; ``stream[i]`` is block ``i``'s clean input (the last:
    the model's output)."""

    blocks: tuple[str, ...]
    modules: tuple[nn.Module, ...]
    stream: tuple[Tensor, ...]

    def start(self, site: Site) -> int | None:
        """The block at which a copy patched at ``site`` joins (``len(blocks)``: after the last), or None."""
        if site.call is not None or site.element is not None or site.path not in self.blocks:
            return None
        i = self.blocks.index(site.path)
        return i if site.point == "input" else i + 1


def check_chain(model: nn.Module, clean: Inputs, blocks: Sequence[str]) -> Chain:
    """Check on the clean batch that ``blocks`` form a chain; record the stream at each block.

    Each block's input must be the previous block's output and the model must return the last
    block's output. (That calling a block alone reproduces it is checked by `run_prefix`, on the
    clean rows it runs beside the first copies, for every block it calls.)
    """
    if isinstance(blocks, str) or not isinstance(blocks, Sequence) or not blocks \
            or not all(isinstance(b, str) for b in blocks) or len(set(blocks)) != len(blocks):
        raise InputError(f"blocks must be a list of distinct module paths, got {blocks!r}.")
    modules = tuple(resolve_site(model, b)[1] for b in blocks)
    seen: dict[Site, Tensor] = {}

    def store(value: Tensor, site: Site) -> None:
        seen[site] = value.detach().clone()

    sites = [Site(b, point=point) for b in blocks for point in ("input", "output")]
    ctx = hooks(model, dict.fromkeys(sites, store), refuse_repeats=True)
    with torch.no_grad(), ctx:
        out = ctx.call(clean)
    for before, after in zip(blocks, blocks[1:], strict=False):
        a, b = seen[Site(before)], seen[Site(after, point="input")]
        if a.shape != b.shape or not torch.equal(a, b):
            raise InputError(f"blocks: the input of {after!r} is not the output of {before!r}; list blocks the "
                             "stream passes through one after another (or leave blocks out).")
    last = seen[Site(blocks[-1])]
    if not isinstance(out, Tensor) or out.shape != last.shape or not torch.equal(out.detach(), last):
        raise InputError(f"blocks: the model returns {type(out).__name__}, not the output of the last block "
                         f"{blocks[-1]!r}; end blocks with the module that makes the model's output (or leave "
                         "blocks out).")
    stream = tuple(seen[Site(b, point="input")] for b in blocks) + (last,)
    return Chain(tuple(blocks), modules, stream)


def _check_alone(chain: Chain, block: int, got: Tensor) -> None:
    """``got``: what calling block ``block`` alone gave on the clean rows; it must be what the model's run gave."""
    want = chain.stream[block + 1]
    if not isinstance(got, Tensor) or got.shape != want.shape or not torch.allclose(
            got, want, rtol=1e-4, atol=1e-5 * (1 + float(want.abs().max()))):
        raise InputError(f"blocks: calling {chain.blocks[block]!r} on its input alone does not give what it gave in "
                         "the model's run (it needs other arguments, e.g. a mask); leave blocks out.")


def run_prefix(chain: Chain, n: int, pieces: Sequence[Pieces], starts: Sequence[int],
               metric: Callable[[Any], Tensor], max_rows: int) -> list[Tensor]:
    """As `run_batched`, for pieces at the blocks of ``chain`` (``starts[i]``: where ``pieces[i]`` joins).

    The copies of a pass are ordered by the block they join at; the batch grows there by their
    rows (the clean input of that block with the piece patched in), and runs on through the rest
    of the chain. The blocks before a copy's start never see it.
    """
    jobs = sorted(((starts[i], i, k) for i, p in enumerate(pieces) for k in range(len(p.masks))),
                  key=lambda job: job[0])
    per_pass = max(1, max_rows // n)
    means = [torch.empty(len(p.masks), dtype=torch.float64) for p in pieces]
    first = max(1, per_pass - 1)  # the first pass carries the clean rows too: one copy fewer
    bounds = [0, *range(first, len(jobs), per_pass), len(jobs)]
    with torch.no_grad():
        for begin, end in zip(bounds, bounds[1:], strict=False):
            chunk = jobs[begin:end]
            # the clean rows check every block the first pass calls (later passes start no earlier)
            check = begin == 0
            x: Tensor | None = chain.stream[chunk[0][0]] if check else None
            for block in range(chunk[0][0], len(chain.blocks) + 1):
                joining = [(i, k) for s, i, k in chunk if s == block]
                if joining:
                    clean_value = chain.stream[block]
                    rows = [torch.where(pieces[i].masks[k].unsqueeze(0), pieces[i].source.to(clean_value), clean_value)
                            for i, k in joining]
                    x = torch.cat(rows if x is None else [x, *rows])
                if block < len(chain.blocks) and x is not None:
                    x = call_model(chain.modules[block], x)
                    if check:
                        _check_alone(chain, block, x[:n])
            assert x is not None
            scores = _check_scores(metric(x[n:] if check else x), len(chunk) * n, len(chunk))
            per_copy = scores.detach().double().view(len(chunk), n).mean(1)
            for (_, i, k), value in zip(chunk, per_copy, strict=True):
                means[i][k] = value
    return means
