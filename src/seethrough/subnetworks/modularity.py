"""Functional modules and enforced modularity (survey §4.2-4.3).

Subnetworks / modularity in the survey's taxonomy. `functional_graph` builds a graph of units from
what they do on given inputs rather than from the weights: ``method="coactivation"`` joins two units
by the absolute correlation of their activations, ``method="ablation"`` by how much ablating one
moves the other (both directions averaged); `functional_partition` cuts it into modules with the
same spectral n-cut as `partition`. `train_modular` trains a copy of an MLP with a connection-cost
penalty (``|W| ·`` the distance between the units it joins, units laid out on a line) and measures
n-cut, clusterability and, given behaviours, lesion dissociation before and after.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core import capture, check_ablation, check_float, check_int
from ..core.errors import InputError, InputTypeError
from ..core.inputs import call_model, validate_inputs
from ..core.results import Result, new_figure
from ..core.types import Inputs
from ._ablate import run_copies, unit_fills
from ._spectral import spectral_labels, weighted_layers
from .lesions import LesionTest, lesion_test
from .partition import Clusterability, Partition, clusterability, ncut

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["UnitGraph", "functional_graph", "functional_partition", "FUNCTIONAL_METHODS",
           "ModularTraining", "train_modular", "connection_cost"]

FUNCTIONAL_METHODS = ("coactivation", "ablation")


@dataclass(frozen=True)
class UnitGraph(Result):
    """A symmetric weighted graph over the live units of every ``nn.Linear`` / ``nn.Conv2d``.

    ``units[i]`` is ``(layer path, unit)`` of node ``i``; ``dead`` lists the units left out (no
    variation on the inputs); ``adjacency`` is ``(n_nodes, n_nodes)``, non-negative, zero diagonal.
    """

    method: str
    units: list[tuple[str, int]]
    adjacency: np.ndarray
    dead: list[tuple[str, int]]
    sizes: dict[str, int]

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        i, j = np.triu_indices(len(self.units), 1)
        keep = self.adjacency[i, j] > 0
        return pd.DataFrame({"layer_a": [self.units[k][0] for k in i[keep]], "unit_a": [self.units[k][1] for k in i[keep]],
                             "layer_b": [self.units[k][0] for k in j[keep]], "unit_b": [self.units[k][1] for k in j[keep]],
                             "weight": self.adjacency[i, j][keep]})

    def plot(self) -> Figure:
        fig = new_figure(3.6, 3.2)
        ax = fig.add_subplot()
        ax.imshow(self.adjacency if self.adjacency.size else np.zeros((1, 1)), cmap="viridis")
        ax.set_title(f"{self.method} graph ({len(self.units)} units)")
        return fig


def _summaries(values: Tensor, path: str) -> Tensor:
    """``(batch, n_units)``: a layer's value per example, positions / space averaged (units on the last
    axis for ``(batch, seq, d)``, on axis 1 for conv maps)."""
    v = values.detach().double()
    if v.ndim == 2:
        return v
    if v.ndim == 3:
        return v.mean(1)
    return v.flatten(2).mean(2)


def _layer_paths(model: nn.Module) -> list[str]:
    return [p for p, _ in weighted_layers(model)]


def functional_graph(model: nn.Module, inputs: Inputs, *, method: str = "coactivation", ablation: str = "zero",
                     max_rows: int = 4096) -> UnitGraph:
    """The functional graph of ``model``'s units on ``inputs``: co-activation or ablation effect.

    Every output unit of every ``nn.Linear`` and channel of every ``nn.Conv2d`` is a node; a unit's
    value per example is its output (averaged over positions or space). ``"coactivation"``: the
    weight of ``(i, j)`` is ``|corr(a_i, a_j)|`` over the examples. ``"ablation"``: ``E[i, j]`` is
    the mean over examples of ``|a_j(unit i ablated) − a_j|`` divided by the standard deviation of
    ``a_j`` (units downstream of ``i``, outputs included, move; the others do not), and the weight is
    ``(E[i, j] + E[j, i]) / 2``. Units that do not vary on ``inputs`` are dead: left out and listed.

    Args:
        model: any ``nn.Module`` (left unchanged).
        inputs: the examples (at least 3).
        method: ``"coactivation"`` or ``"ablation"``.
        ablation: for ``"ablation"``: ``"zero"`` or ``"mean"`` (the unit's mean over ``inputs``).
        max_rows: rows per forward pass (all single-unit ablations run as stacked copies).

    Returns:
        `UnitGraph`.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> functional_graph(model, torch.randn(20, 3)).adjacency.shape
        (6, 6)

    References:
        Hod et al., "Quantifying local specialization in deep neural networks", 2022; Lange et al.,
        "Clustering units in neural networks: upstream vs downstream information", 2022.
    """
    if not isinstance(method, str) or method not in FUNCTIONAL_METHODS:
        raise InputError(f"method must be 'coactivation' or 'ablation', got {method!r}.")
    ablation = check_ablation(ablation, ("zero", "mean"))
    max_rows = check_int("max_rows", max_rows, at_least=1)
    paths = _layer_paths(model)
    n = validate_inputs(model, inputs)
    if n < 3:
        raise InputError(f"functional_graph needs at least 3 examples to correlate units, got {n}.")
    with torch.no_grad():
        values = capture(model, inputs, paths, clone=True)
    clean = {p: _summaries(values[p], p) for p in paths}
    sizes = {p: clean[p].shape[1] for p in paths}
    stds = torch.cat([clean[p].std(0) for p in paths])
    units = [(p, u) for p in paths for u in range(sizes[p])]
    live = (stds > 1e-12).numpy()
    if method == "coactivation":
        a = torch.cat([clean[p] for p in paths], dim=1)
        a = (a - a.mean(0)) / torch.where(stds > 1e-12, stds, torch.ones_like(stds))
        adjacency = ((a.T @ a) / (n - 1)).abs().numpy()
    else:
        adjacency = _ablation_effects(model, inputs, paths, clean, stds, ablation, max_rows)
        adjacency = (adjacency + adjacency.T) / 2
    adjacency = adjacency[np.ix_(live, live)].copy()
    np.fill_diagonal(adjacency, 0.0)
    return UnitGraph(method, [u for u, ok in zip(units, live, strict=True) if ok], adjacency,
                     [u for u, ok in zip(units, live, strict=True) if not ok], sizes)


def _ablation_effects(model: nn.Module, inputs: Inputs, paths: list[str], clean: dict[str, Tensor], stds: Tensor,
                      ablation: str, max_rows: int) -> np.ndarray:
    """``E[i, j]``: mean |change of unit j| / std_j when unit i alone is ablated (all units, stacked copies)."""
    n = next(iter(clean.values())).shape[0]
    total = sum(c.shape[1] for c in clean.values())
    fills = unit_fills(model, inputs, paths, ablation)
    masks, start = {}, 0
    for p in paths:
        size = clean[p].shape[1]
        m = torch.zeros(total, size, dtype=torch.bool)
        m[torch.arange(start, start + size), torch.arange(size)] = True
        masks[p], start = m, start + size
    scale = torch.where(stds > 1e-12, stds, torch.ones_like(stds))

    def observe(output: Any, recorded: dict[str, Tensor], copies: int) -> Tensor:
        moved = []
        for p in paths:
            now = _summaries(recorded[p], p).reshape(copies, n, -1)
            moved.append((now - clean[p][None]).abs().mean(1))
        return torch.cat(moved, dim=1) / scale[None]

    effects = run_copies(model, inputs, masks, fills, observe, record=paths, max_rows=max_rows).numpy()
    np.fill_diagonal(effects, 0.0)  # a unit's own ablation is the edit, not an effect
    return effects


def functional_partition(model: nn.Module, inputs: Inputs, n_modules: int, *, method: str = "coactivation",
                         ablation: str = "zero", seed: int = 0) -> Partition:
    """`functional_graph` cut into ``n_modules`` by the spectral n-cut of `partition` (same labels layout).

    Returns:
        `Partition` with ``labels`` per layer path (-1: dead on ``inputs``), ``ncut`` of the functional
        graph and an empty ``input_labels`` (inputs are not nodes of a functional graph).

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> sorted(functional_partition(model, torch.randn(20, 3), 2).labels)
        ['0', '2']
    """
    n_modules = check_int("n_modules", n_modules, at_least=2)
    seed = check_int("seed", seed, at_least=0)
    graph = functional_graph(model, inputs, method=method, ablation=ablation)
    if len(graph.units) < n_modules:
        raise InputError(f"the functional graph has {len(graph.units)} live units, fewer than n_modules={n_modules}.")
    found = spectral_labels(graph.adjacency, n_modules, seed)
    labels = {p: np.full(s, -1, dtype=np.int64) for p, s in graph.sizes.items()}
    for (p, u), k in zip(graph.units, found, strict=True):
        labels[p][u] = int(k)
    return Partition(labels, ncut(graph.adjacency, found), list(graph.dead), n_modules, np.zeros(0, dtype=np.int64))


# -- enforced modularity ----------------------------------------------------------------------------------


def _chain(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    layers = weighted_layers(model)
    bad = [p for p, m in layers if not isinstance(m, nn.Linear)]
    if bad or any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        raise InputError(f"train_modular lays out the units of a chain of nn.Linear layers; {type(model).__name__} "
                         f"also has {bad or 'attention'} (conv and attention layers are not supported).")
    for (p0, a), (p1, b) in zip(layers[:-1], layers[1:], strict=True):
        if b.in_features != a.out_features:
            raise InputError(f"layer {p1!r} reads {b.in_features} features but {p0!r} gives {a.out_features}: "
                             "train_modular needs a chain of nn.Linear layers.")
    return layers  # type: ignore[return-value]  # every module checked to be nn.Linear above


def _distances(layer: nn.Linear) -> Tensor:
    """``|pos(out) − pos(in)|`` with the units of each side spread evenly on [0, 1] (unit i at (i + ½)/size)."""
    pos_out = (torch.arange(layer.out_features, dtype=torch.float64) + 0.5) / layer.out_features
    pos_in = (torch.arange(layer.in_features, dtype=torch.float64) + 0.5) / layer.in_features
    return (pos_out[:, None] - pos_in[None, :]).abs()


def connection_cost(model: nn.Module) -> float:
    """``Σ |W_oi| · |pos(o) − pos(i)|`` over every weight of a chain of ``nn.Linear`` layers (units on a line).

    Example:
        >>> layer = nn.Linear(2, 2, bias=False)
        >>> _ = layer.weight.data.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        >>> connection_cost(nn.Sequential(layer))  # the off-diagonal weights, each at distance 0.5
        2.5
    """
    return float(sum((m.weight.detach().double().abs() * _distances(m)).sum() for _, m in _chain(model)))


@dataclass(frozen=True)
class ModularTraining(Result):
    """A copy of the model trained with a connection cost, and its modularity before and after.

    Attributes:
        model: the trained copy (the model passed in is never modified).
        before, after: `Clusterability` of the model passed in and of the trained copy.
        cost_before, cost_after: `connection_cost` of each.
        loss_before, loss_after: the task loss on ``inputs`` of each.
        lesions_before, lesions_after: `lesion_test` of each one's hidden layers partitioned into
            ``n_modules`` (None when no ``metrics`` were given).
    """

    model: nn.Module
    before: Clusterability
    after: Clusterability
    cost_before: float
    cost_after: float
    loss_before: float
    loss_after: float
    lesions_before: LesionTest | None
    lesions_after: LesionTest | None

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        rows = []
        for stage, c, cost, loss, les in (("before", self.before, self.cost_before, self.loss_before,
                                           self.lesions_before),
                                          ("after", self.after, self.cost_after, self.loss_after, self.lesions_after)):
            rows.append({"stage": stage, "ncut": c.ncut, "z_score": c.z_score, "connection_cost": cost, "loss": loss,
                         "dissociation": None if les is None else les.ratio,
                         "verdict": None if les is None else les.verdict})
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        from ..core.results import jsonable

        return jsonable({"before": self.before, "after": self.after, "cost_before": self.cost_before,
                         "cost_after": self.cost_after, "loss_before": self.loss_before, "loss_after": self.loss_after,
                         "lesions_before": self.lesions_before, "lesions_after": self.lesions_after})

    def plot(self) -> Figure:
        fig = new_figure(6, 2.6)
        for i, (name, a, b) in enumerate((("n-cut", self.before.ncut, self.after.ncut),
                                          ("z-score", self.before.z_score, self.after.z_score),
                                          ("connection cost", self.cost_before, self.cost_after))):
            ax = fig.add_subplot(1, 3, i + 1)
            ax.bar(["before", "after"], [a, b], color=["0.6", "C0"])
            ax.set_title(name)
        return fig


def _default_loss(output: Any, labels: Tensor) -> Tensor:
    return nn.functional.cross_entropy(output, labels)


def _hidden_labels(model: nn.Module, n_modules: int, seed: int) -> dict[str, np.ndarray]:
    labels = dict(_partition_labels(model, n_modules, seed))
    labels.pop(next(reversed(labels)))  # the output layer: its own logits always "carry" a behaviour
    return labels


def _partition_labels(model: nn.Module, n_modules: int, seed: int) -> dict[str, np.ndarray]:
    from .partition import partition

    return partition(model, n_modules, seed=seed).labels


def train_modular(model: nn.Module, inputs: Tensor, labels: Tensor, *, n_modules: int = 2, strength: float = 0.01,
                  n_steps: int = 1000, batch_size: int = 128, lr: float = 3e-3,
                  loss: Callable[[Any, Tensor], Tensor] | None = None,
                  metrics: Mapping[str, Callable[[Any], Tensor]] | None = None, test_inputs: Tensor | None = None,
                  n_shuffles: int = 20, seed: int = 0) -> ModularTraining:
    """Train a copy of an MLP with a connection cost that makes it modular; measure before and after.

    The units of every layer are laid out evenly on a line (the inputs and outputs in their own
    order), and the loss adds ``strength × connection_cost`` (Σ ``|W| ·`` distance): long weights
    cost more, so units that read the same inputs and feed the same outputs gather (the spatial
    cost of Kirsch / Filan, and of Liu et al.'s brain-inspired modular training without its
    swaps). Adam, minibatches drawn with a generator seeded ``seed``; the global RNG is untouched.

    Args:
        model: a chain of ``nn.Linear`` layers (with activations between); never modified.
        inputs: ``(n, d_in)`` training inputs.
        labels: training targets for ``loss`` (class indices for the default cross-entropy).
        n_modules: modules for the before/after measurements.
        strength: weight of the connection cost.
        n_steps, batch_size, lr: the training run.
        loss: ``loss(output, labels) -> scalar`` (default: cross-entropy on class indices).
        metrics: behaviours for `lesion_test` of the hidden layers before and after (optional).
        test_inputs: the inputs the lesion tests run on (required with ``metrics``; held-out data).
        n_shuffles: shuffles of the clusterability z-scores.
        seed: minibatches, clusterability and lesion controls.

    Returns:
        `ModularTraining` (``.model`` is the trained copy).

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        >>> result = train_modular(model, x, y, n_steps=20, n_shuffles=3)
        >>> result.cost_after < result.cost_before
        True

    References:
        Filan et al., "Clusterability in neural networks", 2021; Liu, Gan & Tegmark, "Seeing is believing:
        brain-inspired modular training for mechanistic interpretability", 2023; Golechha et al., "Modular
        training of neural networks aids interpretability", 2025.
    """
    _chain(model)
    if not isinstance(inputs, Tensor) or not isinstance(labels, Tensor) or len(inputs) != len(labels):
        raise InputTypeError("inputs and labels must be tensors with the same number of rows.")
    validate_inputs(model, inputs)
    n_modules = check_int("n_modules", n_modules, at_least=2)
    strength = check_float("strength", strength, at_least=0.0)
    n_steps = check_int("n_steps", n_steps, at_least=1)
    batch_size = check_int("batch_size", batch_size, at_least=1)
    lr = check_float("lr", lr, at_least=0.0)
    n_shuffles = check_int("n_shuffles", n_shuffles, at_least=2)
    seed = check_int("seed", seed, at_least=0)
    if metrics is not None and test_inputs is None:
        raise InputError("metrics need test_inputs: the held-out inputs the lesion tests run on.")
    if loss is None:
        loss = _default_loss
    trained = copy.deepcopy(model)
    flags = [p.requires_grad for p in trained.parameters()]
    trained.requires_grad_(True)
    layers = [m for _, m in _chain(trained)]
    distances = [_distances(m).to(m.weight) for m in layers]
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(trained.parameters(), lr=lr)
    with torch.random.fork_rng(devices=[]):
        for _ in range(n_steps):
            rows = torch.randint(0, len(inputs), (min(batch_size, len(inputs)),), generator=gen)
            task = loss(call_model(trained, inputs[rows]), labels[rows])
            cost = sum((m.weight.abs() * d).sum() for m, d in zip(layers, distances, strict=True))
            optimiser.zero_grad()
            (task + strength * cost).backward()
            optimiser.step()
    for p, flag in zip(trained.parameters(), flags, strict=True):
        p.grad = None
        p.requires_grad_(flag)
    with torch.no_grad():
        loss_before = float(loss(call_model(model, inputs), labels))
        loss_after = float(loss(call_model(trained, inputs), labels))
    lesions: list[LesionTest | None] = [None, None]
    if metrics is not None and test_inputs is not None:
        lesions = [lesion_test(m, _hidden_labels(m, n_modules, seed), test_inputs, metrics, seed=seed)
                   for m in (model, trained)]
    return ModularTraining(trained, clusterability(model, n_modules, n_shuffles=n_shuffles, seed=seed),
                           clusterability(trained, n_modules, n_shuffles=n_shuffles, seed=seed),
                           connection_cost(model), connection_cost(trained), loss_before, loss_after, *lesions)
