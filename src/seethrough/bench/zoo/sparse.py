"""Zoo: the same digits MLP trained dense, with L1, with hard-concrete L0 and weight-sparse (top-k), cached by config.

The task is scikit-learn's 8×8 digits as 64 features in [0, 1] (`digit_vectors`; 1347 train and
450 test examples, `digits16`'s fixed split). Every model is a 64 → ``hidden`` → ``hidden`` → 10
ReLU MLP with the same initialisation for a seed, trained by
`seethrough.subnetworks.train_with_sparsity` (Adam, cross-entropy); ``penalty=0`` with
``method="l1"`` is the dense model. ``meta`` records the test accuracy and the density per layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ...subnetworks.sparsity import sparsity_report, train_with_sparsity
from ._seeding import materialise
from .cache import cached
from .data import digits16

__all__ = ["digit_vectors", "sparse_mlp"]


def digit_vectors(split: str) -> tuple[Tensor, Tensor]:
    """The 8×8 digits of ``split`` (``"train"`` or ``"test"``) as ``(n, 64)`` features in [0, 1] and labels."""
    x, y = digits16(split)  # type: ignore[arg-type]  # "train" | "test", checked by digits16
    return x[:, 0, ::2, ::2].reshape(len(x), 64).contiguous(), y


def _build(hidden: int, seed: int) -> nn.Sequential:
    return materialise(nn.Sequential(nn.Linear(64, hidden, device="meta"), nn.ReLU(),
                                     nn.Linear(hidden, hidden, device="meta"), nn.ReLU(),
                                     nn.Linear(hidden, 10, device="meta")), seed)


def _train(model: nn.Sequential, config: dict[str, Any]) -> dict[str, Any]:
    x, y = digit_vectors("train")
    trained = train_with_sparsity(model, x, y, method=config["method"], penalty=config["penalty"],
                                  density=config["density"], n_steps=config["n_steps"], lr=config["lr"],
                                  seed=config["seed"])
    model.load_state_dict(trained.state_dict())
    model.eval()
    xt, yt = digit_vectors("test")
    with torch.no_grad():
        accuracy = float((model(xt).argmax(1) == yt).float().mean())
    report = sparsity_report(model)
    return {"accuracy": accuracy, "density": list(report.density), "nonzero": report.nonzero}


def sparse_mlp(seed: int, *, method: str = "l1", penalty: float = 0.0, density: float = 1.0, hidden: int = 64,
               n_steps: int = 3000, lr: float = 3e-3) -> tuple[nn.Sequential, dict[str, Any]]:
    """A digits MLP trained with ``method`` (`train_with_sparsity`), cached by config.

    Returns:
        ``(model, meta)``: ``meta["accuracy"]`` the test accuracy, ``meta["density"]`` the fraction of
        non-zero weights per layer, ``meta["nonzero"]`` their number.
    """
    config = {"seed": seed, "method": method, "penalty": penalty, "density": density, "hidden": hidden,
              "n_steps": n_steps, "lr": lr, "version": 1}
    return cached("sparse_mlp", config, lambda: _build(hidden, seed), lambda m: _train(m, config))
