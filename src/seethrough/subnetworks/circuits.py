"""Circuits in a residual stream: which writer → reader edges carry a clean-vs-corrupted behaviour?

Subnetworks / circuits in the survey's taxonomy. ``writers`` are modules whose outputs are added into
one stream, ``readers`` modules whose input is that stream; an edge ``(writer, reader)`` joins a
writer to a later reader. `find_circuit` scores every edge for one clean/corrupted pair: exactly
(edge activation patching, every edge one copy of the batch in one stacked pass), by attribution
patching (EAP: one forward and one backward), by its integrated-gradients variant (EAP-IG,
interpolating the first writer's output) or by ACDC's iterative pruning. `faithfulness` runs the
model with every edge outside a circuit corrupted. One engine (`_stream.run_edges`) serves all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError
from ..core.interventions import Ablation
from ..core.results import Result, jsonable, new_figure
from ..core.types import Inputs
from ..evidence import Finding, fingerprint
from ._stream import Edge, Stream, prepare, reader_gradients, run_edges
from .verification import FaithfulnessCurve, faithfulness_curve

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["Circuit", "find_circuit", "faithfulness", "CIRCUIT_METHODS"]

#: The edge-scoring methods of `find_circuit`.
CIRCUIT_METHODS: tuple[str, ...] = ("exact", "eap", "eap-ig", "acdc")


@dataclass(frozen=True)
class Circuit(Result):
    """Edge and node scores (≥ 0, higher = more important) for one clean/corrupted pair.

    ``edge_scores[(writer, reader)]`` is in metric units: exact and ACDC, the absolute mean change
    of the metric when the edge is corrupted (ACDC: on top of the edges pruned before it); EAP and
    EAP-IG, the absolute first-order estimate of that change. A writer's node score is the sum of
    the scores of the edges it sends; a node that only reads sums the edges it receives.
    ``clean`` and ``corrupted`` are the metric's means on the two runs.
    """

    edge_scores: dict[Edge, float]
    node_scores: dict[str, float]
    method: str
    writers: tuple[str, ...]
    readers: tuple[str, ...]
    clean: float
    corrupted: float
    ablation: str | None = None
    seed: int = 0

    def select(self, k: int) -> list[Edge]:
        """The ``k`` highest-scoring edges, best first (ties: the earlier edge first)."""
        k = check_int("k", k, at_least=0, at_most=len(self.edge_scores))
        edges = list(self.edge_scores)
        order = sorted(range(len(edges)), key=lambda i: (-self.edge_scores[edges[i]], i))
        return [edges[i] for i in order[:k]]

    def verify(self, model: nn.Module, clean: Inputs, corrupted: Inputs, metric: Callable[[Any], Tensor], *,
               k: int) -> float:
        """`faithfulness` of the top ``k`` edges: everything outside them takes its corrupted value."""
        return faithfulness(model, clean, corrupted, metric, writers=self.writers, readers=self.readers,
                            edges=self.select(k), ablation=self.ablation, seed=self.seed)

    def curve(self, model: nn.Module, clean: Inputs, corrupted: Inputs,
              metric: Callable[[Any], Tensor]) -> FaithfulnessCurve:
        """`faithfulness_curve` of this ranking: the top ``k`` edges kept, for every ``k``."""
        return faithfulness_curve(model, clean, corrupted, metric, writers=self.writers, readers=self.readers,
                                  ranking=self.select(len(self.edge_scores)), ablation=self.ablation, seed=self.seed)

    def to_findings(self, *, k: int, inputs: Inputs | None = None) -> list[Finding]:
        """The top ``k`` edges as two ``"circuit"`` findings: sufficient, and necessary.

        Each carries the stream (writers, readers), the edges, every edge ranked best first (for
        CPR/CMD), the ablation and seed; `seethrough.evidence.validate` with ``reference=`` the
        corrupted inputs tests each against random edge sets of the same size. ``inputs``: the
        clean inputs the circuit was found on (its fingerprint flags an in-sample validation).
        """
        k = check_int("k", k, at_least=1, at_most=len(self.edge_scores) - 1)  # an edge in, an edge out
        edges = self.select(k)
        evidence = {"writers": list(self.writers), "readers": list(self.readers), "edges": [list(e) for e in edges],
                    "ranking": [list(e) for e in self.select(len(self.edge_scores))], "ablation": self.ablation,
                    "seed": self.seed, "method": self.method}
        data = None if inputs is None else fingerprint(inputs)
        score = sum(self.edge_scores[e] for e in edges)
        return [Finding("circuit", f"the top {k} edges ({self.method}) alone keep the clean-vs-corrupted behaviour",
                        score=score, evidence={**evidence, "test": "sufficient"}, data_fingerprint=data),
                Finding("circuit", f"corrupting the top {k} edges ({self.method}) removes the clean-vs-corrupted "
                        "behaviour", score=score, evidence={**evidence, "test": "necessary"}, data_fingerprint=data)]

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame([(w, r, s) for (w, r), s in self.edge_scores.items()],
                            columns=["writer", "reader", "score"])

    def plot(self) -> Figure:
        grid = np.full((len(self.writers), len(self.readers)), np.nan)
        for (w, r), s in self.edge_scores.items():
            grid[self.writers.index(w), self.readers.index(r)] = s
        fig = new_figure(1.5 + 0.5 * len(self.readers), 1.2 + 0.4 * len(self.writers))
        ax = fig.add_subplot()
        image = ax.imshow(grid, cmap="viridis")
        ax.set_xticks(range(len(self.readers)), list(self.readers), rotation=45, ha="right")
        ax.set_yticks(range(len(self.writers)), list(self.writers))
        ax.set_xlabel("reader")
        ax.set_ylabel("writer")
        ax.set_title(f"edge scores ({self.method})")
        fig.colorbar(image, ax=ax)
        return fig

    def to_dict(self) -> dict[str, Any]:
        return {"edges": [{"writer": w, "reader": r, "score": jsonable(s)} for (w, r), s in self.edge_scores.items()],
                "node_scores": jsonable(self.node_scores), "method": self.method, "writers": list(self.writers),
                "readers": list(self.readers), "clean": jsonable(self.clean), "corrupted": jsonable(self.corrupted),
                "ablation": self.ablation, "seed": self.seed}


def _node_scores(stream: Stream, edge_scores: dict[Edge, float]) -> dict[str, float]:
    nodes: dict[str, float] = {}
    for w in stream.writers:
        nodes[w] = sum(s for (a, _), s in edge_scores.items() if a == w)
    for r in stream.readers:
        if r not in nodes:
            nodes[r] = sum(s for (_, b), s in edge_scores.items() if b == r)
    return nodes


def _first_order(stream: Stream, grads: dict[str, Tensor]) -> dict[Edge, float]:
    """``|mean_i <corrupted_w - clean_w, ∂metric/∂(input of r)>|`` for every edge."""
    scores = {}
    for w, r in stream.edges:
        diff = (stream.corrupted_out[w] - stream.clean_out[w]).double()
        scores[(w, r)] = abs(float((diff * grads[r].double()).flatten(1).sum(1).mean()))
    return scores


def _acdc(stream: Stream, threshold: float, max_rows: int) -> dict[Edge, float]:
    """ACDC: readers from the last, their incoming edges from the latest writer; prune an edge when
    corrupting it (on top of those pruned so far) moves the metric's mean by less than ``threshold``."""
    removed: set[Edge] = set()
    current = stream.clean_mean
    scores: dict[Edge, float] = {}
    for r in reversed(stream.readers):
        for w in reversed(stream.incoming(r)):
            trial = float(run_edges(stream, [removed | {(w, r)}], max_rows=max_rows).mean())
            scores[(w, r)] = abs(trial - current)
            if scores[(w, r)] < threshold:
                removed.add((w, r))
                current = trial
    return {e: scores[e] for e in stream.edges}


