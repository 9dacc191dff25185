"""Residual-stream edge patching: the one engine behind `subnetworks.find_circuit` and `evidence.validate`.

A residual stream has *writers* (modules whose outputs are summed into the stream) and *readers*
(modules whose input is that sum). Edge ``(w, r)`` is writer ``w``'s contribution to reader ``r``'s
input. `record_stream` records every writer's output and reader's input in one forward pass,
`residual_edges` orders them by that run and checks the residual form (each reader's input is the
sum of the writers' outputs before it), and `run_edges` runs many copies of the batch, stacked
copy-major, copy ``j`` with the edges of ``removed[j]`` carrying a reference value (the writer's
output on corrupted inputs, or its ablation, `ablated_reference`) in place of what the writer gave
in this run. Every hook goes through `seethrough.core.hooks`, so the model is left as found.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .errors import InputError
from .hooks import Callback, hooks
from .inputs import repeat_inputs
from .interventions import resample_indices
from .sites import Site
from .types import Inputs

__all__ = ["record_stream", "residual_edges", "ablated_reference", "run_edges"]

#: ``(writer path, reader path)``.
Edge = tuple[str, str]


def record_stream(model: nn.Module, inputs: Inputs, writers: Sequence[str], readers: Sequence[str]
                  ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[Site, int]]:
    """Writer outputs, reader inputs and the step at which each was seen, in one ``no_grad`` forward pass.

    Example:
        >>> model = nn.Sequential(nn.Identity(), nn.Identity())
        >>> out, into, seen = record_stream(model, torch.ones(1, 2), ["0"], ["1"])
        >>> out["0"].tolist(), into["1"].tolist(), list(seen.values())
        ([[1.0, 1.0]], [[1.0, 1.0]], [0, 1])
    """
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


def residual_edges(writer_out: Mapping[str, Tensor], reader_in: Mapping[str, Tensor], seen: Mapping[Site, int], *,
                   hint: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[Edge, ...]]:
    """Writers and readers in run order and every edge ``(w, r)`` with ``w`` run before ``r``.

    Raises:
        InputError: a reader's input is not the sum of the outputs of the writers run before it
            (``hint`` ends the message: how to fix the call).
    """
    w_order = tuple(sorted(writer_out, key=lambda w: seen[Site(w)]))
    r_order = tuple(sorted(reader_in, key=lambda r: seen[Site(r, point="input")]))
    edges: list[Edge] = []
    for r in r_order:
        before = [w for w in w_order if seen[Site(w)] < seen[Site(r, point="input")]]
        value = reader_in[r]
        total = sum((writer_out[w] for w in before), torch.zeros_like(value))
        if total.shape != value.shape or not torch.allclose(total, value, rtol=1e-4,
                                                            atol=1e-5 * (1 + float(value.abs().max()))):
            raise InputError(f"the input of reader {r!r} is not the sum of the outputs of the writers before it "
                             f"({before}); {hint}")
        edges.extend((w, r) for w in before)
    return w_order, r_order, tuple(edges)


def ablated_reference(value: Tensor, ablation: str, n: int, seed: int) -> Tensor:
    """What a corrupted edge carries from a writer whose corrupted outputs are ``value`` (``n`` rows).

    ``"zero"``: zeros; ``"mean"``: the mean over the rows (per position for sequence values);
    ``"resample"``: the output on a row drawn uniformly with replacement (`resample_indices` with ``seed``).

    Example:
        >>> ablated_reference(torch.tensor([[1.0], [3.0]]), "mean", 2, 0).tolist()
        [[2.0], [2.0]]
    """
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


def run_edges(model: nn.Module, inputs: Inputs, metric: Callable[[Any], Tensor], n: int, writers: Sequence[str],
              readers: Sequence[str], edges: Sequence[Edge], reference_out: Mapping[str, Tensor],
              removed: Sequence[frozenset[Edge] | set[Edge]], *, max_rows: int = 4096) -> Tensor:
    """``(len(removed), n)`` metric values: copy ``j`` of ``inputs`` with the edges of ``removed[j]`` corrupted.

    ``writers`` and ``readers`` are hooked (`residual_edges` gives them in run order and the
    ``edges``); a corrupted edge ``(w, r)`` adds ``reference_out[w] - w's output in this run`` to ``r``'s input.
    Copies run ``max(1, max_rows // n)`` to a forward pass, under ``no_grad``.

    Raises:
        InputError: a metric that does not return one score per row.

    Example:
        >>> model = nn.Sequential(nn.Identity(), nn.Identity())  # "0" writes the stream, "1" reads it
        >>> x = torch.tensor([[1.0], [2.0]])
        >>> run_edges(model, x, lambda y: y[:, 0], 2, ["0"], ["1"], [("0", "1")], {"0": torch.zeros(2, 1)},
        ...           [frozenset(), frozenset({("0", "1")})]).tolist()
        [[1.0, 2.0], [0.0, 0.0]]
    """
    per_pass = max(1, max_rows // n)
    removed = list(removed)
    return torch.cat([_run_chunk(model, inputs, metric, n, writers, readers, edges, reference_out,
                                 removed[start:start + per_pass]) for start in range(0, len(removed), per_pass)])


def _run_chunk(model: nn.Module, inputs: Inputs, metric: Callable[[Any], Tensor], n: int, writers: Sequence[str],
               readers: Sequence[str], edges: Sequence[Edge], reference_out: Mapping[str, Tensor],
               chunk: list[frozenset[Edge] | set[Edge]]) -> Tensor:
    """One forward pass over ``len(chunk)`` copies of the batch, copy ``j`` with ``chunk[j]`` corrupted."""
    c = len(chunk)
    flags = {e: torch.tensor([float(e in s) for s in chunk]) for e in edges}
    current: dict[str, Tensor] = {}  # each writer's output in this pass

    def store(value: Tensor, site: Site) -> None:
        current[site.path] = value

    def reader(path: str) -> Callback:
        incoming = [w for w, r in edges if r == path]

        def edit(value: Tensor, site: Site) -> Tensor:
            new = value
            for w in incoming:
                f = flags[(w, path)]
                if bool(f.any()):
                    new = new + _rows(f, n, value) * (_tile(reference_out[w], c) - current[w])
            return new

        return edit

    callbacks: dict[Site, Callback] = {Site(w): store for w in writers}
    callbacks.update({Site(r, point="input"): reader(r) for r in readers})
    ctx = hooks(model, callbacks, refuse_repeats=True)
    with torch.no_grad(), ctx:
        scores = metric(ctx.call(repeat_inputs(inputs, c)))
    if not isinstance(scores, Tensor) or tuple(scores.shape) != (c * n,):
        raise InputError(f"metric must return one score per row, ({c * n},) for {c} copies of {n} examples; "
                         f"got {tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__}.")
    return scores.detach().double().view(c, n)
