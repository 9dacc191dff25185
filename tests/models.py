"""Tiny deterministic reference models for the tests.

Each model is small enough to compute by hand, so tests can check `capture`/`patch` against a
hand-written forward with injected activations (the slow-reference oracle).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _init(module: nn.Module, seed: int) -> nn.Module:
    gen = seeded(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return module


class TinyMLP(nn.Module):
    """x (batch, 4) → fc1 (8) → ReLU → fc2 (3)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(8, 3)
        _init(self, seed)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def forward_from_hidden(self, h: Tensor) -> Tensor:
        """The rest of the network after ``fc1``'s output: the hand-written oracle for patching."""
        return self.fc2(torch.relu(h))


class TinyCNN(nn.Module):
    """x (batch, 1, 6, 6) → conv (4 ch) → ReLU → mean-pool → linear (3)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 3)
        _init(self, seed)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.act(self.conv(x)).mean(dim=(2, 3)))


class BatchNormCNN(nn.Module):
    """x (batch, 1, 6, 6) → conv (4 ch) → BatchNorm2d → ReLU → mean-pool → linear (3); running stats not at their defaults."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 3)
        _init(self, seed)
        gen = seeded(seed + 1)
        with torch.no_grad():
            self.bn.running_mean.copy_(torch.randn(4, generator=gen))
            self.bn.running_var.copy_(torch.rand(4, generator=gen) + 0.5)
            self.bn.num_batches_tracked.fill_(7)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.act(self.bn(self.conv(x))).mean(dim=(2, 3)))


class SelfAttention(nn.Module):
    """Single-head attention returning ``(output, weights)``: exercises tuple outputs."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: Tensor, *, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :].bool(), -1e9)
        weights = scores.softmax(-1)
        return self.out(weights @ v), weights


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.attn = SelfAttention(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: Tensor, *, mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln(x), mask=mask)[0]
        return x + self.mlp(x)


class TinyTransformer(nn.Module):
    """input_ids (batch, seq) → embed (d=8) → 2 blocks called with a keyword mask → logits (vocab 16)."""

    def __init__(self, seed: int = 0, d: int = 8, vocab: int = 16, n_layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(n_layers))
        self.unembed = nn.Linear(d, vocab)
        _init(self, seed)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, mask=attention_mask)
        return self.unembed(x)


class KeywordModel(nn.Module):
    """Called as ``model(x=..., scale=...)``: exercises dict (keyword) inputs."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        _init(self, seed)

    def forward(self, x: Tensor, scale: float = 1.0) -> Tensor:
        return self.fc(x) * scale


class TwiceMLP(nn.Module):
    """Applies the same ``layer`` twice in one forward: a module called several times."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 4)
        _init(self, seed)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(torch.tanh(self.layer(x)))


class UnusedBranch(nn.Module):
    """Has a submodule the forward never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Linear(4, 2)
        self.unused = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.used(x)


class InplaceReLU(nn.Module):
    """``fc`` followed by an in-place ReLU that overwrites fc's output tensor."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.ReLU(inplace=True)
        _init(self, seed)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.fc(x))


class DictOutput(nn.Module):
    """A submodule returning a dict; the site value is its first entry."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = _DictInner()

    def forward(self, x: Tensor) -> Tensor:
        out = self.inner(x)
        return out["hidden"] + out["extra"]


class PairOutput(nn.Module):
    """``inner`` returns ``(a, b)`` (a tuple) and ``{"a": a, "b": b}`` (a dict); the model uses both elements."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.inner = _PairInner()
        self.keyed = _PairInner(keyed=True)
        _init(self, seed)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.inner(x)
        out = self.keyed(x)
        return a * b + out["a"] - out["b"]


class _PairInner(nn.Module):
    def __init__(self, keyed: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.keyed = keyed

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor] | dict[str, Tensor]:
        h = self.fc(x)
        return {"a": h, "b": h.tanh()} if self.keyed else (h, h.tanh())


class _DictInner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        _init(self, 3)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"hidden": self.fc(x), "extra": torch.ones_like(x)}


def tokens(batch: int = 3, seq: int = 5, seed: int = 0) -> dict[str, Tensor]:
    ids = torch.randint(0, 16, (batch, seq), generator=seeded(seed))
    return {"input_ids": ids, "attention_mask": torch.ones(batch, seq, dtype=torch.long)}


def vectors(batch: int = 5, d: int = 4, seed: int = 0) -> Tensor:
    return torch.randn(batch, d, generator=seeded(seed))


def images(batch: int = 3, seed: int = 0) -> Tensor:
    return torch.randn(batch, 1, 6, 6, generator=seeded(seed))
