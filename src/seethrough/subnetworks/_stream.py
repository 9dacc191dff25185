"""The residual-stream engine behind `find_circuit` and `faithfulness` (private to `seethrough.subnetworks`).

A `Stream` is a validated problem: writer paths whose outputs are summed into one stream, reader
paths whose input is that sum, their run order, and each writer's output on the clean and the
corrupted inputs. `run_edges` is the one engine: many copies of the clean batch, stacked
copy-major, each with its own set of corrupted edges (edge ``(w, r)`` corrupted: reader ``r``
sees ``w``'s corrupted output in place of what ``w`` gave in this run). `reader_gradients` reads
the metric's gradient at every reader's input (optionally along an interpolation of the first
writer's output, for EAP-IG). Every hook is registered through `seethrough.core.hooks`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core.checks import check_int
from ..core.errors import InputError, InputTypeError
from ..core.hooks import Callback, hooks
from ..core.inputs import repeat_inputs, validate_inputs
from ..core.interventions import check_ablation, resample_indices
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from ._metrics import metric_means

__all__: list[str] = []

Edge = tuple[str, str]


@dataclass(frozen=True)
class Stream:
    model: nn.Module
    clean: Inputs
    metric: Callable[[Any], Tensor]
    n: int
    writers: tuple[str, ...]  # in run order
    readers: tuple[str, ...]  # in run order
    edges: tuple[Edge, ...]  # (writer, reader), writer ran before reader; readers in order, then writers
    clean_out: dict[str, Tensor]
    corrupted_out: dict[str, Tensor]
    clean_mean: float
    corrupted_mean: float

    def incoming(self, reader: str) -> list[str]:
        return [w for w, r in self.edges if r == reader]


def _paths(name: str, paths: Sequence[str]) -> tuple[str, ...]:
    if isinstance(paths, str) or not isinstance(paths, Sequence):
        raise InputTypeError(f"{name} must be a list of module paths, got {type(paths).__name__}.")
    out = tuple(paths)
    if not out or not all(isinstance(p, str) for p in out) or len(set(out)) != len(out):
        raise InputError(f"{name} must be distinct module path strings (at least one), got {list(out)}.")
    return out


def _record(model: nn.Module, inputs: Inputs, writers: tuple[str, ...],
            readers: tuple[str, ...]) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[Site, int]]:
    """Writer outputs, reader inputs and the step at which each was seen, in one clean forward pass."""
    seen: dict[Site, int] = {}
    values: dict[Site, Tensor] = {}

    def store(value: Tensor, site: Site) -> None:
        seen[site] = len(seen)
        values[site] = value.detach().clone()

    sites = [Site(w) for w in writers] + [Site(r, point="input") for r in readers]
    ctx = hooks(model, dict.fromkeys(sites, store), refuse_repeats=True)
    with torch.no_grad(), ctx:
        ctx.call(inputs)
    return ({w: values[Site(w)] for w in writers}, {r: values[Site(r, point="input")] for r in readers}, seen)


def prepare(model: nn.Module, clean: Inputs, corrupted: Inputs, metric: Callable[[Any], Tensor],
            writers: Sequence[str], readers: Sequence[str], *, ablation: str | None = None, seed: int = 0) -> Stream:
    """Validate everything, order writers and readers by the clean run, and check the residual form.

    ``ablation`` says what a corrupted edge carries: None, the writer's output on the paired
    corrupted example; ``"mean"``, its mean over the corrupted batch (per position for sequence
    values); ``"zero"``, zeros; ``"resample"``, its output on a corrupted example drawn uniformly
    with replacement (`seethrough.core.resample_indices` with ``seed``). The corrupted mean is
    then the metric with every edge so ablated.
    """
    if ablation is not None:
        check_ablation(ablation)
    seed = check_int("seed", seed, at_least=0)
    writers, readers = _paths("writers", writers), _paths("readers", readers)
    for path in writers + readers:  # resolve every path before any forward pass
        resolve_site(model, path)
    clean_mean, corrupted_mean = metric_means(model, clean, corrupted, metric, require_change=False)
    clean_out, reader_in, seen = _record(model, clean, writers, readers)
    corrupted_out, _, _ = _record(model, corrupted, writers, readers)
    w_order = sorted(writers, key=lambda w: seen[Site(w)])
    r_order = sorted(readers, key=lambda r: seen[Site(r, point="input")])
    edges: list[Edge] = []
    for r in r_order:
        before = [w for w in w_order if seen[Site(w)] < seen[Site(r, point="input")]]
        value = reader_in[r]
        total = sum((clean_out[w] for w in before), torch.zeros_like(value)) if before else torch.zeros_like(value)
        if total.shape != value.shape or not torch.allclose(total, value, rtol=1e-4, atol=1e-5 * (1 + float(
                value.abs().max()))):
            raise InputError(f"the input of reader {r!r} is not the sum of the outputs of the writers before it "
                             f"({before}); find_circuit needs a residual stream (a norm between the stream and "
                             f"{r!r} breaks it: name the norm as the reader instead).")
        edges.extend((w, r) for w in before)
    n = validate_inputs(model, clean)
    if ablation is not None:
        corrupted_out = {w: ablated(v, ablation, n, seed) for w, v in corrupted_out.items()}
    stream = Stream(model, clean, metric, n, tuple(w_order), tuple(r_order), tuple(edges), clean_out, corrupted_out,
                    clean_mean, corrupted_mean)
    if ablation is None or not edges:
        return stream
    everything = float(run_edges(stream, [frozenset(edges)]).mean())
    return dataclasses.replace(stream, corrupted_mean=everything)


def ablated(value: Tensor, ablation: str, n: int, seed: int) -> Tensor:
    """What a corrupted edge carries from a writer whose corrupted outputs are ``value``."""
    if ablation == "zero":
        return torch.zeros_like(value)
    if ablation == "mean":
        return value.mean(0, keepdim=True).expand_as(value).clone()
    return value[resample_indices(value.shape[0], n, seed=seed)[0].to(value.device)]


def _tile(value: Tensor, copies: int) -> Tensor:
    return value.repeat(copies, *([1] * (value.ndim - 1)))


def _rows(flags: Tensor, n: int, like: Tensor) -> Tensor:
    """``(copies,)`` 0/1 flags as a per-row factor broadcastable to ``like`` (rows copy-major)."""
    return flags.to(like).repeat_interleave(n).view(-1, *([1] * (like.ndim - 1)))


def run_edges(stream: Stream, removed: Sequence[frozenset[Edge] | set[Edge]], *, max_rows: int = 4096) -> Tensor:
    """``(len(removed), n)``: the metric with each set of edges corrupted, one copy of the batch per set."""
    per_pass = max(1, max_rows // stream.n)
    removed = list(removed)
    return torch.cat([_run_chunk(stream, removed[start:start + per_pass])
                      for start in range(0, len(removed), per_pass)])


def _run_chunk(stream: Stream, chunk: list[frozenset[Edge] | set[Edge]]) -> Tensor:
    """One forward pass over ``len(chunk)`` copies of the clean batch, copy ``j`` with ``chunk[j]`` corrupted."""
    n, c = stream.n, len(chunk)
    flags = {e: torch.tensor([float(e in s) for s in chunk]) for e in stream.edges}
    current: dict[str, Tensor] = {}  # each writer's output in this pass

    def store(value: Tensor, site: Site) -> None:
        current[site.path] = value

    def reader(path: str) -> Callback:
        def edit(value: Tensor, site: Site) -> Tensor | None:
            new = value
            for w in stream.incoming(path):
                f = flags[(w, path)]
                if bool(f.any()):
                    new = new + _rows(f, n, value) * (_tile(stream.corrupted_out[w], c) - current[w])
            return new

        return edit

    callbacks: dict[Site, Callback] = {Site(w): store for w in stream.writers}
    callbacks.update({Site(r, point="input"): reader(r) for r in stream.readers})
    ctx = hooks(stream.model, callbacks, refuse_repeats=True)
    with torch.no_grad(), ctx:
        scores = stream.metric(ctx.call(repeat_inputs(stream.clean, c)))
    if not isinstance(scores, Tensor) or tuple(scores.shape) != (c * n,):
        raise InputError(f"metric must return one score per row, ({c * n},) for {c} copies of {n} examples; "
                         f"got {tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__}.")
    return scores.detach().double().view(c, n)


def reader_gradients(stream: Stream, alphas: Sequence[float] | None = None) -> dict[str, Tensor]:
    """The metric's gradient at each reader's input, per example, averaged over interpolation steps.

    ``alphas=None``: at the clean run (EAP). Otherwise copy ``k`` runs with the first writer's
    output set to ``corrupted + alphas[k] * (clean - corrupted)`` (EAP-IG) and the gradients are
    averaged over the copies. Only zero leaves added at the readers are differentiated, so no
    parameter gets a ``.grad``.
    """
    n = stream.n
    c = 1 if alphas is None else len(alphas)
    leaves: dict[str, Tensor] = {}

    def reader(value: Tensor, site: Site) -> Tensor:
        leaf = torch.zeros_like(value, requires_grad=True)
        leaves[site.path] = leaf
        return value + leaf

    callbacks: dict[Site, Callback] = {Site(r, point="input"): reader for r in stream.readers}
    if alphas is not None:
        first = stream.writers[0]
        lo, hi = stream.corrupted_out[first], stream.clean_out[first]
        a = torch.tensor(list(alphas), dtype=lo.dtype, device=lo.device).repeat_interleave(n)
        path = _tile(lo, c) + a.view(-1, *([1] * (lo.ndim - 1))) * _tile(hi - lo, c)
        callbacks[Site(first)] = lambda value, site: path.to(value)
    ctx = hooks(stream.model, callbacks, refuse_repeats=True)
    with torch.enable_grad(), ctx:
        scores = stream.metric(ctx.call(repeat_inputs(stream.clean, c)))
        if not isinstance(scores, Tensor) or tuple(scores.shape) != (c * n,):
            raise InputError(f"metric must return one score per row, ({c * n},); got "
                             f"{tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__}.")
        order = [r for r in stream.readers if r in leaves]
        grads = torch.autograd.grad(scores.sum(), [leaves[r] for r in order], allow_unused=True)
    out = {}
    for r, g in zip(order, grads, strict=True):
        g = torch.zeros_like(leaves[r]) if g is None else g.detach()
        out[r] = g.view(c, n, *g.shape[1:]).mean(0)
    return out