def find_circuit(model: nn.Module, clean: Inputs, corrupted: Inputs, metric: Callable[[Any], Tensor], *,
                 writers: Sequence[str], readers: Sequence[str], method: str = "eap-ig", n_steps: int = 8,
                 threshold: float | None = None, ablation: Ablation | None = None, seed: int = 0,
                 max_rows: int = 4096) -> Circuit:
    """Score every writer → reader edge of a residual stream for the clean/corrupted pair.

    Before scoring, the clean run checks that each reader's input is the sum of the outputs of
    the writers that ran before it, and refuses the model otherwise, naming the reader.

    Args:
        model: any ``nn.Module`` (left unchanged, ``.grad`` included).
        clean: the inputs.
        corrupted: inputs of the same batch size (example ``i`` pairs with clean example ``i``).
        metric: model output → one score per row (copies stacked copy-major).
        writers: module paths whose outputs are added into the stream (the first is usually the
            embedding); their order is taken from the clean run.
        readers: module paths whose input is the stream (the last is usually the final norm or the
            unembedding).
        method: ``"exact"`` (edge activation patching, one copy per edge), ``"eap"`` (gradient ×
            difference at the clean run), ``"eap-ig"`` (the gradient averaged over ``n_steps``
            points from the corrupted to the clean output of the first writer, ``k / n_steps`` for
            ``k = 1..n_steps``) or ``"acdc"`` (iterative pruning with ``threshold``).
        n_steps: EAP-IG's interpolation points.
        threshold: ACDC's pruning threshold in metric units (default: 1% of the clean-to-corrupted
            change of the metric's mean).
        ablation: what a corrupted edge carries: None (default), the writer's output on the paired
            corrupted example; ``"mean"``, its mean over the corrupted batch; ``"zero"``, zeros;
            ``"resample"``, its output on a corrupted example drawn with replacement (``seed``).
            ``corrupted`` is then the reference of the ablation, and the circuit's ``corrupted``
            mean is the metric with every edge ablated.
        seed: seeds the resample draw.
        max_rows: rows per forward pass for the exact and ACDC runs.

    Returns:
        `Circuit` with ``edge_scores``, ``node_scores``, ``select(k)`` and ``verify``.

    Raises:
        InputError: an unknown method, batches of different sizes, a bad metric, or a reader
            whose input is not the sum of the earlier writers' outputs.
        SiteNotFoundError: an unknown path (before any forward pass).

    Example:
        >>> import torch
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.embed, self.block, self.head = nn.Linear(2, 4), nn.Linear(4, 4), nn.Linear(4, 1)
        ...     def forward(self, x):
        ...         h = self.embed(x)
        ...         return self.head(h + self.block(h))
        >>> res = find_circuit(Net(), torch.ones(3, 2), torch.zeros(3, 2), lambda out: out[:, 0],
        ...                    writers=["embed", "block"], readers=["block", "head"], method="exact")
        >>> sorted(res.edge_scores)
        [('block', 'head'), ('embed', 'block'), ('embed', 'head')]

    References:
        Wang et al., "Interpretability in the wild" (path patching), 2022; Syed et al., "Attribution
        patching outperforms automated circuit discovery", 2023; Hanna et al., "Have faith in
        faithfulness" (EAP-IG), 2024; Conmy et al., "Towards automated circuit discovery" (ACDC), 2023.
    """
    if method not in CIRCUIT_METHODS:
        raise InputError(f"method must be one of {', '.join(map(repr, CIRCUIT_METHODS))}; got {method!r}.")
    n_steps = check_int("n_steps", n_steps, at_least=1)
    check_int("max_rows", max_rows, at_least=1)
    if threshold is not None:
        threshold = check_float("threshold", threshold, at_least=0.0)
    stream = prepare(model, clean, corrupted, metric, writers, readers, ablation=ablation, seed=seed)
    if method == "exact":
        means = run_edges(stream, [{e} for e in stream.edges], max_rows=max_rows).mean(1) if stream.edges else []
        edge_scores = {e: abs(float(m) - stream.clean_mean) for e, m in zip(stream.edges, means, strict=True)}
    elif method == "acdc":
        tau = 0.01 * abs(stream.clean_mean - stream.corrupted_mean) if threshold is None else threshold
        edge_scores = _acdc(stream, tau, max_rows)
    else:
        alphas = None if method == "eap" else [k / n_steps for k in range(1, n_steps + 1)]
        edge_scores = _first_order(stream, reader_gradients(stream, alphas))
    return Circuit(edge_scores, _node_scores(stream, edge_scores), method, stream.writers, stream.readers,
                   stream.clean_mean, stream.corrupted_mean, ablation, seed)


