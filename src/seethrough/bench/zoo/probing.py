"""A token model whose task needs a hidden category, with planted properties decodable but unused.

Each of ``vocab`` tokens has a hidden binary category (the used property) and ``n_unused`` planted
binary properties. A sequence's label is whether most of its tokens are of category 1, so a model
that solves the task must represent the category. The embedding's last ``n_unused`` dimensions
are fixed to the planted properties (±1) and the layer that reads the embedding has those input
columns masked to zero (`MaskedLinear`): the unused properties are exactly linearly decodable at
``embed`` and provably never used (ablating them leaves the output bit-identical; the metadata
records the measured change). The answer key for the *decodable but unused* probing game.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int64
from torch import Tensor, nn

from seethrough.core import InputError

from ._seeding import derive_seed, generator, materialise
from .cache import cached
from .classifiers import MaskedLinear

__all__ = ["CategoryModel", "token_properties", "category_task", "trained_category_model"]

_VERSION = 1
_RECIPE = {"steps": 300, "batch_size": 128, "lr": 1e-2, "n_test": 1000}


class CategoryModel(nn.Module):
    """``embed`` (learned dims + planted dims) → per-position ``mlp`` (planted inputs masked) → mean → ``head``."""

    def __init__(self, vocab: int, d_learned: int, n_unused: int, d_hidden: int, *, seed: int = 0) -> None:
        super().__init__()
        self.d_learned = d_learned
        with torch.device("meta"):
            self.embed = nn.Embedding(vocab, d_learned + n_unused)
            self.mlp = nn.Sequential(MaskedLinear(d_learned + n_unused, d_hidden), nn.ReLU())
            self.head = nn.Linear(d_hidden, 2)
        materialise(self, seed)
        with torch.no_grad():
            self.mlp[0].mask[:, d_learned:] = 0.0

    def forward(self, tokens: Int64[Tensor, "batch seq"]) -> Float[Tensor, "batch 2"]:
        """Two logits per sequence (category-1 tokens in the majority or not)."""
        return self.head(self.mlp(self.embed(tokens)).mean(1))


def token_properties(seed: int, vocab: int, n_unused: int) -> tuple[Tensor, Tensor]:
    """``(category (vocab,), unused (n_unused, vocab))``: balanced random binary properties per token."""
    gen = generator(seed, "properties")
    half = torch.arange(vocab) % 2
    category = half[torch.randperm(vocab, generator=gen)]
    unused = torch.stack([half[torch.randperm(vocab, generator=gen)] for _ in range(n_unused)])
    return category, unused


def category_task(gen: torch.Generator, n: int, seq_len: int, category: Tensor) -> tuple[Tensor, Tensor]:
    """``n`` random sequences (odd ``seq_len``: no ties) and their labels (category 1 in the majority)."""
    if seq_len % 2 == 0:
        raise InputError(f"seq_len must be odd so that the majority is defined, got {seq_len}.")
    tokens = torch.randint(0, len(category), (n, seq_len), generator=gen)
    return tokens, (category[tokens].sum(1) * 2 > seq_len).long()


def trained_category_model(seed: int, *, vocab: int = 64, seq_len: int = 7, d_learned: int = 6, n_unused: int = 4,
                           d_hidden: int = 16) -> tuple[nn.Module, dict[str, Any]]:
    """A `CategoryModel` trained on the majority-category task; cached.

    Returns:
        ``(model, meta)`` with ``accuracy`` (2000 fresh sequences), ``category`` and ``unused``
        (the properties of every token), ``ablation_change`` (max |Δ logit| when the planted
        dimensions are zeroed: 0 by construction), ``site`` ("embed") and ``seq_len``.
    """
    config = {"version": _VERSION, "seed": seed, "vocab": vocab, "seq_len": seq_len, "d_learned": d_learned,
              "n_unused": n_unused, "d_hidden": d_hidden, **_RECIPE}
    category, unused = token_properties(seed, vocab, n_unused)

    def build() -> nn.Module:
        model = CategoryModel(vocab, d_learned, n_unused, d_hidden, seed=derive_seed(seed, "init"))
        with torch.no_grad():
            model.embed.weight[:, d_learned:] = (unused.T * 2 - 1).float()
        return model

    def train(model: nn.Module) -> dict[str, Any]:
        gen = generator(seed, "train")
        optimiser = torch.optim.Adam(model.parameters(), lr=_RECIPE["lr"])
        model.train()
        for _ in range(_RECIPE["steps"]):
            tokens, labels = category_task(gen, _RECIPE["batch_size"], seq_len, category)
            loss = F.cross_entropy(model(tokens), labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            model.embed.weight.grad[:, d_learned:] = 0.0  # the planted dimensions stay the planted properties
            optimiser.step()
            with torch.no_grad():  # Adam's momentum is zero there too, but keep them exact
                model.embed.weight[:, d_learned:] = (unused.T * 2 - 1).float()
        optimiser.zero_grad(set_to_none=True)
        model.eval()
        tokens, labels = category_task(generator(seed, "test"), _RECIPE["n_test"], seq_len, category)
        with torch.no_grad():
            accuracy = float((model(tokens).argmax(-1) == labels).double().mean())
            ablated = model.head(model.mlp(torch.cat([model.embed(tokens)[..., :d_learned],
                                                      torch.zeros(*tokens.shape, n_unused)], -1)).mean(1))
            change = float((ablated - model(tokens)).abs().max())
        return {"accuracy": accuracy, "category": category.tolist(), "unused": unused.tolist(),
                "ablation_change": change, "site": "embed", "seq_len": seq_len}

    return cached("category_model", config, build, train)
