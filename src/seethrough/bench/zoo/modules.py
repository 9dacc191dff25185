"""Zoo: MLPs with planted modules (block-diagonal training on a decomposable task), and dense controls.

The task puts ``n_modules`` 8×8 digits side by side and asks for one label each (``n_modules``
groups of 10 logits). A modular network is trained with block-diagonal masks, so module ``m``'s
hidden units read only digit ``m`` (or module ``m`` of the layer before) and only module ``m``'s
logits read them; afterwards every cross-module weight is set to a random value of at most
``eps`` times the mean in-module magnitude (signs random), and the hidden units of each layer are
shuffled. The dense control is the same architecture trained without masks. ``meta["modules"]``
is the answer key: the planted module of every unit of every ``nn.Linear`` (``meta["inputs"]``
for the input features). `modular_trained_mlp` starts from the dense control and trains it on with
`seethrough.subnetworks.train_modular` (a connection cost): modularity enforced from a dense start,
with no answer key (whether it specialised is measured, not planted).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ._seeding import generator, materialise
from .cache import cached
from .data import digits16

__all__ = ["modular_mlp", "modular_trained_mlp", "side_by_side_digits", "digits_loss", "digit_correct"]

DIGIT = 64  # features of one 8x8 digit


def side_by_side_digits(split: str, n_modules: int, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` examples of ``n_modules`` random digits of ``split`` side by side: ``(n, 64 m)`` and labels ``(n, m)``."""
    x, y = digits16(split)  # type: ignore[arg-type]  # "train" | "test"
    small = x[:, 0, ::2, ::2].reshape(len(x), DIGIT)
    picks = torch.randint(0, len(x), (n, n_modules), generator=generator(seed, f"digits-{split}"))
    return small[picks].reshape(n, n_modules * DIGIT), y[picks]


def _masks(n_modules: int, sizes: list[int]) -> list[Tensor]:
    """Block-diagonal masks, one per layer: unit i of a layer of size s belongs to module i * m // s."""
    out = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        rows = torch.arange(n_out) * n_modules // n_out
        cols = torch.arange(n_in) * n_modules // n_in
        out.append((rows[:, None] == cols[None, :]).float())
    return out


def _build(n_modules: int, hidden: int, n_layers: int, seed: int) -> nn.Sequential:
    sizes = [n_modules * DIGIT] + [n_modules * hidden] * n_layers + [n_modules * 10]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b, device="meta"))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return materialise(nn.Sequential(*layers), seed)


