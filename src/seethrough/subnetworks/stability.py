"""How stable is a circuit? The top-k edges of `find_circuit` over bootstrap resamples of the prompts.

Subnetworks / circuits in the survey's taxonomy. `circuit_stability` draws ``n_samples`` bootstrap
resamples of the clean/corrupted pairs (a pair is resampled as one: clean example ``i`` stays with
corrupted example ``i``), finds the circuit on each, keeps its top ``k`` edges and reports the mean
pairwise Jaccard similarity of those edge sets (1 = every resample gives the same circuit). A
resample is a reweighting: example ``i`` drawn ``c_i`` times counts ``c_i`` times in every mean
the methods take, so any metric works (per-example ones included) and no input is copied.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core.checks import check_int
from ..core.errors import InputError
from ..core.interventions import Ablation, resample_indices
from ..core.results import Result, jsonable, new_figure
from ..core.types import Inputs
from ._stream import Edge, prepare
from .circuits import CIRCUIT_METHODS, find_circuit

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["CircuitStability", "circuit_stability", "jaccard"]


def jaccard(a: Collection[Any], b: Collection[Any]) -> float:
    """``|a ∩ b| / |a ∪ b|`` of two collections read as sets (1.0 for two empty ones).

    Example:
        >>> jaccard([("a", "b"), ("a", "c")], [("a", "c"), ("b", "c")])
        0.3333333333333333
    """
    sa, sb = set(a), set(b)
    union = sa | sb
    return 1.0 if not union else len(sa & sb) / len(union)


@dataclass(frozen=True)
class CircuitStability(Result):
    """The top ``k`` edges of each bootstrap resample, their pairwise Jaccard and each edge's frequency.

    ``edge_sets[s]`` is resample ``s``'s top ``k`` (best first); ``pairwise[s, t]`` the Jaccard of
    resamples ``s`` and ``t`` (1 on the diagonal); ``jaccard`` the mean over pairs ``s < t``;
    ``frequency[edge]`` the fraction of resamples whose top ``k`` holds the edge (every edge of the
    stream, in its order); ``draws[s]`` the example indices of resample ``s``.
    """

    method: str
    k: int
    edge_sets: tuple[tuple[Edge, ...], ...]
    pairwise: np.ndarray
    jaccard: float
    frequency: dict[Edge, float]
    draws: np.ndarray
    seed: int = 0

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame([(w, r, f) for (w, r), f in self.frequency.items()],
                            columns=["writer", "reader", "frequency in top k"])

    def plot(self) -> Figure:
        fig = new_figure(4, 3.2)
        ax = fig.add_subplot()
        image = ax.imshow(self.pairwise, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_xlabel("resample")
        ax.set_ylabel("resample")
        ax.set_title(f"top-{self.k} Jaccard ({self.method}): mean {self.jaccard:.3f}")
        fig.colorbar(image, ax=ax)
        return fig

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "k": self.k, "jaccard": jsonable(self.jaccard), "seed": self.seed,
                "edge_sets": [[list(e) for e in s] for s in self.edge_sets],
                "pairwise": jsonable(self.pairwise), "draws": jsonable(self.draws),
                "frequency": [{"writer": w, "reader": r, "frequency": jsonable(f)}
                              for (w, r), f in self.frequency.items()]}


def _weighted(metric: Callable[[Any], Tensor], counts: Tensor) -> Callable[[Any], Tensor]:
    """``metric`` with row ``r`` multiplied by ``counts[r mod n]``: its row mean is the resample's mean."""
    n = counts.shape[0]

    def weighted(output: Any) -> Tensor:
        scores = metric(output)
        if not isinstance(scores, Tensor) or scores.ndim != 1 or scores.shape[0] % n:
            return scores  # the methods' own checks name the bad shape
        return scores * counts.repeat(scores.shape[0] // n).to(scores)

    return weighted


def circuit_stability(model: nn.Module, clean: Inputs, corrupted: Inputs, metric: Callable[[Any], Tensor], *,
                      writers: Sequence[str], readers: Sequence[str], k: int, method: str = "eap-ig",
                      n_samples: int = 20, seed: int = 0, ablation: Ablation | None = None, n_steps: int = 8,
                      threshold: float | None = None, max_rows: int = 4096) -> CircuitStability:
    """Mean pairwise Jaccard of the top ``k`` edges of `find_circuit` over bootstrap resamples of the pairs.

    Resample ``s`` draws the examples ``resample_indices(n, n, n_samples=n_samples, seed=seed)[s]``
    (``n`` pairs drawn uniformly with replacement; clean and corrupted example ``i`` together).
    It runs `find_circuit` on the full batch with the metric's row ``i`` weighted by how often
    example ``i`` was drawn, which equals running it on the resampled batch (every method scores
    edges from means over examples; tested against the resampled inputs). Exception: mean and
    resample ablations keep the whole corrupted batch as their reference.

    Args:
        model, clean, corrupted, metric, writers, readers, method, ablation, n_steps, threshold,
            max_rows: as in `find_circuit` (``seed`` also seeds a resample ablation).
        k: the circuit's size: edges kept per resample (at least 1, at most every edge).
        n_samples: bootstrap resamples (at least 2).
        seed: seeds the resamples.

    Returns:
        `CircuitStability` with each resample's top ``k``, the pairwise and mean Jaccard, and how
        often each edge is in the top ``k``.

    Raises:
        InputError: an unknown method, ``k`` outside ``1..n_edges``, ``n_samples < 2``, or any
            error of `find_circuit` (all before the resamples run).

    Example:
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.embed, self.block, self.head = nn.Linear(2, 4), nn.Linear(4, 4), nn.Linear(4, 1)
        ...     def forward(self, x):
        ...         h = self.embed(x)
        ...         return self.head(h + self.block(h))
        >>> res = circuit_stability(Net(), torch.ones(1, 2), torch.zeros(1, 2), lambda out: out[:, 0],
        ...                         writers=["embed", "block"], readers=["block", "head"], k=2, n_samples=3)
        >>> res.jaccard   # one pair: every resample is the same batch
        1.0

    References:
        Efron & Tibshirani, "An introduction to the bootstrap", 1993; Mueller et al., "MIB: A
        mechanistic interpretability benchmark", 2025 (circuit stability across prompt sets).
    """
    if method not in CIRCUIT_METHODS:
        raise InputError(f"method must be one of {', '.join(map(repr, CIRCUIT_METHODS))}; got {method!r}.")
    n_samples = check_int("n_samples", n_samples, at_least=2)
    seed = check_int("seed", seed, at_least=0)
    stream = prepare(model, clean, corrupted, metric, writers, readers, ablation=ablation, seed=seed)
    k = check_int("k", k, at_least=1, at_most=len(stream.edges))
    draws = resample_indices(stream.n, stream.n, n_samples=n_samples, seed=seed)
    sets: list[tuple[Edge, ...]] = []
    for row in draws:
        counts = torch.bincount(row, minlength=stream.n).double()
        circuit = find_circuit(model, clean, corrupted, _weighted(metric, counts), writers=writers, readers=readers,
                               method=method, n_steps=n_steps, threshold=threshold, ablation=ablation, seed=seed,
                               max_rows=max_rows)
        sets.append(tuple(circuit.select(k)))
    pairwise = np.ones((n_samples, n_samples))
    for s, t in combinations(range(n_samples), 2):
        pairwise[s, t] = pairwise[t, s] = jaccard(sets[s], sets[t])
    mean = float(np.mean([pairwise[s, t] for s, t in combinations(range(n_samples), 2)]))
    frequency = {e: sum(e in s for s in sets) / n_samples for e in stream.edges}
    return CircuitStability(method, k, tuple(sets), pairwise, mean, frequency, draws.numpy(), seed)
