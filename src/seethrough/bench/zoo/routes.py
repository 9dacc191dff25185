"""Models whose information routes and bases are known: the zoo of the tokens-and-attention games.

*Known route*: a tiny attention-only transformer (`RouteTransformer`) trained on one of two tasks,
the answer read at the last position. ``copy``: copy the token after a marker (one marker per
sequence). ``two_hop``: the answer is the one key token (vocabulary ids below ``n_keys``) somewhere in
the first half; the last layer may only attend to the second half (a planted mask), so the key must
first be gathered into second-half positions by the earlier layer, and raw last-layer attention
points at those intermediates, never at the source.

*Basis change*: a residual MLP (`ResidualNet`) trained on a random teacher's labels, and `rotated_twin`: the
same function, except that after one block the residual stream is rotated by a random orthogonal
matrix, the following blocks work in the rotated basis and a later step rotates it back.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seethrough.core import InputError

from ._seeding import derive_seed, generator, materialise
from .cache import cached

__all__ = ["RouteTransformer", "route_task", "trained_route_transformer", "ResidualNet", "trained_residual_net",
           "rotated_twin", "teacher_task", "ROUTE_TASKS"]

_VERSION = 1
ROUTE_TASKS = ("copy", "two_hop")
_ROUTE = {"seq_len": 10, "vocab": 16, "marker": 15, "n_keys": 4, "d_model": 32, "n_heads": 2, "n_layers": 2,
          "steps": 300, "batch_size": 128, "lr": 3e-3, "n_test": 1000}
_RESIDUAL = {"n_features": 16, "n_classes": 10, "d_model": 32, "d_hidden": 64, "n_blocks": 4, "steps": 600,
             "batch_size": 256, "lr": 3e-3, "rotate_after": 0, "rotate_back_after": 2}


class _RouteAttention(nn.Module):
    """Causal multi-head attention; ``pattern`` (an identity) marks the probabilities; keys before ``first_key`` hidden."""

    def __init__(self, d_model: int, n_heads: int, first_key: int = 0) -> None:
        super().__init__()
        self.n_heads, self.first_key = n_heads, first_key
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.o = nn.Linear(d_model, d_model)
        self.pattern = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        batch, seq, d_model = x.shape
        d_head = d_model // self.n_heads
        q, k, v = (t.view(batch, seq, self.n_heads, d_head).transpose(1, 2) for t in self.qkv(x).chunk(3, -1))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d_head)
        hidden = torch.ones(seq, seq, dtype=torch.bool, device=x.device).triu(1)
        if self.first_key:
            hidden = hidden.clone()
            hidden[:, :self.first_key] = True
            hidden[torch.arange(seq), torch.arange(seq)] = False  # a query always sees itself
        probs = self.pattern(scores.masked_fill(hidden, float("-inf")).softmax(-1))
        return self.o((probs @ v).transpose(1, 2).reshape(batch, seq, d_model))


class _RouteBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, first_key: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d_model)
        self.attn = _RouteAttention(d_model, n_heads, first_key)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.attn(self.ln(x))


class RouteTransformer(nn.Module):
    """Attention-only transformer: ``embed`` + ``pos_embed``, ``blocks.{i}`` (pre-LN attention), ``ln_final``, ``unembed``.

    Args:
        vocab, seq_len, d_model, n_layers, n_heads: sizes.
        last_first_key: in the last block, queries see no key before this position (0: plain causal).
        seed: initialisation seed.
    """

    def __init__(self, vocab: int, seq_len: int, *, d_model: int = 32, n_layers: int = 2, n_heads: int = 2,
                 last_first_key: int = 0, seed: int = 0) -> None:
        super().__init__()
        with torch.device("meta"):
            self.embed = nn.Embedding(vocab, d_model)
            self.pos_embed = nn.Embedding(seq_len, d_model)
            self.blocks = nn.ModuleList(
                _RouteBlock(d_model, n_heads, last_first_key if i == n_layers - 1 else 0) for i in range(n_layers))
            self.ln_final = nn.LayerNorm(d_model)
            self.unembed = nn.Linear(d_model, vocab)
        materialise(self, seed)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits ``(batch, seq, vocab)``."""
        x = self.embed(tokens) + self.pos_embed(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x))


