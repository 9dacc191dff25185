"""Zoo: compiled residual networks with a planted circuit and active distractors (hand-set weights).

The input is 6 bits. ``embed`` writes them into a residual stream; blocks (one hidden layer of two
ReLU units each) read the stream and add one new feature to it; ``head`` reads the stream. The
circuit computes ``(x0 AND x1) XOR x2``: an ``and`` block reads x0, x1; a ``xor`` block reads the
AND feature and x2; ``head`` reads the XOR feature. Distractor blocks compute large functions of
other bits and of the AND feature (so they are active, often more active than the circuit) but no
block or head reads what they write. Each seed draws the block order (``and`` before ``xor``), the
number of distractors (2 or 3), their magnitudes and a random rotation of the stream, so no
stream coordinate names a feature. ``meta["edges"]`` is the answer key: the planted (writer,
reader) edges; every other edge carries exactly nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ._seeding import generator

__all__ = ["CompiledCircuit", "compiled_circuit", "circuit_bits", "circuit_pairs"]

N_BITS = 6


class CompiledCircuit(nn.Module):
    """``embed`` → ``blocks.0 ... blocks.{n-1}`` (each ``h = h + block(h)``) → ``head`` (one logit)."""

    def __init__(self, n_blocks: int, d_stream: int) -> None:
        super().__init__()
        self.embed = nn.Linear(N_BITS, d_stream)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(d_stream, 2), nn.ReLU(), nn.Linear(2, d_stream))
                                    for _ in range(n_blocks))
        self.head = nn.Linear(d_stream, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


def circuit_bits(n: int, seed: int, stream: str) -> tuple[Tensor, Tensor]:
    """``n`` random 6-bit inputs and their label ``(x0 AND x1) XOR x2``."""
    x = torch.randint(0, 2, (n, N_BITS), generator=generator(seed, stream)).float()
    return x, ((x[:, 0] * x[:, 1]) != x[:, 2]).long()


def circuit_pairs(n: int, seed: int, *, saturated: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Clean inputs, corrupted inputs and the clean labels: independent random bits, or saturated pairs.

    ``saturated``: every clean input has ``x0 AND x1 = 0`` and every corrupted one ``x0 = x1 = 1``,
    so the AND unit is off on the whole clean batch (its gradient there is zero: attribution
    patching at the clean run cannot see the AND edge; integrated gradients along the path can).
    """
    clean, _ = circuit_bits(n, seed, "clean")
    corrupted, _ = circuit_bits(n, seed, "corrupted")
    if saturated:
        clean[:, 1] = torch.where(clean[:, 0] * clean[:, 1] > 0, 0.0, clean[:, 1])
        corrupted[:, :2] = 1.0
    return clean, corrupted, ((clean[:, 0] * clean[:, 1]) != clean[:, 2]).long()


def compiled_circuit(seed: int) -> tuple[CompiledCircuit, dict[str, Any]]:
    """The compiled network of ``seed`` and its answer key (see the module docstring).

    Returns:
        ``(model, meta)`` with ``meta["writers"]``, ``meta["readers"]`` (paths in run order),
        ``meta["edges"]`` (the planted edges) and ``meta["nodes"]`` (the planted nodes).
    """
    gen = generator(seed, "compiled-circuit")
    n_distractors = 2 + int(torch.randint(0, 2, (), generator=gen))
    roles = ["and", "xor"] + [f"distractor{i}" for i in range(n_distractors)]
    while True:  # a random order with the AND block before the XOR block
        order = [roles[i] for i in torch.randperm(len(roles), generator=gen).tolist()]
        if order.index("and") < order.index("xor"):
            break
    n_blocks = len(order)
    d = N_BITS + n_blocks  # one stream direction per bit and per block
    feature = {role: N_BITS + i for i, role in enumerate(order)}
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    model = CompiledCircuit(n_blocks, d)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        embed = torch.zeros(d, N_BITS, dtype=torch.float64)
        embed[:N_BITS, :N_BITS] = torch.eye(N_BITS, dtype=torch.float64)
        model.embed.weight.copy_(q @ embed)
        for i, role in enumerate(order):
            read = torch.zeros(2, d, dtype=torch.float64)
            bias = torch.zeros(2, dtype=torch.float64)
            write = torch.zeros(d, 2, dtype=torch.float64)
            if role == "and":  # relu(2 x0 + 2 x1 - 3): 1 when both bits are on, clear of the kink otherwise
                read[0, 0] = read[0, 1] = 2.0
                bias[0] = -3.0
                write[feature[role], 0] = 1.0
            elif role == "xor":  # relu(a - x2) + relu(x2 - a)
                read[0, feature["and"]], read[0, 2] = 1.0, -1.0
                read[1, feature["and"]], read[1, 2] = -1.0, 1.0
                write[feature[role], :] = 1.0
            else:  # large, active, and read by nobody: bits 3..5 and the AND feature
                scale = 4.0 + 6.0 * float(torch.rand((), generator=gen))
                bits = torch.randperm(3, generator=gen)[:2] + 3
                read[0, bits[0]], read[0, bits[1]] = 1.0, 1.0
                read[1, feature["and"]], read[1, bits[0]] = 1.0, 1.0
                write[feature[role], :] = scale
            block = model.blocks[i]
            block[0].weight.copy_(read @ q.T)
            block[0].bias.copy_(bias)
            block[2].weight.copy_(q @ write)
        head = torch.zeros(1, d, dtype=torch.float64)
        head[0, feature["xor"]] = 4.0
        model.head.weight.copy_(head @ q.T)
        model.head.bias.fill_(-2.0)
    path = {role: f"blocks.{i}" for i, role in enumerate(order)}
    writers = ["embed"] + [f"blocks.{i}" for i in range(n_blocks)]
    readers = [f"blocks.{i}" for i in range(n_blocks)] + ["head"]
    edges = [("embed", path["and"]), ("embed", path["xor"]), (path["and"], path["xor"]), (path["xor"], "head")]
    return model.eval(), {"writers": writers, "readers": readers, "edges": edges,
                          "nodes": ["embed", path["and"], path["xor"], "head"], "roles": order}
