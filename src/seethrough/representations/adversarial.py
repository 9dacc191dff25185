"""Adversarial examples and adversarial training (Representations / adversarial training, survey §5.2).

`fgsm` and `pgd` craft L∞-bounded adversarial inputs for any classifier (Goodfellow et al. 2015;
Madry et al. 2018), `robust_accuracy` scores a model on them, and `adversarial_training` returns a
PGD-trained *copy* of a classifier (the model passed in is never changed). `compare_twins` runs the
same interpretability measurement on a standard and a robust twin over several cases and reports
the paired differences with bootstrap CIs: the survey's question is whether robust training makes
a network easier to read, and the honest answer may be small.

Attacks run the model in eval mode (every module's mode is restored afterwards) and differentiate
with respect to the inputs only: parameters, their ``.grad`` and ``requires_grad`` are left as they
were.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..core.checks import check_float, check_int
from ..core.errors import ForwardError, InputError, InputTypeError
from ..core.modes import eval_mode
from ..core.results import Result, new_figure

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["fgsm", "pgd", "robust_accuracy", "adversarial_training", "compare_twins", "TwinComparison"]


def _check(model: Any, inputs: Any, labels: Any, epsilon: Any, bounds: Any) -> tuple[Tensor, Tensor]:
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be an nn.Module classifier, got {type(model).__name__}.")
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point() or inputs.ndim < 2 or len(inputs) == 0:
        raise InputError("inputs must be a non-empty float tensor (batch, ...); pass a tensor of examples.")
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != (len(inputs),):
        raise InputError(f"labels must be an int64 tensor of shape ({len(inputs)},), one class per input.")
    check_float("epsilon", epsilon, at_least=0.0)
    lo, hi = bounds
    if not lo < hi:
        raise InputError(f"bounds must be (low, high) with low < high, got {bounds!r}.")
    if inputs.min() < lo - 1e-6 or inputs.max() > hi + 1e-6:
        raise InputError(f"inputs lie outside bounds {bounds!r}; pass the data's own range as bounds=.")
    return inputs.detach(), labels


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    try:
        out = model(x)
    except Exception as err:  # the model's own failure, named as such
        raise ForwardError(f"the model's forward pass failed on inputs of shape {tuple(x.shape)}: {err}") from err
    if not isinstance(out, Tensor) or out.ndim != 2:
        raise InputError("model must return (batch, n_classes) logits; wrap it so it does.")
    return out


def _input_gradient(model: nn.Module, x: Tensor, labels: Tensor) -> Tensor:
    """The gradient of the summed cross-entropy with respect to ``x`` only (no parameter gradient is kept)."""
    with torch.enable_grad():
        point = x.detach().requires_grad_(True)
        loss = F.cross_entropy(_logits(model, point), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, point)
    return grad


def _pgd(model: nn.Module, x: Tensor, labels: Tensor, epsilon: float, step_size: float, n_steps: int,
         random_start: bool, bounds: tuple[float, float], generator: torch.Generator | None) -> Tensor:
    lo, hi = bounds
    adv = x.clone()
    if random_start and epsilon > 0:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
        adv = (x + epsilon * noise).clamp(lo, hi)
    for _ in range(n_steps):
        adv = adv + step_size * _input_gradient(model, adv, labels).sign()
        adv = torch.minimum(torch.maximum(adv, x - epsilon), x + epsilon).clamp(lo, hi)
    return adv.detach()


def fgsm(model: nn.Module, inputs: Tensor, labels: Tensor, *, epsilon: float,
         bounds: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """The fast gradient sign method: ``clamp(x + ε · sign(∇ₓ CE(model(x), y)))`` within ``bounds``.

    Example:
        >>> model = nn.Linear(2, 2)
        >>> x, y = torch.full((1, 2), 0.5), torch.tensor([0])
        >>> bool((fgsm(model, x, y, epsilon=0.1) - x).abs().max() <= 0.1 + 1e-7)
        True

    References:
        Goodfellow, Shlens & Szegedy 2015, "Explaining and harnessing adversarial examples".
    """
    x, y = _check(model, inputs, labels, epsilon, bounds)
    with eval_mode(model):
        return _pgd(model, x, y, float(epsilon), float(epsilon), 1, False, bounds, None)


def pgd(model: nn.Module, inputs: Tensor, labels: Tensor, *, epsilon: float, n_steps: int = 10,
        step_size: float | None = None, random_start: bool = True, bounds: tuple[float, float] = (0.0, 1.0),
        seed: int = 0) -> Tensor:
    """Projected gradient descent in the L∞ ball: ``n_steps`` signed-gradient steps, each projected back.

    Starts from a uniform random point of the ball (``random_start``, drawn from ``seed``), steps
    ``step_size`` (default ``2.5 · ε / n_steps``, the default of the Madry lab's robustness library) up the cross-entropy of the true
    label, and projects onto ``|x' − x|∞ ≤ ε`` and ``bounds`` after every step.

    References:
        Madry et al. 2018, "Towards deep learning models resistant to adversarial attacks".
    """
    x, y = _check(model, inputs, labels, epsilon, bounds)
    check_int("n_steps", n_steps, at_least=1)
    check_int("seed", seed, at_least=0)
    step = 2.5 * float(epsilon) / n_steps if step_size is None else step_size
    check_float("step_size", step, at_least=0.0)
    with eval_mode(model):
        return _pgd(model, x, y, float(epsilon), float(step), n_steps, random_start, bounds,
                    torch.Generator().manual_seed(seed))


def robust_accuracy(model: nn.Module, inputs: Tensor, labels: Tensor, *, epsilon: float, n_steps: int = 10,
                    bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 256, seed: int = 0) -> float:
    """Accuracy on `pgd` adversarial inputs (``epsilon = 0`` gives the clean accuracy)."""
    x, y = _check(model, inputs, labels, epsilon, bounds)
    check_int("n_steps", n_steps, at_least=1)
    check_int("batch_size", batch_size, at_least=1)
    check_int("seed", seed, at_least=0)
    correct = 0
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            adv = xb if epsilon == 0 else _pgd(model, xb, yb, float(epsilon), 2.5 * float(epsilon) / n_steps,
                                              n_steps, True, bounds, torch.Generator().manual_seed(seed + start))
            with torch.no_grad():
                correct += int((_logits(model, adv).argmax(1) == yb).sum())
    return correct / len(x)


def adversarial_training(model: nn.Module, inputs: Tensor, labels: Tensor, *, epsilon: float, epochs: int = 20,
                         n_steps: int = 7, lr: float = 1e-3, batch_size: int = 64,
                         bounds: tuple[float, float] = (0.0, 1.0), batch_transform: Callable | None = None,
                         seed: int = 0) -> nn.Module:
    """A copy of ``model`` trained with PGD adversarial training (Madry et al.); ``model`` is not changed.

    Each epoch shuffles the data (from ``seed``); each mini-batch is first passed through
    ``batch_transform(x, y, generator) -> (x, y)`` if given (e.g. data poisoning, to build a
    trojaned robust twin), then replaced by its `pgd` adversarial version (``n_steps`` steps,
    computed in eval mode) and the copy takes an Adam step on the cross-entropy there, in train mode.
    Returns the copy in eval mode, parameters requiring grad as in ``model``, no ``.grad`` left (a deep
    copy: hooks registered on ``model`` are copied too). Dropout noise is drawn from ``seed``; the
    caller's global RNG is left as it was.
    """
    x, y = _check(model, inputs, labels, epsilon, bounds)
    check_int("epochs", epochs, at_least=0)
    check_int("n_steps", n_steps, at_least=1)
    check_int("batch_size", batch_size, at_least=1)
    check_float("lr", lr, at_least=0.0)
    check_int("seed", seed, at_least=0)
    robust = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam([p for p in robust.parameters() if p.requires_grad], lr=lr)
    step = 2.5 * float(epsilon) / n_steps
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: seed it, give it back untouched
        torch.manual_seed(seed)
        _train(robust, x, y, optimiser, generator, epochs, batch_size, batch_transform, float(epsilon), step, n_steps,
               bounds)
    for p in robust.parameters():
        p.grad = None
    return robust.eval()


def _train(robust: nn.Module, x: Tensor, y: Tensor, optimiser: torch.optim.Optimizer, generator: torch.Generator,
           epochs: int, batch_size: int, batch_transform: Callable | None, epsilon: float, step: float,
           n_steps: int, bounds: tuple[float, float]) -> None:
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(batch_size):
            xb, yb = x[idx], y[idx]
            if batch_transform is not None:
                xb, yb = batch_transform(xb, yb, generator)
            robust.eval()
            adv = _pgd(robust, xb, yb, epsilon, step, n_steps, True, bounds, generator)
            robust.train()
            loss = F.cross_entropy(_logits(robust, adv), yb)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()


@dataclass(frozen=True)
class TwinComparison(Result):
    """One interpretability measurement on standard and robust twins: per case, and the paired difference.

    ``standard`` and ``robust`` map each measurement's name to its value per case; ``difference``
    is robust − standard per case, with its mean and a percentile bootstrap CI (``ci_low``,
    ``ci_high``, ``n_boot`` resamples of the cases).
    """

    names: tuple[str, ...]
    standard: Mapping[str, np.ndarray]
    robust: Mapping[str, np.ndarray]
    mean_difference: Mapping[str, float]
    ci_low: Mapping[str, float]
    ci_high: Mapping[str, float]
    n_boot: int

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame([{"measurement": n, "standard": float(self.standard[n].mean()),
                              "robust": float(self.robust[n].mean()), "difference": self.mean_difference[n],
                              "ci_low": self.ci_low[n], "ci_high": self.ci_high[n],
                              "n_cases": len(self.standard[n])} for n in self.names])

    def plot(self) -> Figure:
        fig = new_figure(1.5 + 1.2 * len(self.names), 3)
        ax = fig.add_subplot()
        means = [self.mean_difference[n] for n in self.names]
        errors = [[m - self.ci_low[n] for m, n in zip(means, self.names, strict=True)],
                  [self.ci_high[n] - m for m, n in zip(means, self.names, strict=True)]]
        ax.bar(range(len(self.names)), means, yerr=errors, capsize=4, color="tab:blue")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(self.names)), list(self.names), rotation=30, fontsize=7)
        ax.set_ylabel("robust − standard")
        return fig


def compare_twins(pairs: Sequence[tuple[nn.Module, nn.Module]],
                  measure: Callable[[nn.Module, int], Mapping[str, float]], *, n_boot: int = 2000,
                  seed: int = 0) -> TwinComparison:
    """Run ``measure(model, case_index) -> {name: value}`` on both twins of every ``(standard, robust)`` pair.

    The same measurement (an attribution's localisation of a planted trigger, a synthesis' rediscovery
    rate...) on each twin gives paired values; the result holds them per case and the mean paired
    difference robust − standard with a percentile bootstrap CI over cases.

    Raises:
        InputError: no pairs, or a measurement that returns different names for different models.
    """
    if not pairs or not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
        raise InputError("pairs must be a non-empty sequence of (standard, robust) model pairs.")
    check_int("n_boot", n_boot, at_least=1)
    check_int("seed", seed, at_least=0)
    rows_s, rows_r = [], []
    for i, (standard, robust) in enumerate(pairs):
        rows_s.append(dict(measure(standard, i)))
        rows_r.append(dict(measure(robust, i)))
    names = tuple(rows_s[0])
    if any(tuple(r) != names for r in rows_s + rows_r):
        raise InputError("measure must return the same names, in the same order, for every model.")
    standard = {n: np.array([r[n] for r in rows_s], dtype=float) for n in names}
    robust = {n: np.array([r[n] for r in rows_r], dtype=float) for n in names}
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(pairs), (n_boot, len(pairs)))
    mean, low, high = {}, {}, {}
    for n in names:
        diff = robust[n] - standard[n]
        boots = diff[picks].mean(1)
        mean[n], low[n], high[n] = float(diff.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))
    return TwinComparison(names, standard, robust, mean, low, high, n_boot)
