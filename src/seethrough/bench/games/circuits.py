"""Game: find the planted circuit of a compiled residual network (Subnetworks / circuits).

Each case is a compiled network (`zoo.circuits.compiled_circuit`): hand-set weights computing
``(x0 AND x1) XOR x2`` through an AND block and an XOR block, with 2-3 large, active distractor
blocks that nothing reads, in a randomly rotated stream. Clean and corrupted inputs are either
independent random bits, or *saturated* pairs (the AND unit is off on every clean input and on for
every corrupted one, where the gradient at the clean run is zero). The metric is the logit toward
the clean label. Each method scores every writer → reader edge (`subnetworks.find_circuit`);
scored by edge and node AUROC against the planted circuit, by the faithfulness of its top
edges (as many as planted) and by MIB's CMD over every circuit size. Each method also runs with mean and resample ablation of the
corrupted outputs (``method (mean)``, ``method (resample)``). Baselines: random scores, and "score = mean |writer output|".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ...core.hooks import capture
from ...evidence import per_example
from ...subnetworks import CIRCUIT_METHODS, faithfulness_curve, find_circuit
from ..zoo.circuits import circuit_pairs, compiled_circuit
from .base import Game, Metric, register

__all__ = ["Planted", "Answer"]

N_PAIRS = 64


@dataclass(frozen=True, eq=False)
class Planted:
    """One case: the compiled model, the clean/corrupted pair, the metric and the planted edges and nodes."""

    model: nn.Module
    clean: Tensor
    corrupted: Tensor
    metric: Callable[[Any], Tensor]
    writers: tuple[str, ...]
    readers: tuple[str, ...]
    edges: frozenset[tuple[str, str]]
    nodes: frozenset[str]


@dataclass(frozen=True)
class Answer:
    edge_scores: dict[tuple[str, str], float]
    node_scores: dict[str, float]


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "saturated": False, "n_pairs": N_PAIRS},
            {"seed": seed, "saturated": True, "n_pairs": N_PAIRS}]


def _build(case: Mapping[str, Any]) -> Planted:
    model, meta = compiled_circuit(case["seed"])
    clean, corrupted, labels = circuit_pairs(case["n_pairs"], case["seed"], saturated=case["saturated"])
    metric = per_example(lambda out, sign: sign * out[:, 0], sign=2.0 * labels - 1)
    return Planted(model, clean, corrupted, metric, tuple(meta["writers"]), tuple(meta["readers"]),
                   frozenset(tuple(e) for e in meta["edges"]), frozenset(meta["nodes"]))


def _method(method: str, ablation: str | None, planted: Planted, generator: torch.Generator) -> Answer:
    res = find_circuit(planted.model, planted.clean, planted.corrupted, planted.metric, writers=list(planted.writers),
                       readers=list(planted.readers), method=method, ablation=ablation)
    return Answer(dict(res.edge_scores), dict(res.node_scores))


def _all_edges(planted: Planted) -> list[tuple[str, str]]:
    order = {p: i for i, p in enumerate(planted.writers)}  # a block reads before it writes; head reads last
    return [(w, r) for r in planted.readers for w in planted.writers if order[w] < order.get(r, len(order))]


def _random(planted: Planted, generator: torch.Generator) -> Answer:
    edges = _all_edges(planted)
    nodes = list(dict.fromkeys([*planted.writers, *planted.readers]))
    return Answer(dict(zip(edges, torch.rand(len(edges), generator=generator).tolist(), strict=True)),
                  dict(zip(nodes, torch.rand(len(nodes), generator=generator).tolist(), strict=True)))


def _magnitude(planted: Planted, generator: torch.Generator) -> Answer:
    with torch.no_grad():
        values = capture(planted.model, planted.clean, [*planted.writers, "head"])
    size = {path: float(v.abs().mean()) for path, v in values.items()}
    return Answer({e: size[e[0]] for e in _all_edges(planted)}, size)


def _auroc(scores: Mapping[Any, float], positives: frozenset[Any]) -> float:
    pos = [s for k, s in scores.items() if k in positives]
    neg = [s for k, s in scores.items() if k not in positives]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))


def _score(answer: Answer, planted: Planted) -> dict[str, float]:
    edges = list(answer.edge_scores)
    ranked = [edges[i] for i in sorted(range(len(edges)), key=lambda i: (-answer.edge_scores[edges[i]], i))]
    curve = faithfulness_curve(planted.model, planted.clean, planted.corrupted, planted.metric,
                               writers=list(planted.writers), readers=list(planted.readers), ranking=ranked)
    return {"edge_auroc": _auroc(answer.edge_scores, planted.edges),
            "node_auroc": _auroc(answer.node_scores, planted.nodes),
            "faithfulness_at_k": float(curve.faithfulness[len(planted.edges)]), "cmd": curve.cmd}


GAME = register(Game(
    name="planted-circuits",
    item="Subnetworks / circuits (edge patching, EAP, EAP-IG, ACDC)",
    description=("Compiled residual networks computing (x0 AND x1) XOR x2 with 2-3 large active distractor blocks "
                 "nobody reads, in a rotated stream; clean/corrupted pairs random or saturated (the AND unit off on "
                 "every clean input). Methods score every writer -> reader edge; scored by edge and node AUROC "
                 "against the planted circuit and the faithfulness of the top-k edges (k = planted edges)."),
    metrics=(
        Metric("edge_auroc", chance=0.5, bar=0.95, description="AUROC of the edge scores for the planted edges"),
        Metric("node_auroc", chance=0.5, bar=0.95, description="AUROC of the node scores for the planted nodes"),
        Metric("faithfulness_at_k", chance=0.0, bar=0.95,
               description="metric kept by the top-k edges with every other edge corrupted (1 = all of it)"),
        # CMD's failing reference is 1: a ranking whose circuits keep nothing until every edge is in.
        Metric("cmd", chance=1.0, bar=0.05, higher_is_better=False,
               description="MIB's CMD: area under |1 - faithfulness| over the fraction of top edges kept"),
    ),
    cases=_cases,
    build=_build,
    # Every method with the paired corrupted values (the plain names), then with mean and resample
    # ablation of the corrupted outputs (the faithfulness score always uses the paired values).
    methods={**{method: partial(_method, method, None) for method in CIRCUIT_METHODS},
             **{f"{method} ({ablation})": partial(_method, method, ablation)
                for ablation in ("mean", "resample") for method in CIRCUIT_METHODS},
             "random": _random, "mean-abs-output": _magnitude},
    score=_score,
    baselines=frozenset({"random", "mean-abs-output"}),
    order=210,
))
