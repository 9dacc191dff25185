"""Causal checks of a circuit finding: run the model with sets of residual-stream edges corrupted (private).

`validate` tests a ``"circuit"`` `Finding` here: its writers' outputs are recorded on the inputs and
on the reference (corrupted) inputs, the residual form is checked (each reader's input is the sum of
the earlier writers' outputs), and `edge_means` runs stacked copies of the inputs, copy ``j`` with
the edges of ``removed[j]`` carrying the reference value (or its zero / mean / resample ablation)
in place of the writer's own output. The same computation as `seethrough.subnetworks`'s stream
engine, written again here because evidence sits below the taxonomy areas (`tests/test_layers.py`);
tests/evidence/test_validate_circuit.py checks the two agree on every number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core.errors import InputError
from ..core.hooks import Callback, hooks
from ..core.inputs import repeat_inputs, validate_inputs
from ..core.interventions import check_ablation, resample_indices
from ..core.sites import Site, resolve_site
from ..core.types import Inputs

__all__: list[str] = []

Edge = tuple[str, str]


@dataclass(frozen=True)
class EdgeProblem:
    model: nn.Module
    inputs: Inputs
    metric: Callable[[Any], Tensor]
    n: int
    readers: tuple[str, ...]
    edges: tuple[Edge, ...]  # readers in run order, each reader's writers in run order
    clean_out: dict[str, Tensor]
    reference_out: dict[str, Tensor]


def _record(model: nn.Module, inputs: Inputs, writers: Sequence[str],
            readers: Sequence[str]) -> tuple[dict[Site, Tensor], dict[Site, int]]:
    seen: dict[Site, int] = {}
    values: dict[Site, Tensor] = {}

    def store(value: Tensor, site: Site) -> None:
        seen[site] = len(seen)
        values[site] = value.detach().clone()

    sites = [Site(w) for w in writers] + [Site(r, point="input") for r in readers]
    ctx = hooks(model, dict.fromkeys(sites, store), refuse_repeats=True)
    with torch.no_grad(), ctx:
        ctx.call(inputs)
    return values, seen


def edge_problem(model: nn.Module, inputs: Inputs, reference: Inputs, metric: Callable[[Any], Tensor],
                 evidence: Mapping[str, Any]) -> EdgeProblem:
    """Check the circuit finding's stream on ``inputs`` and record every writer's output on both batches."""
    writers, readers = [str(w) for w in evidence["writers"]], [str(r) for r in evidence["readers"]]
    ablation = evidence.get("ablation")
    if ablation is not None:
        check_ablation(ablation)
    for path in writers + readers:
        resolve_site(model, path)
    n = validate_inputs(model, inputs)
    if validate_inputs(model, reference) != n:
        raise InputError(f"reference (the corrupted inputs) must pair with inputs example by example: {n} inputs, "
                         f"{validate_inputs(model, reference)} reference examples.")
    values, seen = _record(model, inputs, writers, readers)
    reference_values, _ = _record(model, reference, writers, readers)
    w_order = sorted(writers, key=lambda w: seen[Site(w)])
    edges: list[Edge] = []
    for r in sorted(readers, key=lambda r: seen[Site(r, point="input")]):
        before = [w for w in w_order if seen[Site(w)] < seen[Site(r, point="input")]]
        value = values[Site(r, point="input")]
        total = sum((values[Site(w)] for w in before), torch.zeros_like(value))
        if total.shape != value.shape or not torch.allclose(total, value, rtol=1e-4,
                                                            atol=1e-5 * (1 + float(value.abs().max()))):
            raise InputError(f"the input of reader {r!r} is not the sum of the outputs of the writers before it "
                             f"({before}); a circuit finding needs the residual stream it was found on.")
        edges.extend((w, r) for w in before)
    reference_out = {w: reference_values[Site(w)] for w in writers}
    if ablation == "zero":
        reference_out = {w: torch.zeros_like(v) for w, v in reference_out.items()}
    elif ablation == "mean":
        reference_out = {w: v.mean(0, keepdim=True).expand_as(v).clone() for w, v in reference_out.items()}
    elif ablation == "resample":
        rows = resample_indices(n, n, seed=int(evidence.get("seed", 0)))[0]
        reference_out = {w: v[rows.to(v.device)] for w, v in reference_out.items()}
    return EdgeProblem(model, inputs, metric, n, tuple(sorted(readers, key=lambda r: seen[Site(r, point="input")])),
                       tuple(edges), {w: values[Site(w)] for w in writers}, reference_out)


def edge_means(problem: EdgeProblem, removed: Sequence[frozenset[Edge]]) -> Tensor:
    """``(len(removed), n)`` metric values: copy ``j`` of the inputs with the edges ``removed[j]`` corrupted."""
    n, c = problem.n, len(removed)
    current: dict[str, Tensor] = {}

    def store(value: Tensor, site: Site) -> None:
        current[site.path] = value

    def reader(path: str) -> Callback:
        incoming = [w for w, r in problem.edges if r == path]

        def edit(value: Tensor, site: Site) -> Tensor:
            new = value
            for w in incoming:
                flags = torch.tensor([float((w, path) in s) for s in removed]).to(value)
                rows = flags.repeat_interleave(n).view(-1, *([1] * (value.ndim - 1)))
                ref = problem.reference_out[w].repeat(c, *([1] * (value.ndim - 1)))
                new = new + rows * (ref - current[w])
            return new

        return edit

    callbacks: dict[Site, Callback] = {Site(w): store for w in problem.clean_out}
    callbacks.update({Site(r, point="input"): reader(r) for r in problem.readers})
    ctx = hooks(problem.model, callbacks, refuse_repeats=True)
    with torch.no_grad(), ctx:
        scores = problem.metric(ctx.call(repeat_inputs(problem.inputs, c)))
    if not isinstance(scores, Tensor) or tuple(scores.shape) != (c * n,):
        raise InputError(f"metric must return one score per row, ({c * n},) for {c} copies of {n} examples.")
    return scores.detach().double().view(c, n)
