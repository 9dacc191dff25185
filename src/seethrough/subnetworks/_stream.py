"""The residual-stream engine behind `find_circuit` and `faithfulness` (private to `seethrough.subnetworks`).

A `Stream` is a validated problem: writer paths whose outputs are summed into one stream, reader
paths whose input is that sum, their run order, and each writer's output on the clean and the
corrupted inputs. `run_edges` runs `seethrough.core.edges`' engine on it: many copies of the clean
batch, stacked copy-major, each with its own set of corrupted edges (edge ``(w, r)`` corrupted:
reader ``r`` sees ``w``'s corrupted output in place of what ``w`` gave in this run).
`reader_gradients` reads the metric's gradient at every reader's input (optionally along an
interpolation of the first writer's output, for EAP-IG). Every hook is registered through `seethrough.core.hooks`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core import edges as edge_engine
from ..core.checks import check_int
from ..core.edges import Edge, ablated_reference, record_stream, residual_edges
from ..core.errors import InputError, InputTypeError
from ..core.hooks import Callback, hooks
from ..core.inputs import repeat_inputs, validate_inputs
from ..core.interventions import check_ablation
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from ._metrics import metric_means

__all__: list[str] = []


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
    clean_out, reader_in, seen = record_stream(model, clean, writers, readers)
    corrupted_out, _, _ = record_stream(model, corrupted, writers, readers)
    w_order, r_order, edges = residual_edges(clean_out, reader_in, seen, hint=(
        "find_circuit needs a residual stream (a norm between the stream and the reader breaks it: name the norm "
        "as the reader instead)."))
    n = validate_inputs(model, clean)
    if ablation is not None:
        corrupted_out = {w: ablated_reference(v, ablation, n, seed) for w, v in corrupted_out.items()}
    stream = Stream(model, clean, metric, n, w_order, r_order, edges, clean_out, corrupted_out, clean_mean,
                    corrupted_mean)
    if ablation is None or not edges:
        return stream
    everything = float(run_edges(stream, [frozenset(edges)]).mean())
    return dataclasses.replace(stream, corrupted_mean=everything)


def run_edges(stream: Stream, removed: Sequence[frozenset[Edge] | set[Edge]], *, max_rows: int = 4096) -> Tensor:
    """``(len(removed), n)``: the metric with each set of edges corrupted, one copy of the batch per set."""
    return edge_engine.run_edges(stream.model, stream.clean, stream.metric, stream.n, stream.writers,
                                 stream.readers, stream.edges, stream.corrupted_out, removed, max_rows=max_rows)


def _tile(value: Tensor, copies: int) -> Tensor:
    return value.repeat(copies, *([1] * (value.ndim - 1)))


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