def _train(model: nn.Sequential, n_modules: int, hidden: int, n_layers: int, dense: bool, eps: float, steps: int,
           seed: int) -> dict[str, Any]:
    linears = [m for m in model if isinstance(m, nn.Linear)]
    sizes = [linears[0].in_features] + [m.out_features for m in linears]
    masks = _masks(n_modules, sizes)
    x, y = side_by_side_digits("train", n_modules, 4096, seed)
    gen = generator(seed, "batches")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        if not dense:
            for lin, mask in zip(linears, masks, strict=True):
                lin.weight.mul_(mask)
    for _ in range(steps):
        rows = torch.randint(0, len(x), (128,), generator=gen)
        logits = model(x[rows]).view(-1, n_modules, 10)
        loss = nn.functional.cross_entropy(logits.reshape(-1, 10), y[rows].reshape(-1))
        opt.zero_grad()
        loss.backward()
        if not dense:
            for lin, mask in zip(linears, masks, strict=True):
                lin.weight.grad.mul_(mask)  # type: ignore[union-attr]  # set by backward
        opt.step()
    modules = [(torch.arange(s) * n_modules // s) for s in sizes]
    shuffle = generator(seed, "shuffle")
    with torch.no_grad():
        if not dense:
            for lin, mask in zip(linears, masks, strict=True):
                typical = float(lin.weight.abs()[mask > 0].mean())
                noise = (torch.rand(lin.weight.shape, generator=shuffle) * 2 - 1) * eps * typical
                lin.weight.copy_(torch.where(mask > 0, lin.weight, noise))
        for i in range(1, len(sizes) - 1):  # shuffle the hidden units of layer i - 1 (rows) and their readers (cols)
            perm = torch.randperm(sizes[i], generator=shuffle)
            linears[i - 1].weight.copy_(linears[i - 1].weight[perm])
            linears[i - 1].bias.copy_(linears[i - 1].bias[perm])
            linears[i].weight.copy_(linears[i].weight[:, perm])
            modules[i] = modules[i][perm]
        xt, yt = side_by_side_digits("test", n_modules, 1000, seed)
        accuracy = float((model(xt).view(-1, n_modules, 10).argmax(-1) == yt).float().mean())
    paths = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return {"modules": {p: modules[i + 1].tolist() for i, p in enumerate(paths)}, "inputs": modules[0].tolist(),
            "accuracy": accuracy}


def modular_mlp(seed: int, *, n_modules: int = 2, hidden: int = 32, n_layers: int = 2, dense: bool = False,
                eps: float = 0.1, steps: int = 600) -> tuple[nn.Sequential, dict[str, Any]]:
    """A side-by-side-digits MLP with ``n_modules`` planted modules (or a dense control), cached by config.

    Returns:
        ``(model, meta)``: ``meta["modules"]`` maps each ``nn.Linear`` path to the planted module
        of each output unit (after the shuffle), ``meta["inputs"]`` the module of each input
        feature, ``meta["accuracy"]`` the per-digit test accuracy.
    """
    config = {"seed": seed, "n_modules": n_modules, "hidden": hidden, "n_layers": n_layers, "dense": dense,
              "eps": eps, "steps": steps, "version": 1}
    return cached("modular_mlp", config, lambda: _build(n_modules, hidden, n_layers, seed),
                  lambda m: _train(m, n_modules, hidden, n_layers, dense, eps, steps, seed))


def digits_loss(output: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of each digit's 10 logits against its label, averaged (labels ``(n, n_modules)``)."""
    n_modules = labels.shape[1]
    return nn.functional.cross_entropy(output.view(-1, n_modules, 10).reshape(-1, 10), labels.reshape(-1))


def digit_correct(labels: Tensor, digit: int) -> Any:
    """A per-row metric: 1.0 where digit ``digit``'s logits pick its label (any multiple of the rows)."""
    n, n_modules = labels.shape

    def metric(output: Tensor) -> Tensor:
        picked = output.view(-1, n_modules, 10)[:, digit].argmax(-1)
        return (picked == labels[:, digit].repeat(len(picked) // n)).double()
    return metric


def modular_trained_mlp(seed: int, *, strength: float = 0.02, steps: int = 600,
                        hidden: int = 32) -> tuple[nn.Sequential, dict[str, Any]]:
    """The 2-digit dense control trained on with a connection cost (`train_modular`), cached by config.

    Returns:
        ``(model, meta)``: ``meta["accuracy"]`` the per-digit test accuracy after training,
        ``meta["dense_accuracy"]`` before, and the clusterability z-scores before and after.
    """
    from ...subnetworks import train_modular

    config = {"seed": seed, "strength": strength, "steps": steps, "hidden": hidden, "version": 1}

    def train(model: nn.Sequential) -> dict[str, Any]:
        dense, meta = modular_mlp(seed, n_modules=2, hidden=hidden, dense=True)
        x, y = side_by_side_digits("train", 2, 4096, seed)
        result = train_modular(dense, x, y, strength=strength, n_steps=steps, loss=digits_loss, n_shuffles=2,
                               seed=seed)
        model.load_state_dict(result.model.state_dict())
        xt, yt = side_by_side_digits("test", 2, 1000, seed)
        with torch.no_grad():
            accuracy = float((model(xt).view(-1, 2, 10).argmax(-1) == yt).float().mean())
        return {"accuracy": accuracy, "dense_accuracy": meta["accuracy"], "cost_before": result.cost_before,
                "cost_after": result.cost_after}

    return cached("modular_trained_mlp", config, lambda: _build(2, hidden, 2, seed), train)
