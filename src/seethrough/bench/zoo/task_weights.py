"""Two-task networks with known task weights and a decoy of large irrelevant weights (issue #15).

An MLP ``x → Linear → ReLU → Linear → [head A logits | head B logits]`` built, not trained (the only
biases are the heads', which centre each head's logits on the data so the classes are balanced):
task A's labels are the argmax of head A, computed by a sparse *planted block* (hidden units that read
only the task-A inputs and write only to head A), task B's by another block on the task-B inputs.
Every other weight is exactly zero (unless a small cross-talk ``leak`` is asked for) except the *decoy*: "live" units with large incoming weights and
no outgoing weight, and "dead" units (negative weights on the non-negative inputs, so they never
fire) with large weights in and out. Block B and the decoy are larger than block A, so weight
magnitude ranks them above the task-A weights although none of them can change task A's output.
Nothing is trained, so nothing is cached: the same seed gives the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._seeding import generator

__all__ = ["TaskWeights", "two_task_network", "TaskHead"]


class TaskHead(nn.Module):
    """One task's view of a multi-head network: the network's output columns ``start:stop`` (the task's logits)."""

    def __init__(self, net: nn.Module, start: int, stop: int) -> None:
        super().__init__()
        self.net = net
        self.start, self.stop = start, stop

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[:, self.start:self.stop]


@dataclass(frozen=True, eq=False)
class TaskWeights:
    """A two-task network, each task's data and labels, and the answer key.

    ``task_a``/``task_b`` are boolean masks per parameter name of ``net`` (``"0.weight"``,
    ``"2.weight"``, ``"2.bias"``): the weights of each planted block and its head's biases. ``decoy`` marks the large irrelevant weights;
    ``nonzero`` the network's connections (the population scored: zero weights do not exist); ``seed`` the
    seed it was built from (for held-out data drawn like ``inputs``).
    """

    net: nn.Module
    inputs: Tensor
    labels_a: Tensor
    labels_b: Tensor
    n_classes: int
    task_a: dict[str, Tensor]
    task_b: dict[str, Tensor]
    decoy: dict[str, Tensor]
    nonzero: dict[str, Tensor]
    leak: float = 0.0
    seed: int = 0

    def head(self, task: str) -> TaskHead:
        """The network seen through one task's head (``"a"`` or ``"b"``); its parameters are ``net.<name>``."""
        return TaskHead(self.net, 0, self.n_classes) if task == "a" else TaskHead(self.net, self.n_classes,
                                                                                     2 * self.n_classes)


def _sparse(shape: tuple[int, int], density: float, scale: float, gen: torch.Generator) -> Tensor:
    """Gaussian weights of std ``scale`` with a fraction ``density`` kept; every row and column keeps at least one."""
    keep = torch.rand(shape, generator=gen) < density
    keep[torch.arange(shape[0]), torch.randint(0, shape[1], (shape[0],), generator=gen)] = True
    keep[torch.randint(0, shape[0], (shape[1],), generator=gen), torch.arange(shape[1])] = True
    return torch.randn(shape, generator=gen) * scale * keep


def two_task_network(seed: int, *, d_task: int = 8, n_block: int = 8, n_decoy: int = 4, n_classes: int = 3,
                     density: float = 0.6, scale_b: float = 2.0, scale_decoy: float = 4.0,
                     n_samples: int = 256, leak: float = 0.0, n_shared: int = 0) -> TaskWeights:
    """Build the planted two-task network of ``seed`` (see the module docstring) and its data.

    Inputs are uniform in [0, 1) (non-negative, so the dead decoy units never fire). Each block hidden
    unit gets its largest incoming weight made positive, so it fires on some inputs and every block
    weight can matter. ``leak`` > 0 adds small cross-talk weights (std ``leak``) from each task's inputs
    into the other block's units and from each block into the other head: weights outside both blocks
    that still change the outputs a little (sensitivity is high, contribution small). ``n_shared`` > 0
    adds a *shared* block: units reading every input and writing to both heads (their incoming weights
    belong to both tasks; each head's weights from them to that task), drawn after everything else so
    that ``n_shared=0`` gives the same network as before.
    """
    gen = generator(seed, "two_task_network")
    d_in, n_hidden = 2 * d_task, 2 * n_block + 2 * n_decoy + n_shared
    first, second = torch.zeros(n_hidden, d_in), torch.zeros(2 * n_classes, n_hidden)
    a_units, b_units = slice(0, n_block), slice(n_block, 2 * n_block)
    live, dead = slice(2 * n_block, 2 * n_block + n_decoy), slice(2 * n_block + n_decoy, 2 * n_block + 2 * n_decoy)
    shared = slice(2 * n_block + 2 * n_decoy, n_hidden)
    for units, cols, rows, scale in ((a_units, slice(0, d_task), slice(0, n_classes), 1.0),
                                     (b_units, slice(d_task, d_in), slice(n_classes, 2 * n_classes), scale_b)):
        w_in = _sparse((n_block, d_task), density, scale, gen)
        top = w_in.abs().argmax(1)
        w_in[torch.arange(n_block), top] = w_in[torch.arange(n_block), top].abs()
        first[units, cols] = w_in
        second[rows, units] = _sparse((n_classes, n_block), density, scale, gen)
    first[live] = torch.randn(n_decoy, d_in, generator=gen).abs() * scale_decoy
    first[dead] = -torch.randn(n_decoy, d_in, generator=gen).abs() * scale_decoy
    second[:, dead] = torch.randn(2 * n_classes, n_decoy, generator=gen) * scale_decoy
    if leak > 0:
        first[a_units, d_task:] = torch.randn(n_block, d_task, generator=gen) * leak
        first[b_units, :d_task] = torch.randn(n_block, d_task, generator=gen) * leak
        second[n_classes:, a_units] = torch.randn(n_classes, n_block, generator=gen) * leak
        second[:n_classes, b_units] = torch.randn(n_classes, n_block, generator=gen) * leak
    net = nn.Sequential(nn.Linear(d_in, n_hidden, bias=False), nn.ReLU(), nn.Linear(n_hidden, 2 * n_classes))
    inputs = torch.rand(n_samples, d_in, generator=gen)
    if n_shared > 0:
        w_in = _sparse((n_shared, d_in), density, 1.0, gen)
        top = w_in.abs().argmax(1)
        w_in[torch.arange(n_shared), top] = w_in[torch.arange(n_shared), top].abs()
        first[shared] = w_in
        second[:n_classes, shared] = _sparse((n_classes, n_shared), density, 1.0, gen)
        second[n_classes:, shared] = _sparse((n_classes, n_shared), density, 1.0, gen)
    with torch.no_grad():
        net[0].weight.copy_(first)
        net[2].weight.copy_(second)
        # each head's bias centres its logits on the data, so every class is a real share of the labels
        # (without it the non-negative activations give one class nearly every example)
        net[2].bias.copy_(-(torch.relu(inputs @ first.T) @ second.T).mean(0))
        out = net(inputs)
    net.eval()
    masks = {}
    for name, (units, cols, rows) in {"a": (a_units, slice(0, d_task), slice(0, n_classes)),
                                      "b": (b_units, slice(d_task, d_in), slice(n_classes, 2 * n_classes))}.items():
        m1, m2 = torch.zeros_like(first, dtype=torch.bool), torch.zeros_like(second, dtype=torch.bool)
        m1[units, cols] = True
        m2[rows, units] = True
        m1[shared] = True
        m2[rows, shared] = True
        bias = torch.zeros(2 * n_classes, dtype=torch.bool)
        bias[rows] = True
        masks[name] = {"0.weight": m1 & (first != 0), "2.weight": m2 & (second != 0), "2.bias": bias}
    d1, d2 = torch.zeros_like(first, dtype=torch.bool), torch.zeros_like(second, dtype=torch.bool)
    d1[2 * n_block:2 * n_block + 2 * n_decoy] = True
    d2[:, dead] = True
    nonzero = {"0.weight": first != 0, "2.weight": second != 0, "2.bias": net[2].bias.detach() != 0}
    return TaskWeights(net, inputs, out[:, :n_classes].argmax(1), out[:, n_classes:].argmax(1), n_classes,
                       masks["a"], masks["b"], {"0.weight": d1 & nonzero["0.weight"], "2.weight": d2 & nonzero["2.weight"],
                        "2.bias": torch.zeros(2 * n_classes, dtype=torch.bool)},
                       nonzero, leak, seed)
