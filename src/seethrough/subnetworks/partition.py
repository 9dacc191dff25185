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

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..core.checks import check_int
from ..core.errors import InputError, InputTypeError
from ..core.results import Result, new_figure
from ._residual import SUPPORTED, layouts, residual_graph
from ._spectral import spectral_labels as _spectral
from ._spectral import weighted_layers as _layers

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["Partition", "Clusterability", "partition", "clusterability", "ncut"]


@dataclass(frozen=True)
class _Graph:
    """The unit graph: node groups (network inputs, then layers), weighted edges between groups, live units.

    ``paths[g]`` is the layer path of group ``g`` (None for a group of input features), ``edges``
    are ``(source group, layer group, |W| block of shape (n_source, n_layer))`` and ``live[g]``
    says which units of group ``g`` are live (dead hidden units are False). ``merge[g]`` (when
    given) holds, per unit, the id of the node group it moves with (an attention head), or -1 for
    a unit that is its own node; ``heads`` lists ``(attention path, n_heads)`` in head-id order.
    """

    paths: tuple[str | None, ...]
    edges: tuple[tuple[int, int, np.ndarray], ...]
    live: tuple[np.ndarray, ...]
    merge: tuple[np.ndarray, ...] = ()
    heads: tuple[tuple[str, int], ...] = ()

    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([int(m.sum()) for m in self.live])])

    def adjacency(self) -> np.ndarray:
        """Dense symmetric adjacency over the live units, group after group."""
        starts = self.starts()
        adj = np.zeros((starts[-1], starts[-1]))
        for src, dst, block in self.edges:
            adj[starts[src]:starts[src + 1], starts[dst]:starts[dst + 1]] += block[np.ix_(self.live[src], self.live[dst])]
        return adj + adj.T

    def nodes(self) -> np.ndarray:
        """For each live unit, its node: units of one head share a node; every other unit is its own."""
        if not self.merge:
            return np.arange(int(self.starts()[-1]))
        keys = np.concatenate([m[live] for m, live in zip(self.merge, self.live, strict=True)])
        n_heads = int(keys.max()) + 1 if (keys >= 0).any() else 0
        singles = keys < 0
        out = np.where(singles, 0, keys)
        out[singles] = n_heads + np.arange(int(singles.sum()))
        _, out = np.unique(out, return_inverse=True)  # drop ids of heads with no live unit
        return out

    def shuffled(self, rng: np.random.Generator) -> _Graph:
        """The live graph with each edge block's weights permuted (one permutation per block, in order)."""
        edges = []
        for src, dst, block in self.edges:
            sub = block[np.ix_(self.live[src], self.live[dst])]
            edges.append((src, dst, rng.permutation(sub.ravel()).reshape(sub.shape)))
        merge = tuple(m[live] for m, live in zip(self.merge, self.live, strict=True)) if self.merge else ()
        return _Graph(self.paths, tuple(edges), tuple(np.ones(int(m.sum()), dtype=bool) for m in self.live), merge,
                      self.heads)


def _block(module: nn.Module) -> np.ndarray:
    """``|W|`` from this layer's input features (or channels) to its output units: (n_in, n_out)."""
    w = module.weight.detach().abs().double().cpu()
    if not isinstance(module, nn.Conv2d):
        return w.T.numpy()
    summed = w.sum(dim=(2, 3))  # (out, in / groups)
    out_c, in_c, groups = module.out_channels, module.in_channels, module.groups
    block = torch.zeros(in_c, out_c, dtype=torch.float64)
    per_in, per_out = in_c // groups, out_c // groups
    for g in range(groups):
        block[g * per_in:(g + 1) * per_in, g * per_out:(g + 1) * per_out] = summed[g * per_out:(g + 1) * per_out].T
    return block.numpy()


