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

__all__ = ["FaithfulnessCurve", "faithfulness_curve"]


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
        >>> curve.faithfulness.round(6).tolist(), curve.cpr, curve.cmd
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
