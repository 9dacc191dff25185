"""Causal checks of a circuit finding: run the model with sets of residual-stream edges corrupted (private).

`validate` tests a ``"circuit"`` `Finding` here: its writers' outputs are recorded on the inputs and
on the reference (corrupted) inputs, the residual form is checked (each reader's input is the sum of
the earlier writers' outputs), and `edge_means` runs stacked copies of the inputs, copy ``j`` with
the edges of ``removed[j]`` carrying the reference value (or its zero / mean / resample ablation)
in place of the writer's own output. The engine is `seethrough.core.edges`, the one
`seethrough.subnetworks`' circuits run on; tests/evidence/test_validate_circuit.py checks that the
finding's validation gives the numbers of `circuit_significance` and `faithfulness_curve`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..core.edges import Edge, ablated_reference, record_stream, residual_edges, run_edges
from ..core.errors import InputError
from ..core.inputs import validate_inputs
from ..core.interventions import check_ablation
from ..core.sites import resolve_site
from ..core.types import Inputs

__all__: list[str] = []


@dataclass(frozen=True)
class EdgeProblem:
    model: nn.Module
    inputs: Inputs
    metric: Callable[[Any], Tensor]
    n: int
    writers: tuple[str, ...]  # in run order
    readers: tuple[str, ...]  # in run order
    edges: tuple[Edge, ...]  # readers in run order, each reader's writers in run order
    clean_out: dict[str, Tensor]
    reference_out: dict[str, Tensor]


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
    values, reader_in, seen = record_stream(model, inputs, writers, readers)
    reference_out, _, _ = record_stream(model, reference, writers, readers)
    w_order, r_order, edges = residual_edges(values, reader_in, seen,
                                             hint="a circuit finding needs the residual stream it was found on.")
    if ablation is not None:
        reference_out = {w: ablated_reference(v, ablation, n, int(evidence.get("seed", 0)))
                         for w, v in reference_out.items()}
    return EdgeProblem(model, inputs, metric, n, w_order, r_order, edges, values, reference_out)


def edge_means(problem: EdgeProblem, removed: Sequence[frozenset[Edge]]) -> Tensor:
    """``(len(removed), n)`` metric values: copy ``j`` of the inputs with the edges ``removed[j]`` corrupted."""
    return run_edges(problem.model, problem.inputs, problem.metric, problem.n, problem.writers, problem.readers,
                     problem.edges, problem.reference_out, removed)
