"""Models with planted neuron hazards: dead, duplicated and idle units, and superposed units.

`planted_hazards` widens the first hidden layer of a trained digits MLP (`trojaned_classifier`
with no trojan) with units whose status is exact by construction: dead units (no input in
[0, 1] can make them fire), duplicated units (a copy of a trained unit's incoming weights, the
outgoing weight split between the two, so the function is unchanged) and idle units (active, but
with zero outgoing weights); the hidden units are then shuffled. `superposed_units` is the toy
model of superposition with its weak loadings pruned, so each hidden dimension carries an exactly
known number of features. These are the answer keys of the planted-hazards game.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from seethrough.core import InputError
from seethrough.evidence import accuracy

from ._seeding import derive_seed, generator
from .cache import cached
from .classifiers import DigitsMLP, trojaned_classifier
from .data import digits16
from .superposition import LOADING_THRESHOLD, REPRESENTED_NORM, ToyModel, train_toy_model

__all__ = ["planted_hazards", "superposed_units", "PRUNE_TOLERANCE"]

_VERSION = 1  # bump when planting changes, so old cache entries are not reused
#: The relative damage (RMS change of the logits over their RMS spread) within which a unit is
#: prunable in `planted_hazards`' answer key; the game passes the same tolerance to the method.
PRUNE_TOLERANCE = 0.02


def planted_hazards(seed: int, *, n_dead: int = 4, n_duplicated: int = 4, n_idle: int = 4
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """A digits MLP whose ``act1`` layer holds planted dead, duplicated and idle units; cached.

    Starting from ``trojaned_classifier("mlp", "none", seed)`` (64 trained ``act1`` units), new
    units are added and all units shuffled (seeded):

    * dead: random incoming weights ``w`` and bias ``-(Σ|w| + 1)``, so the pre-activation is
      below -1 for every input in [0, 1]; random (non-zero) outgoing weights;
    * duplicated: unit ``j`` copies a trained unit ``i``'s incoming weights and bias; ``i``'s
      outgoing weights ``w`` become ``α w`` and ``j``'s ``(1 - α) w`` with ``α`` uniform in
      [0.3, 0.7]: the function is unchanged and neither unit alone carries all of it. Sources are
      trained units active on 10–90% of the training images;
    * idle: random incoming weights with the bias set so the unit fires on about half of the
      training images, and zero outgoing weights.

    The answer key is exact: ``dead`` lists every unit that never fires on any of the 1797
    digits (the planted ones and any the training left dead), ``duplicated`` the planted pairs,
    ``prunable`` every unit whose removal (its outgoing weights zeroed: weight surgery, not
    hooks) changes the logits on all 1797 digits by at most `PRUNE_TOLERANCE` (root-mean-square
    change over the logits' root-mean-square spread); that includes the dead and idle units.

    Args:
        seed: the base model's seed; also seeds the planting.
        n_dead, n_duplicated, n_idle: how many units of each kind to plant.

    Returns:
        ``(model, meta)``: a `DigitsMLP` with ``64 + n_dead + n_duplicated + n_idle`` ``act1``
        units; ``meta`` keys ``site`` (``"act1"``), ``n_units``, ``dead``, ``duplicated`` (pairs
        ``[source, copy]``), ``idle``, ``prunable``, ``damage`` (each unit's removal damage on all
        digits), ``clean_accuracy``, ``base_accuracy`` (test split) and ``config``.

    Raises:
        InputError: a negative count.
    """
    if min(n_dead, n_duplicated, n_idle) < 0:
        raise InputError(f"counts must be ≥ 0, got n_dead={n_dead}, n_duplicated={n_duplicated}, n_idle={n_idle}.")
    base, base_meta = trojaned_classifier("mlp", "none", seed)
    h1 = base.get_submodule("fc1").out_features
    width = h1 + n_dead + n_duplicated + n_idle
    config = {"version": _VERSION, "seed": seed, "n_dead": n_dead, "n_duplicated": n_duplicated, "n_idle": n_idle,
              "base": base_meta["config"], "tolerance": PRUNE_TOLERANCE}

    def build() -> nn.Module:
        return DigitsMLP(h1=width, h2=base.get_submodule("fc2").out_features, seed=0)

    def train(model: nn.Module) -> dict[str, Any]:
        if not isinstance(model, DigitsMLP):  # narrows the type; build() always makes one
            raise TypeError(f"expected a DigitsMLP, got {type(model).__name__}.")
        return _plant(model, base, seed, n_dead, n_duplicated, n_idle, base_meta["clean_accuracy"])

    return cached("planted_hazards", config, build, train)


def _all_digits() -> Tensor:
    return torch.cat([digits16("train")[0], digits16("test")[0]]).flatten(1)


def _plant(model: DigitsMLP, base: nn.Module, seed: int, n_dead: int, n_dup: int, n_idle: int,
           base_accuracy: float) -> dict[str, Any]:
    gen = generator(seed, "hazards")
    rng = np.random.default_rng(derive_seed(seed, "hazards"))
    w1, b1 = base.get_parameter("fc1.weight").detach().clone(), base.get_parameter("fc1.bias").detach().clone()
    w2 = base.get_parameter("fc2.weight").detach().clone()
    h1, n_in = w1.shape
    x_train = digits16("train")[0].flatten(1)
    with torch.no_grad():
        active = (x_train @ w1.T + b1 > 0).double().mean(0)
    rows_w, rows_b, cols = [w1], [b1], [w2]
    bound = 1.0 / n_in ** 0.5
    # dead: the pre-activation w·x + b ≤ Σ|w| + b = -1 for every x in [0, 1]^n_in
    dead_w = torch.empty(n_dead, n_in).uniform_(-bound, bound, generator=gen)
    rows_w.append(dead_w)
    rows_b.append(-(dead_w.abs().sum(1) + 1.0))
    cols.append(torch.empty(w2.shape[0], n_dead).uniform_(-0.3, 0.3, generator=gen))
    # duplicated: copies of trained units, outgoing weights split α : 1 - α
    candidates = [int(u) for u in torch.nonzero((active > 0.1) & (active < 0.9)).flatten()]
    if len(candidates) < n_dup:
        raise InputError(f"only {len(candidates)} trained units fire on 10-90% of the images; cannot plant {n_dup} "
                         "duplicates.")
    sources = sorted(int(u) for u in rng.choice(candidates, size=n_dup, replace=False))
    alphas = rng.uniform(0.3, 0.7, size=n_dup)
    rows_w.append(w1[sources])
    rows_b.append(b1[sources])
    copy_cols = torch.stack([(1.0 - float(a)) * w2[:, s] for s, a in zip(sources, alphas, strict=True)], 1) \
        if n_dup else torch.zeros(w2.shape[0], 0)
    for s, a in zip(sources, alphas, strict=True):
        cols[0][:, s] = float(a) * w2[:, s]
    cols.append(copy_cols)
    # idle: fire on about half the training images, read by nothing
    idle_w = torch.empty(n_idle, n_in).uniform_(-bound, bound, generator=gen)
    rows_w.append(idle_w)
    rows_b.append(-(x_train @ idle_w.T).median(0).values if n_idle else torch.zeros(0))
    cols.append(torch.zeros(w2.shape[0], n_idle))

    w1_all, b1_all, w2_all = torch.cat(rows_w), torch.cat(rows_b), torch.cat(cols, 1)
    perm = torch.randperm(w1_all.shape[0], generator=gen)  # new position k holds old unit perm[k]
    where = torch.argsort(perm)  # old unit u sits at new position where[u]
    with torch.no_grad():
        model.get_parameter("fc1.weight").copy_(w1_all[perm])
        model.get_parameter("fc1.bias").copy_(b1_all[perm])
        model.get_parameter("fc2.weight").copy_(w2_all[:, perm])
        for name in ("fc2.bias", "head.weight", "head.bias"):
            model.get_parameter(name).copy_(base.get_parameter(name).detach())
    start_dup = h1 + n_dead
    start_idle = start_dup + n_dup
    damage = _removal_damage(model)
    x_all = _all_digits()
    with torch.no_grad():
        fires = (model.act1(model.fc1(x_all)) > 0).any(0)
    xt, yt = digits16("test")
    return {
        "site": "act1", "n_units": int(w1_all.shape[0]),
        "dead": sorted(int(u) for u in torch.nonzero(~fires).flatten()),
        "planted_dead": sorted(int(where[h1 + k]) for k in range(n_dead)),
        "duplicated": sorted([int(where[s]), int(where[start_dup + k])] for k, s in enumerate(sources)),
        "idle": sorted(int(where[start_idle + k]) for k in range(n_idle)),
        "prunable": [u for u, d in enumerate(damage) if d <= PRUNE_TOLERANCE],
        "damage": damage, "alphas": [float(a) for a in alphas],
        "clean_accuracy": accuracy(model, xt, yt), "base_accuracy": base_accuracy,
    }


def _removal_damage(model: DigitsMLP) -> list[float]:
    """Each ``act1`` unit's removal damage on all digits, by zeroing its ``fc2`` column (no hooks)."""
    x = _all_digits()
    w2 = model.get_parameter("fc2.weight")
    with torch.no_grad():
        h = model.act1(model.fc1(x))
        clean = model.head(model.act2(model.fc2(h))).double()
        spread = float((clean - clean.mean(0)).pow(2).sum(1).mean().sqrt())
        out = []
        for u in range(w2.shape[1]):
            w = w2.clone()
            w[:, u] = 0.0
            logits = model.head(model.act2(h @ w.T + model.get_parameter("fc2.bias"))).double()
            out.append(float((logits - clean).pow(2).sum(1).mean().sqrt()) / spread)
    return out


def superposed_units(seed: int, *, n_features: int = 40, d_hidden: int = 10) -> tuple[ToyModel, dict[str, Any]]:
    """The toy model of superposition with its weak loadings pruned: an exact polysemanticity key; cached.

    `train_toy_model` learns ``W`` (``d_hidden × n_features``); here every loading ``W[j, i]``
    is set to zero unless ``|W[j, i]| > LOADING_THRESHOLD`` and feature ``i`` is represented
    (``‖W_i‖ > REPRESENTED_NORM``). Hidden dimension ``j`` (site ``"hidden"``, linear in the
    features) then responds to exactly ``features_per_unit[j]`` features, the count
    `train_toy_model` reports for the unpruned model, with the learned geometry of those loadings.
    The model's inputs are the features themselves (`sample_features`).

    Returns:
        ``(model, meta)``: ``meta`` keys ``site`` (``"hidden"``), ``features_per_unit``,
        ``loadings`` (per hidden dimension, the sorted features it loads on), ``toy_loss`` (the
        unpruned model's loss) and ``config``.
    """
    toy, toy_meta = train_toy_model(seed, n_features=n_features, d_hidden=d_hidden)
    config = {"version": _VERSION, "toy": toy_meta["config"], "loading_threshold": LOADING_THRESHOLD,
              "represented_norm": REPRESENTED_NORM}

    def build() -> nn.Module:
        return ToyModel(n_features, d_hidden)

    def train(model: nn.Module) -> dict[str, Any]:
        w = toy.get_parameter("W").detach()
        keep = (w.abs() > LOADING_THRESHOLD) & (w.norm(dim=0) > REPRESENTED_NORM)
        with torch.no_grad():
            model.get_parameter("W").copy_(w * keep)
            model.get_parameter("b").copy_(toy.get_parameter("b").detach())
        return {"site": "hidden", "features_per_unit": keep.sum(1).tolist(),
                "loadings": [torch.nonzero(row).flatten().tolist() for row in keep], "toy_loss": toy_meta["loss"]}

    model, meta = cached("superposed_units", config, build, train)
    if not isinstance(model, ToyModel):  # narrows the type; build() always makes one
        raise TypeError(f"expected a ToyModel, got {type(model).__name__}.")
    return model, meta