def faithfulness(model: nn.Module, clean: Inputs, corrupted: Inputs, metric: Callable[[Any], Tensor], *,
                 writers: Sequence[str], readers: Sequence[str], edges: Sequence[Edge],
                 ablation: Ablation | None = None, seed: int = 0) -> float:
    """How much of the clean-vs-corrupted behaviour ``edges`` keep when every other edge is corrupted.

    ``(m(circuit) - m(corrupted)) / (m(clean) - m(corrupted))`` with ``m`` the metric's mean: 1 when
    the circuit alone reproduces the clean metric, 0 when it carries nothing. Every edge outside
    ``edges`` passes its writer's corrupted output to its reader (or the ``ablation`` of it, as in
    `find_circuit`; ``m(corrupted)`` is then the metric with every edge ablated).

    Raises:
        InputError: an edge that is not a (writer, later reader) pair, equal clean and corrupted
            means, or any error of `find_circuit`.

    Example:
        >>> import torch
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.embed, self.head = nn.Linear(2, 4), nn.Linear(4, 1)
        ...     def forward(self, x):
        ...         return self.head(self.embed(x))
        >>> net, clean, corrupted = Net(), torch.ones(3, 2), torch.zeros(3, 2)
        >>> faithfulness(net, clean, corrupted, lambda out: out[:, 0], writers=["embed"], readers=["head"],
        ...              edges=[("embed", "head")])
        1.0
    """
    stream = prepare(model, clean, corrupted, metric, writers, readers, ablation=ablation, seed=seed)
    keep = {tuple(e) for e in edges}
    unknown = sorted(keep - set(stream.edges))
    if unknown:
        raise InputError(f"edges {unknown} are not (writer, later reader) pairs of this stream; its edges are "
                         f"{list(stream.edges)}.")
    gap = stream.clean_mean - stream.corrupted_mean
    if gap == 0:
        raise InputError("the metric's mean is the same on clean and corrupted inputs; faithfulness is undefined.")
    kept = float(run_edges(stream, [frozenset(set(stream.edges) - keep)]).mean())
    return (kept - stream.corrupted_mean) / gap
