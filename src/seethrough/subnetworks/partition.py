"""Modular partitioning: the network as a weighted graph of units, cut into modules by spectral clustering.

Subnetworks / modularity in the survey's taxonomy. Every output unit of an ``nn.Linear`` and
every output channel of an ``nn.Conv2d`` is a node, and so is every input feature of the first
layer (unlabelled); consecutive layers (registration order) are joined by edges weighted ``|W|``
(a conv kernel summed over its spatial extent). `partition` cuts that graph into ``n_modules``
by normalised spectral clustering (Shi & Malik's relaxation of the n-cut, as Filan et al. 2021
do); `clusterability` compares its n-cut with the n-cuts of within-layer weight shuffles (a
z-score, negative = more modular than chance). Dead hidden units (no incoming or no outgoing
weight) are removed first, labelled -1 and listed in ``dead``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..core.checks import check_int
from ..core.errors import InputError, InputTypeError
from ..core.results import Result, new_figure

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["Partition", "Clusterability", "partition", "clusterability", "ncut"]


@dataclass(frozen=True)
class _Graph:
    """The unit graph: layer paths, per-layer blocks ``|W|`` (n_in × n_out), and which units are live."""

    paths: tuple[str, ...]
    blocks: tuple[np.ndarray, ...]  # blocks[l]: (units of layer l-1 (or inputs), units of layer l)
    live: tuple[np.ndarray, ...]  # live[0]: inputs, live[l + 1]: units of layer l (bool)

    def adjacency(self, blocks: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
        """Dense symmetric adjacency over the live nodes (inputs first, then each layer in order)."""
        blocks = self.blocks if blocks is None else blocks
        sizes = [int(m.sum()) for m in self.live]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        adj = np.zeros((starts[-1], starts[-1]))
        for i, block in enumerate(blocks):
            sub = block[np.ix_(self.live[i], self.live[i + 1])]
            adj[starts[i]:starts[i + 1], starts[i + 1]:starts[i + 2]] = sub
        return adj + adj.T

    def live_blocks(self) -> tuple[np.ndarray, ...]:
        return tuple(b[np.ix_(self.live[i], self.live[i + 1])] for i, b in enumerate(self.blocks))


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        raise InputError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d; partition needs weighted layers.")
    return layers


def _block(path: str, module: nn.Module, n_prev: int | None, prev_is_conv: bool) -> np.ndarray:
    """``|W|`` between the previous layer's units (or the inputs) and this layer's units: (n_in, n_out)."""
    w = module.weight.detach().abs().double().cpu()
    if isinstance(module, nn.Conv2d):
        summed = w.sum(dim=(2, 3))  # (out, in / groups)
        out_c, in_c, groups = module.out_channels, module.in_channels, module.groups
        block = torch.zeros(in_c, out_c, dtype=torch.float64)
        per_in, per_out = in_c // groups, out_c // groups
        for g in range(groups):
            block[g * per_in:(g + 1) * per_in, g * per_out:(g + 1) * per_out] = summed[g * per_out:(g + 1) * per_out].T
        n_in = in_c
    else:
        block, n_in = w.T, module.in_features
        if n_prev is not None and prev_is_conv and n_in != n_prev and n_in % n_prev == 0:
            # a flattened (C, H, W) map: feature c * H * W + s belongs to channel c (torch's flatten order)
            block = block.reshape(n_prev, n_in // n_prev, -1).sum(1)
            n_in = n_prev
    if n_prev is not None and n_in != n_prev:
        raise InputError(f"layer {path!r} takes {n_in} input features or channels but the layer before it gives "
                         f"{n_prev}; partition reads the nn.Linear / nn.Conv2d layers as a feed-forward chain in "
                         "registration order (pass a model whose weighted layers form one).")
    return block.numpy()


def _graph(model: nn.Module) -> _Graph:
    paths, blocks = [], []
    n_prev, prev_conv = None, False
    for path, module in _layers(model):
        block = _block(path, module, n_prev, prev_conv)
        paths.append(path)
        blocks.append(block)
        n_prev, prev_conv = block.shape[1], isinstance(module, nn.Conv2d)
    live = [np.ones(blocks[0].shape[0], dtype=bool)] + [np.ones(b.shape[1], dtype=bool) for b in blocks]
    # A hidden unit with no incoming or no outgoing weight is dead; removing one can kill others.
    changed = True
    while changed:
        changed = False
        for i in range(1, len(blocks)):  # hidden layers: units of layer i - 1, i.e. live[i]
            incoming = blocks[i - 1][live[i - 1]].sum(0)
            outgoing = blocks[i][:, live[i + 1]].sum(1)
            now = live[i] & (incoming > 0) & (outgoing > 0)
            if not np.array_equal(now, live[i]):
                live[i], changed = now, True
    return _Graph(tuple(paths), tuple(blocks), tuple(live))


def ncut(adjacency: np.ndarray, labels: np.ndarray) -> float:
    """The normalised cut ``Σ_k cut(A_k, rest) / vol(A_k)`` of a labelling of a weighted graph.

    Args:
        adjacency: ``(n, n)`` symmetric, non-negative.
        labels: ``(n,)`` module ids (groups of zero volume add nothing).

    Example:
        >>> a = np.array([[0, 1, 0.1], [1, 0, 0], [0.1, 0, 0]])
        >>> round(ncut(a, np.array([0, 0, 1])), 4)
        1.0476
    """
    adjacency, labels = np.asarray(adjacency, dtype=np.float64), np.asarray(labels)
    degree = adjacency.sum(1)
    total = 0.0
    for k in np.unique(labels):
        inside = labels == k
        vol = degree[inside].sum()
        if vol > 0:
            total += (vol - adjacency[np.ix_(inside, inside)].sum()) / vol
    return float(total)


def _spectral(adjacency: np.ndarray, n_modules: int, seed: int) -> np.ndarray:
    """Shi-Malik spectral clustering: k-means on the first generalised eigenvectors of (D - A) x = λ D x."""
    import scipy.linalg
    from sklearn.cluster import KMeans

    n = adjacency.shape[0]
    degree = adjacency.sum(1)
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)), 0.0)
    normalised = adjacency * inv_sqrt[:, None] * inv_sqrt[None, :]
    _, vectors = scipy.linalg.eigh(normalised, subset_by_index=[n - n_modules, n - 1])
    embedding = vectors * inv_sqrt[:, None]
    return KMeans(n_modules, n_init=10, random_state=seed).fit_predict(embedding)


@dataclass(frozen=True)
class Partition(Result):
    """Module ids of every unit of every ``nn.Linear`` / ``nn.Conv2d``: ``labels[path][unit]`` (-1: dead).

    ``input_labels`` are the module ids the spectral cut gave the network's input features (for
    reading only: inputs are nodes of the graph but not units of the model). ``dead`` lists
    ``(path, unit)`` of the dead hidden units, left out of the graph.
    """

    labels: dict[str, np.ndarray]
    ncut: float
    dead: list[tuple[str, int]]
    n_modules: int
    input_labels: np.ndarray

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        rows = [(path, u, int(k)) for path, lab in self.labels.items() for u, k in enumerate(lab)]
        return pd.DataFrame(rows, columns=["layer", "unit", "module"])

    def plot(self) -> Figure:
        fig = new_figure(5, 2.6)
        ax = fig.add_subplot()
        counts = np.array([[int((lab == k).sum()) for k in range(self.n_modules)] for lab in self.labels.values()])
        ax.imshow(counts.T if counts.size else np.zeros((1, 1)), aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(self.labels)), list(self.labels), rotation=45, ha="right")
        ax.set_ylabel("module")
        ax.set_title(f"units per module and layer (n-cut {self.ncut:.3f})")
        return fig


@dataclass(frozen=True)
class Clusterability(Result):
    """The n-cut of the spectral partition against within-layer weight shuffles (Filan et al. 2021).

    ``z_score = (ncut - mean(shuffled)) / std(shuffled)`` (``ddof=1``): negative = more modular
    than a network with the same weights per layer in random places.
    """

    ncut: float
    shuffled: np.ndarray
    z_score: float
    n_modules: int
    dead: list[tuple[str, int]]

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame({"network": ["model"] + [f"shuffle {i}" for i in range(len(self.shuffled))],
                             "ncut": [self.ncut, *self.shuffled.tolist()]})

    def plot(self) -> Figure:
        fig = new_figure(4, 2.6)
        ax = fig.add_subplot()
        ax.hist(self.shuffled, bins=min(20, max(len(self.shuffled), 1)), color="0.6", label="shuffled")
        ax.axvline(self.ncut, color="C3", label="model")
        ax.set_xlabel("n-cut")
        ax.set_title(f"z = {self.z_score:.2f}")
        ax.legend()
        return fig


def _partition(graph: _Graph, n_modules: int, seed: int) -> tuple[np.ndarray, float]:
    adjacency = graph.adjacency()
    if adjacency.shape[0] < n_modules:
        raise InputError(f"the graph has {adjacency.shape[0]} live nodes, fewer than n_modules={n_modules}; "
                         "ask for fewer modules.")
    labels = _spectral(adjacency, n_modules, seed)
    return labels, ncut(adjacency, labels)


def _dead(graph: _Graph) -> list[tuple[str, int]]:
    return [(path, int(u)) for path, live in zip(graph.paths, graph.live[1:], strict=True)
            for u in np.flatnonzero(~live)]


def partition(model: nn.Module, n_modules: int, *, seed: int = 0) -> Partition:
    """Cut the unit graph of ``model`` into ``n_modules`` modules by spectral clustering.

    Args:
        model: any ``nn.Module`` whose ``nn.Linear`` / ``nn.Conv2d`` layers form a feed-forward
            chain in registration order (a conv followed by a flatten or a pooling and a linear
            layer counts). Left unchanged; no forward pass is run.
        n_modules: how many modules (≥ 2).
        seed: seeds k-means on the spectral embedding.

    Returns:
        `Partition`: ``labels`` per layer path (an int array, one module id per output unit or
        channel, -1 for dead units), ``ncut``, ``dead``.

    Raises:
        InputError: no weighted layers, layers that do not chain, or fewer live nodes than modules.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
        >>> sorted(partition(model, 2).labels)
        ['0', '2']

    References:
        Filan et al., "Clusterability in neural networks", 2021; Shi & Malik, "Normalized cuts and
        image segmentation", 2000.
    """
    n_modules = check_int("n_modules", n_modules, at_least=2)
    seed = check_int("seed", seed, at_least=0)
    graph = _graph(model)
    labels, cut = _partition(graph, n_modules, seed)
    sizes = [int(m.sum()) for m in graph.live]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out: dict[str, np.ndarray] = {}
    for i, (path, live) in enumerate(zip(graph.paths, graph.live[1:], strict=True)):
        lab = np.full(len(live), -1, dtype=np.int64)
        lab[live] = labels[starts[i + 1]:starts[i + 2]]
        out[path] = lab
    return Partition(out, cut, _dead(graph), n_modules, labels[:starts[1]].astype(np.int64))


def clusterability(model: nn.Module, n_modules: int, *, n_shuffles: int = 20, seed: int = 0) -> Clusterability:
    """The n-cut of ``model``'s spectral partition and its z-score against within-layer weight shuffles.

    Each shuffle permutes the edge weights of every layer's block of the live graph (dead units
    removed first): for a linear layer its ``|W|`` entries, for a conv whole kernels between
    channel pairs. Shuffle ``i`` uses a numpy generator seeded ``(seed, i)`` and is partitioned
    with the same ``seed``.

    Args:
        model: as in `partition` (left unchanged).
        n_modules: how many modules (≥ 2).
        n_shuffles: how many shuffled networks (≥ 2, for a standard deviation).
        seed: seeds the shuffles and k-means.

    Returns:
        `Clusterability` with ``ncut``, ``shuffled`` (``(n_shuffles,)``), ``z_score`` and ``dead``.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
        >>> clusterability(model, 2, n_shuffles=3).shuffled.shape
        (3,)

    References:
        Filan et al., "Clusterability in neural networks", 2021.
    """
    n_modules = check_int("n_modules", n_modules, at_least=2)
    n_shuffles = check_int("n_shuffles", n_shuffles, at_least=2)
    seed = check_int("seed", seed, at_least=0)
    graph = _graph(model)
    _, cut = _partition(graph, n_modules, seed)
    live = graph.live_blocks()
    ones = tuple(np.ones(len(m), dtype=bool) for m in graph.live)
    shuffled = np.empty(n_shuffles)
    for i in range(n_shuffles):
        rng = np.random.default_rng([seed, i])
        blocks = tuple(rng.permutation(b.ravel()).reshape(b.shape) for b in live)
        compact = _Graph(graph.paths, blocks, tuple(o[: int(m.sum())] for o, m in zip(ones, graph.live, strict=True)))
        shuffled[i] = _partition(compact, n_modules, seed)[1]
    spread = shuffled.std(ddof=1)
    z = (cut - shuffled.mean()) / spread if spread > 0 else float("nan")
    return Clusterability(cut, shuffled, float(z), n_modules, _dead(graph))
