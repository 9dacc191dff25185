"""Verifying a circuit over its sizes: the faithfulness curve, and MIB's CPR and CMD.

Subnetworks / circuits in the survey's taxonomy. Given edges ranked best first, `faithfulness_curve`
keeps the top ``k`` edges for every ``k`` from 0 to all of them, corrupts (or ablates) the rest, and
measures the faithfulness of each circuit; every size is one copy of the clean batch in one stacked
pass (`_stream.run_edges`). CPR is the area under the curve over the fraction of edges kept (higher
is better), CMD the area under ``|1 - faithfulness|`` (lower is better), as in the MIB benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core.checks import check_int
from ..core.errors import InputError
from ..core.interventions import Ablation
from ..core.results import Result, new_figure
from ..core.types import Inputs
from ._stream import Edge, prepare, run_edges

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["FaithfulnessCurve", "faithfulness_curve", "CircuitSignificance", "circuit_significance"]


@dataclass(frozen=True)
class FaithfulnessCurve(Result):
    """Faithfulness of the top ``k`` edges for ``k = 0 .. n_edges``, with its areas CPR and CMD.

    ``fraction[k] = k / n_edges``; ``cpr`` and ``cmd`` are trapezoid areas over ``fraction``.
    """

    sizes: np.ndarray
    fraction: np.ndarray
    faithfulness: np.ndarray
    cpr: float
    cmd: float

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame({"edges": self.sizes, "fraction": self.fraction, "faithfulness": self.faithfulness})

    def plot(self) -> Figure:
        fig = new_figure(4, 2.6)
        ax = fig.add_subplot()
        ax.plot(self.fraction, self.faithfulness, marker="o")
        ax.axhline(1.0, color="0.6", lw=0.8)
        ax.set_xlabel("fraction of edges kept")
        ax.set_ylabel("faithfulness")
        ax.set_title(f"CPR {self.cpr:.3f}, CMD {self.cmd:.3f}")
        return fig


def _area(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def faithfulness_curve(model: nn.Module, clean: Inputs, corrupted: Inputs, metric: Callable[[Any], Tensor], *,
                       writers: Sequence[str], readers: Sequence[str], ranking: Sequence[Edge],
                       ablation: Ablation | None = None, seed: int = 0, max_rows: int = 4096) -> FaithfulnessCurve:
    """Faithfulness of the top ``k`` edges of ``ranking`` for every ``k``, and CPR / CMD.

    Args:
        model, clean, corrupted, metric, writers, readers, ablation, seed: as in `find_circuit`.
        ranking: every edge of the stream, best first (`Circuit.select` of all edges).
        max_rows: rows per forward pass (each circuit size is one copy of the batch).

    Returns:
        `FaithfulnessCurve`: ``faithfulness[k]`` is `faithfulness` of ``ranking[:k]``.

    Raises:
        InputError: a ranking that is not every edge exactly once, or equal clean and corrupted means.

    Example:
        >>> import torch
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.embed, self.head = nn.Linear(2, 4), nn.Linear(4, 1)
        ...     def forward(self, x):
        ...         return self.head(self.embed(x))
        >>> curve = faithfulness_curve(Net(), torch.ones(3, 2), torch.zeros(3, 2), lambda out: out[:, 0],
        ...                            writers=["embed"], readers=["head"], ranking=[("embed", "head")])
        >>> curve.faithfulness.round(6).tolist(), round(curve.cpr, 6), round(curve.cmd, 6)
        ([0.0, 1.0], 0.5, 0.5)

    References:
        Mueller et al., "MIB: A mechanistic interpretability benchmark", 2025 (CPR, CMD).
    """
    check_int("max_rows", max_rows, at_least=1)
    stream = prepare(model, clean, corrupted, metric, writers, readers, ablation=ablation, seed=seed)
    order = [tuple(e) for e in ranking]
    if sorted(order) != sorted(stream.edges):
        raise InputError(f"ranking must list every edge of the stream once ({len(stream.edges)} edges: "
                         f"{list(stream.edges)}), got {order}.")
    gap = stream.clean_mean - stream.corrupted_mean
    if gap == 0:
        raise InputError("the metric's mean is the same on clean and corrupted inputs; faithfulness is undefined.")
    everything = set(stream.edges)
    means = run_edges(stream, [frozenset(everything - set(order[:k])) for k in range(len(order) + 1)],
                      max_rows=max_rows).mean(1).numpy()
    kept = (means - stream.corrupted_mean) / gap + 0.0  # + 0.0 turns -0.0 into 0.0
    sizes = np.arange(len(order) + 1)
    fraction = sizes / max(len(order), 1)
    return FaithfulnessCurve(sizes, fraction, kept, _area(fraction, kept), _area(fraction, np.abs(1 - kept)))


@dataclass(frozen=True)
class CircuitSignificance(Result):
    """Is a circuit sufficient and necessary, compared with random edge sets of the same size?

    ``faithfulness``: the metric kept by the circuit alone (every other edge corrupted);
    ``completeness``: the share of the clean-to-corrupted change lost when only the circuit's
    edges are corrupted. ``control_*`` hold the same for ``n_controls`` random edge sets of the
    circuit's size; the p-values are permutation p-values ``(1 + #{control ≥ circuit}) / (1 + n_controls)``.
    """

    n_edges: int
    faithfulness: float
    completeness: float
    control_faithfulness: np.ndarray
    control_completeness: np.ndarray
    p_sufficient: float
    p_necessary: float

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame({"edge set": ["circuit"] + [f"random {i}" for i in range(len(self.control_faithfulness))],
                             "faithfulness": [self.faithfulness, *self.control_faithfulness.tolist()],
                             "completeness": [self.completeness, *self.control_completeness.tolist()]})

    def plot(self) -> Figure:
        fig = new_figure(4, 3)
        ax = fig.add_subplot()
        ax.scatter(self.control_faithfulness, self.control_completeness, color="0.6", label="random edge sets")
        ax.scatter([self.faithfulness], [self.completeness], color="C3", label="circuit")
        ax.set_xlabel("faithfulness (sufficiency)")
        ax.set_ylabel("completeness (necessity)")
        ax.set_title(f"p sufficient {self.p_sufficient:.3f}, p necessary {self.p_necessary:.3f}")
        ax.legend()
        return fig


def circuit_significance(model: nn.Module, clean: Inputs, corrupted: Inputs, metric: Callable[[Any], Tensor], *,
                 writers: Sequence[str], readers: Sequence[str], edges: Sequence[Edge], n_controls: int = 99,
                 ablation: Ablation | None = None, seed: int = 0, max_rows: int = 4096) -> CircuitSignificance:
    """Sufficiency and necessity of a circuit against random edge sets of the same size, with p-values.

    The circuit and every control are run twice in stacked copies of the clean batch: once with
    only their edges kept (faithfulness) and once with only their edges corrupted (completeness).
    Control ``i`` is ``torch.randperm(n_edges, generator)[:k]`` of a generator seeded with ``seed``.

    Args:
        model, clean, corrupted, metric, writers, readers, ablation: as in `find_circuit`.
        edges: the circuit (at least one edge, fewer than all).
        n_controls: random edge sets.
        seed: seeds the controls (and a resample ablation).
        max_rows: rows per forward pass.

    Returns:
        `CircuitSignificance` with both measures for the circuit and the controls, and permutation p-values.

    Raises:
        InputError: unknown edges, an empty circuit or one with every edge, or equal clean and
            corrupted means.

    Example:
        >>> import torch
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.embed, self.block, self.head = nn.Linear(2, 4), nn.Linear(4, 4), nn.Linear(4, 1)
        ...     def forward(self, x):
        ...         h = self.embed(x)
        ...         return self.head(h + self.block(h))
        >>> res = circuit_significance(Net(), torch.ones(3, 2), torch.zeros(3, 2), lambda out: out[:, 0],
        ...                    writers=["embed", "block"], readers=["block", "head"], edges=[("embed", "head")],
        ...                    n_controls=5)
        >>> res.control_faithfulness.shape
        (5,)

    References:
        Hod et al., "Detecting modularity in deep neural networks", 2021 (random-set controls);
        Wang et al., "Interpretability in the wild", 2022 (faithfulness, completeness).
    """
    n_controls = check_int("n_controls", n_controls, at_least=1)
    check_int("max_rows", max_rows, at_least=1)
    stream = prepare(model, clean, corrupted, metric, writers, readers, ablation=ablation, seed=seed)
    everything = list(stream.edges)
    circuit = {tuple(e) for e in edges}
    unknown = sorted(circuit - set(everything))
    if unknown or not 0 < len(circuit) < len(everything):
        raise InputError(f"edges must be between one and all but one of the stream's edges {everything}; got "
                         f"{sorted(circuit)}" + (f" (unknown: {unknown})." if unknown else "."))
    gap = stream.clean_mean - stream.corrupted_mean
    if gap == 0:
        raise InputError("the metric's mean is the same on clean and corrupted inputs; the tests are undefined.")
    gen = torch.Generator().manual_seed(seed)
    k = len(circuit)
    sets = [frozenset(circuit)] + [frozenset(everything[i] for i in torch.randperm(len(everything), generator=gen)[:k]
                                             .tolist()) for _ in range(n_controls)]
    kept = [frozenset(set(everything) - s) for s in sets]  # corrupt everything outside the set
    means = run_edges(stream, kept + sets, max_rows=max_rows).mean(1).numpy()
    faith = (means[:len(sets)] - stream.corrupted_mean) / gap
    complete = (stream.clean_mean - means[len(sets):]) / gap
    p_sufficient = (1 + int((faith[1:] >= faith[0]).sum())) / (1 + n_controls)
    p_necessary = (1 + int((complete[1:] >= complete[0]).sum())) / (1 + n_controls)
    return CircuitSignificance(k, float(faith[0]), float(complete[0]), faith[1:], complete[1:], p_sufficient, p_necessary)
