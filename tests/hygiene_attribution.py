"""Hygiene cases for gradient attribution beyond tests/hygiene.py: SmoothGrad/VarGrad, conductance,
guided backpropagation, direction targets, and the attribution games and tabular zoo entries."""

from __future__ import annotations

from typing import Any

import torch
from hygiene import Case
from models import TinyCNN, TinyMLP, TinyTransformer, images, tokens, vectors
from torch import Tensor

import seethrough.hf as hf
from seethrough import Site
from seethrough.bench.games import attribution as attribution_games
from seethrough.bench.games import roar as roar_game
from seethrough.bench.games import sanity_checks as sanity_game
from seethrough.bench.zoo import tabular
from seethrough.neurons.attribution import integrated_gradients
from seethrough.neurons.conductance import conductance
from seethrough.neurons.guided import guided_backprop
from seethrough.neurons.smoothing import smoothgrad, vargrad
from seethrough.neurons.tokens import TokenAttribution


def _raise_metric(output: Tensor) -> Tensor:
    raise RuntimeError("injected failure in a user metric")


def _with_delta(r: Any) -> Tensor:
    return torch.cat([r.values.flatten(1), r.delta[:, None]], 1)


CASES: list[Case] = [
    # SmoothGrad's noise is drawn for the whole batch, so a batch of n and n batches of one see
    # different noise: no per-example check (determinism per seed is checked).
    Case("smoothgrad", smoothgrad, TinyMLP, vectors, lambda m, x: smoothgrad(m, x, 1, n_samples=5).values,
         invalid=(lambda m, x: smoothgrad(m, x, 3), lambda m, x: smoothgrad(m, x, 0, n_samples=0),
                  lambda m, x: smoothgrad(m, x, None, site="fc1", metric=_raise_metric))),
    Case("smoothgrad (cnn site, train mode, chunked)", smoothgrad, TinyCNN, images,
         lambda m, x: smoothgrad(m, x, 1, site="conv", n_samples=4, internal_batch_size=5).values, train_mode=True),
    Case("vargrad", vargrad, TinyMLP, vectors, lambda m, x: vargrad(m, x, 1, site="fc1", n_samples=5).values,
         invalid=(lambda m, x: vargrad(m, x, 1, stdev=-1.0), lambda m, x: vargrad(m, x, 1, site="fc9"))),
    Case("vargrad (transformer, direction)", vargrad, TinyTransformer, tokens,
         lambda m, x: vargrad(m, x, None, site="blocks.0", direction=torch.ones(8), n_samples=3,
                              metric=lambda out: out[:, -1, 3]).values,
         invalid=(lambda m, x: vargrad(m, x, None, site="blocks.0", direction=torch.ones(3),
                                       metric=lambda out: out[:, -1, 3]),)),
    Case("conductance", conductance, TinyMLP, vectors, lambda m, x: conductance(m, x, 2, site="fc1", n_steps=6),
         per_example=_with_delta,
         invalid=(lambda m, x: conductance(m, x, 2, site="fc9"), lambda m, x: conductance(m, x, 5, site="fc1"),
                  lambda m, x: conductance(m, x, None, site="fc1", metric=_raise_metric))),
    Case("conductance (cnn units, train mode, chunked)", conductance, TinyCNN, images,
         lambda m, x: conductance(m, x, 1, site=Site("conv", units=[0, 2]), n_steps=5, internal_batch_size=4),
         per_example=_with_delta, train_mode=True),
    Case("conductance (transformer, path through the embeddings)", conductance, TinyTransformer, tokens,
         lambda m, x: conductance(m, x, None, site="blocks.0", path_site="embed", n_steps=4,
                                  metric=lambda out: out[:, -1, 3]),
         per_example=_with_delta,
         invalid=(lambda m, x: conductance(m, x, None, site="blocks.0", path_site="embedd",
                                           metric=lambda out: out[:, -1, 3]),
                  lambda m, x: conductance(m, x, None, site="blocks.0", path_site="embed", metric=_raise_metric))),
    Case("guided_backprop", guided_backprop, TinyCNN, images, lambda m, x: guided_backprop(m, x, 1).values,
         per_example=lambda v: v, invalid=(lambda m, x: guided_backprop(m, x, 7),)),
    Case("guided_backprop (mlp, train mode)", guided_backprop, TinyMLP, vectors,
         lambda m, x: guided_backprop(m, x, 0).values, per_example=lambda v: v, train_mode=True),
    Case("integrated_gradients (direction)", integrated_gradients, TinyMLP, vectors,
         lambda m, x: integrated_gradients(m, x, 1, site="fc1", direction=torch.arange(8.0), n_steps=5),
         per_example=lambda r: torch.stack([r.values, r.delta], 1),
         invalid=(lambda m, x: integrated_gradients(m, x, 1, site="fc1", direction=torch.ones(2)),)),
]

CASES += [
    Case(f"games.attribution_map ({method})", attribution_games.attribution_map, TinyCNN, images,
         lambda m, x, method=method: attribution_games.attribution_map(method, m, x, torch.ones(len(x), dtype=torch.long)),
         per_example=None if method == "smoothgrad" else (lambda v: v),
         invalid=(lambda m, x, method=method: attribution_games.attribution_map(method, m, x, torch.full((len(x),), 3)),
                  lambda m, x: attribution_games.attribution_map("lime", m, x, torch.zeros(len(x), dtype=torch.long))))
    for method in attribution_games.GRADIENT_METHODS
]

CASES += [
    Case("games.randomise_layers", sanity_game.randomise_layers, TinyMLP, vectors,
         lambda m, x: sanity_game.randomise_layers(m, ["fc2"], 0).fc2.weight, runs_forward=False,
         invalid=(lambda m, x: sanity_game.randomise_layers(m, ["fc9"], 0),)),
    Case("games.weight_layers", sanity_game.weight_layers, TinyCNN, images,
         lambda m, x: sanity_game.weight_layers(m), runs_forward=False),
]

EXEMPT: dict[Any, str] = {
    TokenAttribution: "a result dataclass (made by AttributionResult.token_scores; takes no model)",
    hf.token_strings: "turns token ids into strings; takes no model (tested in test_hf.py)",
    sanity_game.random_label_twin: "builds a new model",
    roar_game.remove_top_pixels: "edits images; takes no model",
    attribution_games.spearman_rows: "statistics over tensors; takes no model",
    attribution_games.auroc_rows: "statistics over tensors; takes no model",
    attribution_games.sobel_map: "filters images; takes no model",
    tabular.TabularMLP: "a model class",
    tabular.tabular_task: "builds data",
    tabular.trained_tabular_mlp: "builds a new model",
}
