"""Sparsity: train a network whose weights are mostly exactly zero, and report how sparse each layer is.

Subnetworks / sparsity in the survey's taxonomy (§4.1). `train_with_sparsity` trains a copy of a
classifier with one of three regularisers on the weight matrices of its ``nn.Linear`` and
``nn.Conv*d`` layers: L1 (proximal soft-thresholding after each step, so weights reach exact
zeros), hard-concrete L0 gates (Louizos et al. 2018; at the end each weight is multiplied by its
deterministic test-time gate) or weight-sparse training (per-matrix top-k magnitude projection
after each step, its density annealed to a target; Gao et al. 2025). `sparsity_report` counts the
exact zeros of every weight matrix. `expected_l0` and `hard_concrete_sample` are the gate
distribution's closed form and sampler (the oracle pair behind the L0 penalty).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError
from ..core.inputs import validate_inputs
from ..core.results import Result, jsonable, new_figure

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["SPARSITY_METHODS", "train_with_sparsity", "sparsity_report", "SparsityReport", "expected_l0",
           "hard_concrete_sample"]

#: The regularisers of `train_with_sparsity`.
SPARSITY_METHODS: tuple[str, ...] = ("l1", "l0", "topk")

# Hard-concrete constants of Louizos et al. (2018): temperature beta and the stretch interval (gamma, zeta).
_BETA, _GAMMA, _ZETA = 2.0 / 3.0, -0.1, 1.1
_SPARSIFIED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class SparsityReport(Result):
    """Exact zeros of every weight matrix (``nn.Linear`` and ``nn.Conv*d`` weights; biases are not counted).

    Attributes:
        layers: the weight parameters' names (``"0.weight"``), in ``named_modules`` order.
        numel: the number of weights of each.
        zeros: the number of weights exactly 0 in each.
    """

    layers: tuple[str, ...]
    numel: tuple[int, ...]
    zeros: tuple[int, ...]

    @property
    def density(self) -> tuple[float, ...]:
        """The fraction of non-zero weights of each layer."""
        return tuple(1.0 - z / n for z, n in zip(self.zeros, self.numel, strict=True))

    @property
    def nonzero(self) -> int:
        """The number of non-zero weights over every layer."""
        return sum(self.numel) - sum(self.zeros)

    @property
    def total_density(self) -> float:
        """The fraction of non-zero weights over every layer."""
        return self.nonzero / sum(self.numel)

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame({"layer": list(self.layers), "numel": list(self.numel), "zeros": list(self.zeros),
                             "density": list(self.density)}, columns=["layer", "numel", "zeros", "density"])

    def plot(self) -> Figure:
        fig = new_figure(max(4.0, 0.5 * len(self.layers) + 2), 3)
        ax = fig.add_subplot()
        ax.bar(range(len(self.layers)), list(self.density))
        ax.set_xticks(range(len(self.layers)), list(self.layers), rotation=45, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("fraction of weights non-zero")
        ax.set_title(f"density {self.total_density:.3f} ({self.nonzero} of {sum(self.numel)} weights)")
        return fig

    def to_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "numel": list(self.numel), "zeros": list(self.zeros),
                "density": jsonable(list(self.density))}


def _matrices(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    for path, module in model.named_modules():
        if isinstance(module, _SPARSIFIED) and isinstance(module.weight, nn.Parameter):
            yield (f"{path}.weight" if path else "weight"), module.weight


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Count the exact zeros of every ``nn.Linear`` / ``nn.Conv*d`` weight matrix of ``model``.

    Raises:
        InputTypeError: ``model`` is not an ``nn.Module``.
        InputError: the model has no such layer.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> with torch.no_grad():
        ...     net[0].weight[0, 0] = 0.0
        >>> report = sparsity_report(net)
        >>> report.layers, report.zeros, report.density
        (('0.weight', '2.weight'), (1, 0), (0.75, 1.0))
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    found = list(_matrices(model))
    if not found:
        raise InputError(f"{type(model).__name__} has no nn.Linear or nn.Conv1d/2d/3d layer; sparsity_report counts "
                         "the zeros of their weight matrices.")
    return SparsityReport(tuple(n for n, _ in found), tuple(p.numel() for _, p in found),
                          tuple(int((p.detach() == 0).sum()) for _, p in found))


def expected_l0(log_alpha: Tensor) -> Tensor:
    """Each hard-concrete gate's probability of being non-zero: ``sigmoid(log_alpha - beta log(-gamma / zeta))``.

    The expected L0 norm of the gated weights is the sum of this tensor (Louizos et al. 2018,
    eq. 12, with beta = 2/3, gamma = -0.1, zeta = 1.1).

    Example:
        >>> round(float(expected_l0(torch.tensor(0.0))), 4)
        0.8318
    """
    if not isinstance(log_alpha, Tensor) or not log_alpha.is_floating_point():
        raise InputTypeError(f"log_alpha must be a floating-point Tensor, got {type(log_alpha).__name__}.")
    return torch.sigmoid(log_alpha - _BETA * math.log(-_GAMMA / _ZETA))


def _gates(log_alpha: Tensor, u: Tensor) -> Tensor:
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / _BETA)
    return (s * (_ZETA - _GAMMA) + _GAMMA).clamp(0.0, 1.0)


def _test_gates(log_alpha: Tensor) -> Tensor:
    """The deterministic test-time gates: ``clamp(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1)``."""
    return (torch.sigmoid(log_alpha) * (_ZETA - _GAMMA) + _GAMMA).clamp(0.0, 1.0)


def hard_concrete_sample(log_alpha: Tensor, *, n_samples: int, seed: int = 0) -> Tensor:
    """``(n_samples, *log_alpha.shape)`` draws of the hard-concrete gates (stretched, clamped binary concrete).

    ``u ~ U(0, 1)``, ``s = sigmoid((log u - log(1 - u) + log_alpha) / beta)``, gate ``=
    clamp(s (zeta - gamma) + gamma, 0, 1)``; the fraction of non-zero draws estimates `expected_l0`.

    Example:
        >>> draws = hard_concrete_sample(torch.zeros(3), n_samples=20000, seed=0)
        >>> abs(float((draws > 0).float().mean()) - float(expected_l0(torch.tensor(0.0)))) < 0.01
        True
    """
    if not isinstance(log_alpha, Tensor) or not log_alpha.is_floating_point():
        raise InputTypeError(f"log_alpha must be a floating-point Tensor, got {type(log_alpha).__name__}.")
    n_samples = check_int("n_samples", n_samples, at_least=1)
    gen = torch.Generator().manual_seed(check_int("seed", seed, at_least=0))
    u = torch.rand((n_samples, *log_alpha.shape), generator=gen, dtype=log_alpha.dtype).clamp(1e-6, 1 - 1e-6)
    return _gates(log_alpha.detach().cpu(), u)


def _soft_threshold(weight: Tensor, amount: float) -> None:
    weight.copy_(weight.sign() * (weight.abs() - amount).clamp_min(0.0))


def _keep_top(weight: Tensor, k: int) -> None:
    """Zero all but the ``k`` largest-magnitude entries of ``weight`` (exactly ``k`` kept, ties broken by `torch.topk`)."""
    if k >= weight.numel():
        return
    flat = weight.detach().flatten()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.topk(flat.abs(), k, sorted=False).indices] = True
    weight.mul_(keep.view_as(weight))


def _check(model: nn.Module, inputs: Tensor, labels: Tensor, method: str) -> list[tuple[str, nn.Parameter]]:
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if method not in SPARSITY_METHODS:
        raise InputError(f"method must be one of {', '.join(map(repr, SPARSITY_METHODS))}; got {method!r}.")
    if not isinstance(inputs, Tensor):
        raise InputTypeError(f"inputs must be a Tensor (batch first), got {type(inputs).__name__}.")
    n = validate_inputs(model, inputs)
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == \
            torch.bool or len(labels) != n:
        got = f"{labels.dtype} of shape {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise InputError(f"labels must be a 1-D integer tensor of class indices, one per example ({n}); got {got}.")
    if int(labels.min()) < 0:
        raise InputError(f"labels must be class indices ≥ 0; got a minimum of {int(labels.min())}.")
    found = list(_matrices(model))
    if not found:
        raise InputError(f"{type(model).__name__} has no nn.Linear or nn.Conv1d/2d/3d layer whose weights could be "
                         "sparsified.")
    return found


def train_with_sparsity(model: nn.Module, inputs: Tensor, labels: Tensor, *, method: str, penalty: float = 0.0,
                        density: float = 1.0, anneal: float = 0.5, n_steps: int = 1000, lr: float = 1e-2,
                        batch_size: int = 128, seed: int = 0) -> nn.Module:
    """A copy of ``model`` trained for classification with a sparsity regulariser (``model`` is left unchanged).

    Adam with learning rate ``lr`` on cross-entropy, ``n_steps`` steps on mini-batches of
    ``batch_size`` examples drawn from ``seed``. The weight matrices of every ``nn.Linear`` and
    ``nn.Conv*d`` are sparsified (biases are not):

    * ``"l1"``: after each step every weight is soft-thresholded by ``lr * penalty`` (the
      proximal step of ``penalty * sum |w|``), so weights reach exact zeros.
    * ``"l0"``: each weight gets a hard-concrete gate with parameter ``log_alpha`` (initialised at
      2, gates mostly open); the loss adds ``penalty`` times the expected number of non-zero gates
      (`expected_l0`, summed), trained with sampled gates; the returned weights are the weights
      times their deterministic test-time gates, exactly 0 where ``sigmoid(log_alpha) < 1/12``.
    * ``"topk"``: after each step each matrix keeps only its ``k_t`` largest-magnitude weights,
      ``k_t = ceil(d_t * numel)`` with ``d_t`` annealed linearly from 1 to ``density`` over the
      first ``anneal`` fraction of the steps; the result keeps exactly ``ceil(density * numel)``
      per matrix.

    Args:
        model: a classifier mapping ``inputs`` to ``(batch, n_classes)`` logits (copied, never
            altered).
        inputs: ``(batch, ...)`` training inputs.
        labels: ``(batch,)`` class indices.
        method: ``"l1"``, ``"l0"`` or ``"topk"``.
        penalty: the L1 or L0 coefficient (ignored by ``"topk"``).
        density: the target fraction of non-zero weights per matrix for ``"topk"``, in (0, 1].
        anneal: the fraction of the steps over which ``"topk"``'s density falls to its target.
        n_steps: optimisation steps.
        lr: Adam's learning rate.
        batch_size: examples per step.
        seed: seeds the mini-batches and the L0 gate samples.

    Returns:
        The trained copy, in the training mode ``model`` had.

    Raises:
        InputError: an unknown method, labels that are not one class index per example, a model
            without a Linear/Conv layer, or out-of-range hyper-parameters (all before training).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
        >>> sparse = train_with_sparsity(net, x, (x[:, 0] > 0).long(), method="topk", density=0.25, n_steps=50)
        >>> sparsity_report(sparse).zeros, sparsity_report(net).zeros
        ((24, 12), (0, 0))

    References:
        Tibshirani, "Regression shrinkage and selection via the lasso", 1996; Louizos, Welling &
        Kingma, "Learning sparse neural networks through L0 regularization", 2018; Gao et al.,
        "Weight-sparse transformers have interpretable circuits", 2025.
    """
    _check(model, inputs, labels, method)
    penalty = check_float("penalty", penalty, at_least=0.0)
    density = check_float("density", density, at_most=1.0)
    if not density > 0:
        raise InputError(f"density must be in (0, 1], got {density}; pass the fraction of weights to keep.")
    anneal = check_float("anneal", anneal, at_least=0.0, at_most=1.0)
    n_steps = check_int("n_steps", n_steps, at_least=1)
    lr = check_float("lr", lr, at_least=0.0)
    batch_size = check_int("batch_size", batch_size, at_least=1)
    seed = check_int("seed", seed, at_least=0)
    trained = copy.deepcopy(model)
    was_training = trained.training
    with torch.no_grad():  # the logits' shape, checked on the copy before any step
        out = trained.eval()(inputs[:2])
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != min(2, inputs.shape[0]):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise InputError(f"model must return (batch, n_classes) logits for train_with_sparsity; got {got}.")
    if int(labels.max()) >= out.shape[1]:
        raise InputError(f"labels go up to {int(labels.max())}, but the model gives {out.shape[1]} logits; pass "
                         f"class indices below {out.shape[1]}.")
    trained.train()
    for p in trained.parameters():
        p.grad = None
    matrices = dict(_matrices(trained))
    log_alpha = {n: torch.full_like(p, 2.0, requires_grad=True) for n, p in matrices.items()} if method == "l0" \
        else {}
    params = [p for p in trained.parameters() if p.requires_grad] + list(log_alpha.values())
    optimizer = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = inputs.shape[0]
    for step in range(n_steps):
        rows = torch.randint(0, n, (min(batch_size, n),), generator=gen)
        x, y = inputs[rows], labels[rows].to(inputs.device)
        with torch.enable_grad():
            if method == "l0":
                gated = {}
                for name, p in matrices.items():
                    u = torch.rand(p.shape, generator=gen).to(p).clamp(1e-6, 1 - 1e-6)
                    gated[name] = p * _gates(log_alpha[name], u)
                out = torch.func.functional_call(trained, gated, (x,))
                l0 = sum(expected_l0(a).sum() for a in log_alpha.values())
                loss = nn.functional.cross_entropy(out, y) + penalty * l0
            else:
                loss = nn.functional.cross_entropy(trained(x), y)
            optimizer.zero_grad()
            loss.backward()
        optimizer.step()
        with torch.no_grad():
            if method == "l1":
                for p in matrices.values():
                    _soft_threshold(p, lr * penalty)
            elif method == "topk":
                fraction = min(1.0, (step + 1) / (anneal * n_steps)) if anneal > 0 else 1.0
                current = 1.0 - (1.0 - density) * fraction
                for p in matrices.values():
                    _keep_top(p, max(1, math.ceil(current * p.numel() - 1e-9)))
    with torch.no_grad():
        if method == "l0":
            for name, p in matrices.items():
                p.mul_(_test_gates(log_alpha[name]))
        if method == "topk":
            for p in matrices.values():
                _keep_top(p, max(1, math.ceil(density * p.numel() - 1e-9)))
    for p in trained.parameters():
        p.grad = None
    return trained.train(was_training)
