"""A network with planted irrelevant weights, for pruning scores (issue #15, frivolous weights).

An MLP ``x → Linear → ReLU → Linear → logits`` built, not trained. Its inputs are signal features
and pure-noise features. A sparse *teacher block* of hidden units reads only the signal and defines
the labels (the argmax of its logits; the head's bias centres them so the classes are balanced).
The planted irrelevant weights are all non-zero and large: *idle* units read every input (noise
included) with large weights but have no outgoing weight, and *dead* units (negative weights on the
non-negative inputs: they never fire) have large weights in and out. Removing any of them changes no
output; every other weight is zero (not a connection). Nothing is trained, so nothing is cached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._seeding import generator

__all__ = ["PlantedIrrelevance", "planted_irrelevance"]


@dataclass(frozen=True, eq=False)
class PlantedIrrelevance:
    """The network, its inputs and labels, and the key: ``irrelevant`` and ``nonzero`` masks per parameter name."""

    net: nn.Module
    inputs: Tensor
    labels: Tensor
    irrelevant: dict[str, Tensor]
    nonzero: dict[str, Tensor]


def planted_irrelevance(seed: int, *, d_signal: int = 8, d_noise: int = 8, n_teacher: int = 16, n_idle: int = 8,
                        n_dead: int = 4, n_classes: int = 3, density: float = 0.6, scale_irrelevant: float = 3.0,
                        n_samples: int = 512) -> PlantedIrrelevance:
    """Build the planted network of ``seed`` (see the module docstring); inputs are uniform in [0, 1)."""
    gen = generator(seed, "planted_irrelevance")
    d_in, n_hidden = d_signal + d_noise, n_teacher + n_idle + n_dead
    first, second = torch.zeros(n_hidden, d_in), torch.zeros(n_classes, n_hidden)
    keep = torch.rand(n_teacher, d_signal, generator=gen) < density
    keep[torch.arange(n_teacher), torch.randint(0, d_signal, (n_teacher,), generator=gen)] = True
    w_in = torch.randn(n_teacher, d_signal, generator=gen) * keep
    top = w_in.abs().argmax(1)
    w_in[torch.arange(n_teacher), top] = w_in[torch.arange(n_teacher), top].abs()  # every teacher unit fires
    first[:n_teacher, :d_signal] = w_in
    keep_out = torch.rand(n_classes, n_teacher, generator=gen) < density
    keep_out[torch.randint(0, n_classes, (n_teacher,), generator=gen), torch.arange(n_teacher)] = True
    second[:, :n_teacher] = torch.randn(n_classes, n_teacher, generator=gen) * keep_out
    idle, dead = slice(n_teacher, n_teacher + n_idle), slice(n_teacher + n_idle, n_hidden)
    first[idle] = torch.randn(n_idle, d_in, generator=gen) * scale_irrelevant
    first[dead] = -torch.randn(n_dead, d_in, generator=gen).abs() * scale_irrelevant
    second[:, dead] = torch.randn(n_classes, n_dead, generator=gen) * scale_irrelevant
    inputs = torch.rand(n_samples, d_in, generator=gen)
    net = nn.Sequential(nn.Linear(d_in, n_hidden, bias=False), nn.ReLU(), nn.Linear(n_hidden, n_classes))
    with torch.no_grad():
        net[0].weight.copy_(first)
        net[2].weight.copy_(second)
        net[2].bias.copy_(-(torch.relu(inputs @ first.T) @ second.T).mean(0))
        labels = net(inputs).argmax(1)
    net.eval()
    nonzero = {n: p.detach() != 0 for n, p in net.named_parameters()}
    m1, m2 = torch.zeros_like(first, dtype=torch.bool), torch.zeros_like(second, dtype=torch.bool)
    m1[n_teacher:] = True
    m2[:, dead] = True
    irrelevant = {"0.weight": m1 & nonzero["0.weight"], "2.weight": m2 & nonzero["2.weight"],
                  "2.bias": torch.zeros(n_classes, dtype=torch.bool)}
    return PlantedIrrelevance(net, inputs, labels, irrelevant, nonzero)