def _fit(block: np.ndarray, module: nn.Module, size: int, is_conv: bool) -> np.ndarray | None:
    """``block`` read from a source group of ``size`` units, or None when it cannot be."""
    if block.shape[0] == size:
        return block
    if is_conv and isinstance(module, nn.Linear) and block.shape[0] % size == 0:
        # a flattened (C, H, W) map: feature c * H * W + s belongs to channel c (torch's flatten order)
        return block.reshape(size, block.shape[0] // size, -1).sum(1)
    return None


def _chain_graph(model: nn.Module) -> _Graph:
    paths: list[str | None] = []
    sizes: list[int] = []
    convs: list[bool] = []
    edges: list[tuple[int, int, np.ndarray]] = []
    for path, module in _layers(model):
        raw = _block(module)
        source, block = None, None
        # the layer before, else the latest earlier layer whose units it can read
        for g in range(len(paths) - 1, -1, -1):
            if paths[g] is not None:
                block = _fit(raw, module, sizes[g], convs[g])
                if block is not None:
                    source = g
                    break
        if source is None or block is None:
            if paths:
                warnings.warn(f"partition: no earlier nn.Linear / nn.Conv2d gives the {raw.shape[0]} inputs of layer "
                              f"{path!r}; they become unlabelled input nodes of the graph.", stacklevel=3)
            paths.append(None)
            sizes.append(raw.shape[0])
            convs.append(False)
            source, block = len(paths) - 1, raw
        paths.append(path)
        sizes.append(raw.shape[1])
        convs.append(isinstance(module, nn.Conv2d))
        edges.append((source, len(paths) - 1, block))
    live = _prune(paths, edges, sizes)
    return _Graph(tuple(paths), tuple(edges), tuple(live))


def _prune(paths: list[str | None], edges: list[tuple[int, int, np.ndarray]], sizes: list[int]) -> list[np.ndarray]:
    """Live masks: a hidden unit with no incoming or no outgoing weight is dead (repeatedly)."""
    live = [np.ones(n, dtype=bool) for n in sizes]
    changed = True
    while changed:
        changed = False
        for g, path in enumerate(paths):
            outgoing_edges = [(dst, b) for src, dst, b in edges if src == g]
            if path is None or not outgoing_edges:
                continue
            incoming = sum(b[live[src]].sum(0) for src, dst, b in edges if dst == g)
            outgoing = sum(b[:, live[dst]].sum(1) for dst, b in outgoing_edges)
            now = live[g] & (incoming > 0) & (outgoing > 0)
            if not np.array_equal(now, live[g]):
                live[g], changed = now, True
    return live


def _graph(model: nn.Module, heads: bool | None) -> _Graph:
    """The unit graph: a residual stream with heads as node groups where attention is found, else a chain."""
    if heads is not None and not isinstance(heads, bool):
        raise InputTypeError(f"heads must be True, False or None, got {heads!r}.")
    _layers(model)
    if heads is False:
        return _chain_graph(model)
    found, unknown = layouts(model)
    if unknown and heads:
        raise InputError(f"heads=True, but the attention layout of {unknown} is not supported; supported: {SUPPORTED}.")
    if heads and not found:
        raise InputError(f"heads=True, but {type(model).__name__} has no supported attention module ({SUPPORTED}).")
    if unknown:
        warnings.warn(f"partition: {unknown} look like attention but their layout is not supported ({SUPPORTED}); "
                      "their heads are not grouped and their layers are read as a chain (pass heads=True to refuse "
                      "such models, heads=False to silence this).", stacklevel=3)
    if not found:
        return _chain_graph(model)
    paths, sizes, edges, merge, head_list = residual_graph(model, found)
    live = _prune(paths, edges, sizes)
    return _Graph(tuple(paths), tuple(edges), tuple(live), tuple(merge), tuple(head_list))


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


@dataclass(frozen=True)
class Partition(Result):
    """Module ids of every unit of every ``nn.Linear`` / ``nn.Conv2d``: ``labels[path][unit]`` (-1: dead).

    ``input_labels`` are the module ids the spectral cut gave the network's input features (for
    reading only: inputs are nodes of the graph but not units of the model). ``dead`` lists
    ``(path, unit)`` of the dead hidden units, left out of the graph. ``head_labels`` maps each
    attention module read with heads as node groups to the module id of each head.
    """

    labels: dict[str, np.ndarray]
    ncut: float
    dead: list[tuple[str, int]]
    n_modules: int
    input_labels: np.ndarray
    head_labels: dict[str, np.ndarray] = field(default_factory=dict)

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
    """Module id of every live unit (a head's units share one) and the n-cut of the unit graph."""
    adjacency = graph.adjacency()
    nodes = graph.nodes()
    n_nodes = int(nodes.max()) + 1 if len(nodes) else 0
    if n_nodes < n_modules:
        raise InputError(f"the graph has {n_nodes} live nodes, fewer than n_modules={n_modules}; "
                         "ask for fewer modules.")
    if not graph.merge:
        labels = _spectral(adjacency, n_modules, seed)
    else:
        # a head is one node: contract its units (cut and volume add up, so the n-cut is unchanged)
        contract = np.zeros((len(nodes), n_nodes))
        contract[np.arange(len(nodes)), nodes] = 1.0
        labels = _spectral(contract.T @ adjacency @ contract, n_modules, seed)[nodes]
    return labels, ncut(adjacency, labels)


def _dead(graph: _Graph) -> list[tuple[str, int]]:
    return [(path, int(u)) for path, live in zip(graph.paths, graph.live, strict=True) if path is not None
            for u in np.flatnonzero(~live)]


def partition(model: nn.Module, n_modules: int, *, seed: int = 0, heads: bool | None = None) -> Partition:
    """Cut the unit graph of ``model`` into ``n_modules`` modules by spectral clustering.

    Args:
        model: any ``nn.Module``, read as a feed-forward chain of its ``nn.Linear`` / ``nn.Conv2d``
            layers in registration order: each layer reads the latest earlier layer whose size
            fits its inputs (a linear layer after a flattened or pooled conv map counts, grouped
            by channel); inputs that no earlier layer fits become unlabelled input nodes (with a
            warning). Left unchanged; no forward pass is run. A model with attention of a
            supported layout (``q, k, v, o`` linear children and an ``n_heads`` attribute, as in
            the zoo's `TinyTransformer`; or ``nn.MultiheadAttention``) is read as a residual
            stream instead: q, k and v read every earlier stream writer (the embedding's
            ``d_model`` input nodes, each ``o``, each layer writing ``d_model`` features), o reads
            v, an MLP's second layer reads its first, and the units of one head (its q, k and v
            units) are one node, so they always share a module. LayerNorm scales are not read.
        n_modules: how many modules (≥ 2).
        seed: seeds k-means on the spectral embedding.
        heads: ``None`` groups heads where a supported attention layout is found (and warns
            about attention-like modules it cannot read); ``True`` refuses a model without one or
            with an unsupported one; ``False`` reads every model as a chain.

    Returns:
        `Partition`: ``labels`` per layer path (an int array, one module id per output unit or
        channel, -1 for dead units), ``ncut``, ``dead``, and ``head_labels`` (the module of each
        head, per attention path).

    Raises:
        InputError: no weighted layers, fewer live nodes than modules, or (``heads=True``) no
            supported attention layout; a residual model with a ``d_model → d_model`` layer that
            is not an attention output (ambiguous: pass ``heads=False``).

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
    graph = _graph(model, heads)
    labels, cut = _partition(graph, n_modules, seed)
    starts = graph.starts()
    weighted = dict(_layers(model))
    out: dict[str, np.ndarray] = {}
    head_labels: dict[str, np.ndarray] = {}
    for path, n_heads in graph.heads:
        head_labels[path] = np.full(n_heads, -1, dtype=np.int64)
    head_of = [(path, h) for path, n_heads in graph.heads for h in range(n_heads)]
    for g, (path, live) in enumerate(zip(graph.paths, graph.live, strict=True)):
        lab = np.full(len(live), -1, dtype=np.int64)
        lab[live] = labels[starts[g]:starts[g + 1]]
        if graph.merge:
            for key, k in zip(graph.merge[g], lab, strict=True):
                if key >= 0 and k >= 0:
                    head_labels[head_of[key][0]][head_of[key][1]] = k
        if path is not None and path in weighted:
            out[path] = lab
    return Partition(out, cut, _dead(graph), n_modules, labels[:starts[1]].astype(np.int64), head_labels)


def clusterability(model: nn.Module, n_modules: int, *, n_shuffles: int = 20, seed: int = 0,
                   heads: bool | None = None) -> Clusterability:
    """The n-cut of ``model``'s spectral partition and its z-score against within-layer weight shuffles.

    Each shuffle permutes the edge weights of every layer's block of the live graph (dead units
    removed first): for a linear layer its ``|W|`` entries, for a conv whole kernels between
    channel pairs. Shuffle ``i`` uses a numpy generator seeded ``(seed, i)`` and is partitioned
    with the same ``seed``. In a residual model (see `partition`) every (writer, reader) block is
    shuffled on its own, and a head's units stay one node.

    Args:
        model: as in `partition` (left unchanged).
        n_modules: how many modules (≥ 2).
        n_shuffles: how many shuffled networks (≥ 2, for a standard deviation).
        seed: seeds the shuffles and k-means.
        heads: as in `partition`.

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
    graph = _graph(model, heads)
    _, cut = _partition(graph, n_modules, seed)
    shuffled = np.empty(n_shuffles)
    for i in range(n_shuffles):
        shuffled[i] = _partition(graph.shuffled(np.random.default_rng([seed, i])), n_modules, seed)[1]
    spread = shuffled.std(ddof=1)
    z = (cut - shuffled.mean()) / spread if spread > 0 else float("nan")
    return Clusterability(cut, shuffled, float(z), n_modules, _dead(graph))