def route_task(task: str, gen: torch.Generator, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(tokens (n, seq_len), labels (n,), source (n,))``: sequences, answers and the answer's source position.

    ``copy``: one marker at a random position ``p`` ≤ seq_len - 3, answer and source at ``p + 1``.
    ``two_hop``: one key token in the first half, answer the key and source its position; the rest
    are non-key, non-marker tokens.

    Example:
        >>> tokens, labels, source = route_task("copy", torch.Generator().manual_seed(0), 4)
        >>> bool((tokens[torch.arange(4), source] == labels).all())
        True
    """
    if task not in ROUTE_TASKS:
        raise InputError(f"task must be one of {ROUTE_TASKS}, got {task!r}.")
    seq, marker, n_keys = _ROUTE["seq_len"], _ROUTE["marker"], _ROUTE["n_keys"]
    rows = torch.arange(n)
    if task == "copy":
        tokens = torch.randint(0, marker, (n, seq), generator=gen)
        p = torch.randint(0, seq - 2, (n,), generator=gen)
        tokens[rows, p] = marker
        source = p + 1
    else:
        tokens = torch.randint(n_keys, marker, (n, seq), generator=gen)
        source = torch.randint(0, seq // 2, (n,), generator=gen)
        tokens[rows, source] = torch.randint(0, n_keys, (n,), generator=gen)
    return tokens, tokens[rows, source].clone(), source


def trained_route_transformer(task: str, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """A `RouteTransformer` trained on ``task`` (cross-entropy at the last position); cached.

    Returns:
        ``(model, meta)``; ``meta``: ``accuracy`` on 1000 fresh sequences, ``task``, ``seq_len``,
        ``read_position``, ``attention_sites`` (one per layer), ``first_key`` of the last layer.
    """
    if task not in ROUTE_TASKS:
        raise InputError(f"task must be one of {ROUTE_TASKS}, got {task!r}.")
    first_key = _ROUTE["seq_len"] // 2 if task == "two_hop" else 0
    config = {"version": _VERSION, "task": task, "seed": seed, "first_key": first_key, **_ROUTE}

    def build() -> nn.Module:
        return RouteTransformer(_ROUTE["vocab"], _ROUTE["seq_len"], d_model=_ROUTE["d_model"],
                                n_layers=_ROUTE["n_layers"], n_heads=_ROUTE["n_heads"], last_first_key=first_key,
                                seed=derive_seed(seed, "init"))

    def train(model: nn.Module) -> dict[str, Any]:
        gen = generator(seed, f"train_{task}")
        optimiser = torch.optim.Adam(model.parameters(), lr=_ROUTE["lr"])
        model.train()
        for _ in range(_ROUTE["steps"]):
            tokens, labels, _ = route_task(task, gen, _ROUTE["batch_size"])
            loss = F.cross_entropy(model(tokens)[:, -1], labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        model.eval()
        tokens, labels, _ = route_task(task, generator(seed, f"test_{task}"), _ROUTE["n_test"])
        with torch.no_grad():
            accuracy = float((model(tokens)[:, -1].argmax(-1) == labels).double().mean())
        return {"accuracy": accuracy, "task": task, "seq_len": _ROUTE["seq_len"],
                "read_position": _ROUTE["seq_len"] - 1, "first_key": first_key,
                "attention_sites": [f"blocks.{i}.attn.pattern" for i in range(_ROUTE["n_layers"])]}

    return cached("route_transformer", config, build, train)


# -- basis change --------------------------------------------------------------------------------


class _ResidualBlock(nn.Module):
    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_hidden)
        self.fc_out = nn.Linear(d_hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc_out(F.gelu(self.fc_in(x)))


class ResidualNet(nn.Module):
    """``embed`` (linear), residual MLP ``blocks.{i}``, ``ln_final``, ``unembed``.

    Optional ``rotate`` and ``rotate_back`` (linear maps without bias) run after blocks
    ``rotate_after`` and ``rotate_back_after`` (`rotated_twin` sets them); otherwise they are absent.
    """

    def __init__(self, n_features: int, n_classes: int, *, d_model: int = 32, d_hidden: int = 64,
                 n_blocks: int = 4, seed: int = 0) -> None:
        super().__init__()
        with torch.device("meta"):
            self.embed = nn.Linear(n_features, d_model)
            self.blocks = nn.ModuleList(_ResidualBlock(d_model, d_hidden) for _ in range(n_blocks))
            self.ln_final = nn.LayerNorm(d_model)
            self.unembed = nn.Linear(d_model, n_classes)
        materialise(self, seed)
        self.rotate: nn.Linear | None = None
        self.rotate_back: nn.Linear | None = None
        self.rotate_after = self.rotate_back_after = -1

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(batch, n_classes)`` for ``(batch, n_features)`` inputs."""
        x = self.embed(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.rotate_after and self.rotate is not None:
                x = self.rotate(x)
            if i == self.rotate_back_after and self.rotate_back is not None:
                x = self.rotate_back(x)
        return self.unembed(self.ln_final(x))


def teacher_task(seed: int, gen: torch.Generator, n: int) -> tuple[Tensor, Tensor]:
    """``(x (n, 16), labels (n,))``: Gaussian inputs labelled by the argmax of a random two-layer teacher of ``seed``.

    Example:
        >>> x, y = teacher_task(0, torch.Generator().manual_seed(1), 5)
        >>> tuple(x.shape), bool((y < 10).all())
        ((5, 16), True)
    """
    teacher = generator(seed, "teacher")
    n_in, n_out = _RESIDUAL["n_features"], _RESIDUAL["n_classes"]
    w1 = torch.randn(64, n_in, generator=teacher) / math.sqrt(n_in)
    w2 = torch.randn(n_out, 64, generator=teacher) / 8.0
    x = torch.randn(n, n_in, generator=gen)
    return x, (torch.tanh(x @ w1.T) @ w2.T).argmax(-1)


def trained_residual_net(seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """A `ResidualNet` trained on `teacher_task` (fresh batches, Adam); cached.

    Returns:
        ``(model, meta)``; ``meta``: held-out ``accuracy`` (2000 fresh inputs), ``sites`` (the embedding
        and every block's output; the last is the final residual).
    """
    config = {"version": _VERSION, "seed": seed, **_RESIDUAL}

    def build() -> nn.Module:
        return ResidualNet(_RESIDUAL["n_features"], _RESIDUAL["n_classes"], d_model=_RESIDUAL["d_model"],
                           d_hidden=_RESIDUAL["d_hidden"], n_blocks=_RESIDUAL["n_blocks"],
                           seed=derive_seed(seed, "init"))

    def train(model: nn.Module) -> dict[str, Any]:
        gen = generator(seed, "train")
        optimiser = torch.optim.Adam(model.parameters(), lr=_RESIDUAL["lr"])
        model.train()
        for _ in range(_RESIDUAL["steps"]):
            x, labels = teacher_task(seed, gen, _RESIDUAL["batch_size"])
            loss = F.cross_entropy(model(x), labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        model.eval()
        x, labels = teacher_task(seed, generator(seed, "test"), 2000)
        with torch.no_grad():
            accuracy = float((model(x).argmax(-1) == labels).double().mean())
        return {"accuracy": accuracy, "sites": ["embed", *[f"blocks.{i}" for i in range(_RESIDUAL["n_blocks"])]]}

    return cached("residual_net", config, build, train)


def rotated_twin(model: ResidualNet, seed: int) -> tuple[ResidualNet, list[str]]:
    """A copy of ``model`` computing the same function with the stream rotated between two blocks.

    After block ``rotate_after`` the stream is multiplied by a random orthogonal ``Q`` (from ``seed``);
    the blocks up to ``rotate_back_after`` read ``Qᵀ`` and write ``Q`` (their weights conjugated), and
    after block ``rotate_back_after`` the stream is multiplied by ``Qᵀ``.

    Returns:
        ``(twin, rotated_sites)``: the twin (eval mode, ``model`` untouched) and the sites whose values
        are in the rotated basis (``blocks.{rotate_after + 1}`` … ``blocks.{rotate_back_after}``: the
        outputs of those blocks, read before the rotation back).
    """
    if not isinstance(model, ResidualNet):
        raise InputError(f"rotated_twin needs a ResidualNet, got {type(model).__name__}.")
    a, b = _RESIDUAL["rotate_after"], _RESIDUAL["rotate_back_after"]
    d = model.ln_final.normalized_shape[0]
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator(seed, "rotation"), dtype=torch.float64))
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for i in range(a + 1, b + 1):
            block = twin.blocks[i]
            assert isinstance(block, _ResidualBlock)
            block.fc_in.weight.copy_((block.fc_in.weight.double() @ q.T).float())
            block.fc_out.weight.copy_((q @ block.fc_out.weight.double()).float())
            block.fc_out.bias.copy_((q @ block.fc_out.bias.double()).float())
        # skip_init: no draw from the global RNG (the weights are set right below)
        twin.rotate = torch.nn.utils.skip_init(nn.Linear, d, d, bias=False)
        twin.rotate_back = torch.nn.utils.skip_init(nn.Linear, d, d, bias=False)
        twin.rotate.weight.copy_(q.float())
        twin.rotate_back.weight.copy_(q.T.float())
    twin.rotate.requires_grad_(False)
    twin.rotate_back.requires_grad_(False)
    twin.rotate_after, twin.rotate_back_after = a, b
    return twin.eval(), [f"blocks.{i}" for i in range(a + 1, b + 1)]
