"""A tiny transformer with hand-written attention and a task whose circuit is known.

In the first-token task the answer is the token at position 0 and the prediction is read at
the last position. Under a causal mask nothing but attention moves information between
positions, so a model that solves it must route position 0 to the last position through some
attention head: the known circuit for the attention, patching and circuit-discovery games.
Heads can be read and patched one by one: ``blocks.{i}.attn.pattern`` outputs the attention
probabilities ``(batch, n_heads, seq, seq)`` and the input of ``blocks.{i}.attn.o`` holds the
heads' outputs side by side (head h is units ``h*d_head … (h+1)*d_head - 1``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int64
from torch import Tensor, nn

from seethrough.core import InputError

from ._seeding import derive_seed, generator, materialise
from .cache import cached

__all__ = ["Attention", "TransformerBlock", "TinyTransformer", "first_token_task", "trained_first_token_transformer"]

_VERSION = 1  # bump when training changes, so old cache entries are not reused
_RECIPE = {"steps": 150, "batch_size": 128, "lr": 3e-3, "n_test": 2000}  # 75 steps already reach 1.0


class Attention(nn.Module):
    """Causal multi-head self-attention with separate ``q``, ``k``, ``v``, ``o`` projections.

    ``pattern`` (an identity) marks the attention probabilities ``(batch, n_heads, seq, seq)``
    as a site.
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise InputError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads}).")
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)
        self.pattern = nn.Identity()

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        """The attention output, projected back by ``o``."""
        batch, seq, d_model = x.shape
        d_head = d_model // self.n_heads

        def heads(t: Tensor) -> Tensor:
            return t.view(batch, seq, self.n_heads, d_head).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d_head)
        future = torch.ones(seq, seq, dtype=torch.bool, device=x.device).triu(1)
        probs = self.pattern(scores.masked_fill(future, float("-inf")).softmax(-1))
        return self.o((probs @ v).transpose(1, 2).reshape(batch, seq, d_model))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))`` (MLP 4× wide, GELU)."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        """One residual attention + MLP step."""
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyTransformer(nn.Module):
    """Token + position embeddings, ``blocks.0 … blocks.{n_layers-1}``, ``ln_final``, ``unembed``.

    Args:
        vocab: number of tokens (also the number of output logits).
        seq_len: the longest sequence (positions embedded).
        d_model, n_layers, n_heads: sizes.
        seed: initialisation seed (the global RNG is not used).
    """

    def __init__(self, vocab: int, seq_len: int, *, d_model: int = 32, n_layers: int = 2, n_heads: int = 2,
                 seed: int = 0) -> None:
        super().__init__()
        with torch.device("meta"):  # no global-RNG init; `materialise` fills the weights from `seed`
            self.embed = nn.Embedding(vocab, d_model)
            self.pos_embed = nn.Embedding(seq_len, d_model)
            self.blocks = nn.ModuleList(TransformerBlock(d_model, n_heads) for _ in range(n_layers))
            self.ln_final = nn.LayerNorm(d_model)
            self.unembed = nn.Linear(d_model, vocab)
        materialise(self, seed)

    def forward(self, tokens: Int64[Tensor, "batch seq"]) -> Float[Tensor, "batch seq vocab"]:
        """Logits at every position."""
        if tokens.shape[1] > self.pos_embed.num_embeddings:
            raise InputError(f"sequences of length {tokens.shape[1]} exceed seq_len={self.pos_embed.num_embeddings}.")
        x = self.embed(tokens) + self.pos_embed(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x))


def _task(gen: torch.Generator, n: int, seq_len: int, vocab: int) -> tuple[Tensor, Tensor]:
    tokens = torch.randint(0, vocab, (n, seq_len), generator=gen)
    return tokens, tokens[:, 0].clone()


def first_token_task(
    seed: int, n: int, seq_len: int = 8, vocab: int = 10
) -> tuple[Int64[Tensor, "batch seq"], Int64[Tensor, " batch"]]:
    """``n`` uniformly random token sequences and their labels, the token at position 0.

    The prediction is read at the last position.

    Raises:
        InputError: ``n`` < 1, ``seq_len`` < 2 or ``vocab`` < 2.

    Example:
        >>> tokens, labels = first_token_task(0, 4)
        >>> tuple(tokens.shape), bool((labels == tokens[:, 0]).all())
        ((4, 8), True)
    """
    if n < 1 or seq_len < 2 or vocab < 2:
        raise InputError(f"need n ≥ 1, seq_len ≥ 2 and vocab ≥ 2; got {n}, {seq_len}, {vocab}.")
    return _task(generator(seed, "first_token"), n, seq_len, vocab)


def trained_first_token_transformer(
    seed: int, *, n_layers: int = 2, n_heads: int = 2, d_model: int = 32
) -> tuple[nn.Module, dict[str, Any]]:
    """A `TinyTransformer` trained on the first-token task (``seq_len`` 8, ``vocab`` 10); cached.

    Adam on fresh seeded batches, cross-entropy at the last position only.

    Args:
        seed: initialisation and data seed.
        n_layers, n_heads, d_model: the model's sizes.

    Returns:
        ``(model, meta)`` with ``meta`` keys ``accuracy`` (last-position accuracy on 2000 fresh
        sequences; ≥ 0.95 with the defaults), ``task`` (``name``, ``seq_len``, ``vocab``,
        ``source_position`` 0, ``read_position`` ``seq_len - 1``) and ``config``.

    Raises:
        InputError: ``d_model`` not a multiple of ``n_heads``, or sizes below 1.
    """
    if n_layers < 1 or n_heads < 1 or d_model < 1 or d_model % n_heads:
        raise InputError(f"need n_layers, n_heads ≥ 1 and d_model a multiple of n_heads; got {n_layers}, "
                         f"{n_heads}, {d_model}.")
    task = {"name": "first_token", "seq_len": 8, "vocab": 10, "source_position": 0, "read_position": 7}
    config = {"version": _VERSION, "seed": seed, "n_layers": n_layers, "n_heads": n_heads, "d_model": d_model,
              "task": task, **_RECIPE}

    def build() -> nn.Module:
        return TinyTransformer(task["vocab"], task["seq_len"], d_model=d_model, n_layers=n_layers,
                               n_heads=n_heads, seed=derive_seed(seed, "init"))

    def train(model: nn.Module) -> dict[str, Any]:
        gen = generator(seed, "train")
        optimiser = torch.optim.Adam(model.parameters(), lr=_RECIPE["lr"])
        model.train()
        for _ in range(_RECIPE["steps"]):
            tokens, labels = _task(gen, _RECIPE["batch_size"], task["seq_len"], task["vocab"])
            loss = F.cross_entropy(model(tokens)[:, -1], labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        model.eval()
        tokens, labels = _task(generator(seed, "test"), _RECIPE["n_test"], task["seq_len"], task["vocab"])
        with torch.no_grad():
            accuracy = float((model(tokens)[:, -1].argmax(-1) == labels).double().mean())
        return {"accuracy": accuracy, "task": task}

    return cached("first_token_transformer", config, build, train)
