"""SmoothGrad and VarGrad: the mean and the variance of gradients under Gaussian noise.

Neurons / gradient attribution in the survey's taxonomy. Both add seeded Gaussian noise to the
attributed tensor (the input, a site's value, or its coordinate along a direction) and read the
gradient of the score at every noisy copy, all copies in one forward and one backward unless
``internal_batch_size`` splits them. SmoothGrad averages the gradients; VarGrad takes their
variance, which measures how much the local gradient depends on where it is read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputTypeError
from ..core.sites import Site
from ..core.types import Inputs
from ._gradients import (
    Problem,
    check_internal_batch_size,
    gradients,
    gradients_enabled,
    prepare,
    steps_per_pass,
)
from .attribution import AttributionResult

__all__ = ["smoothgrad", "vargrad"]


def _check_noise(n_samples: int, stdev: float, seed: int) -> None:
    check_int("n_samples", n_samples, at_least=1)
    check_float("stdev (the noise's standard deviation in the attributed tensor's units)", stdev, at_least=0.0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputTypeError(f"seed must be an int, got {type(seed).__name__}.")


def _noisy_gradients(problem: Problem, n_samples: int, stdev: float, seed: int, internal_batch_size: int | None,
                     absolute: bool = False) -> tuple[Tensor, Tensor, torch.dtype]:
    """Sums over the samples of the gradient g at ``a + noise`` (or of ``|g|``) and of ``g²``, and a's dtype.

    The sums accumulate in float64.
    The noise is ``stdev * torch.randn((n_samples, *a.shape), generator=torch.Generator().manual_seed(seed))``
    for the attributed tensor ``a`` (drawn on the CPU, once, whatever the chunking), so a result
    depends on the seed and not on ``internal_batch_size`` or the global RNG.
    """
    noise: list[Tensor] = []
    per_pass = steps_per_pass(internal_batch_size, problem.n, n_samples)
    total = total_sq = torch.zeros((), dtype=torch.float64)
    dtype = torch.float32
    for start in range(0, n_samples, per_pass):
        stop = min(start + per_pass, n_samples)

        def add_noise(a: Tensor, start: int = start, stop: int = stop) -> Tensor:
            if not noise:
                gen = torch.Generator().manual_seed(seed)
                draw = torch.randn((n_samples, problem.n, *a.shape[1:]), generator=gen, dtype=a.dtype)
                noise.append(draw.mul_(stdev).to(a.device))
            return a + noise[0][start:stop].reshape(a.shape)

        copies = stop - start
        inputs = None
        if problem.site is None:
            x = problem.inputs
            assert isinstance(x, Tensor)
            inputs = x.repeat(copies, *[1] * (x.ndim - 1)) if copies > 1 else x
        _, grads = gradients(problem, inputs, copies, add_noise)
        dtype = grads.dtype
        grads = grads.reshape(copies, problem.n, *grads.shape[1:]).double()
        total = total + (grads.abs() if absolute else grads).sum(0)
        total_sq = total_sq + grads.square().sum(0)
    return total, total_sq, dtype


def smoothgrad(
    model: nn.Module,
    inputs: Inputs,
    target: Tensor | int | None,
    *,
    site: Site | str | None = None,
    n_samples: int = 50,
    stdev: float = 0.15,
    seed: int = 0,
    absolute: bool = False,
    internal_batch_size: int | None = None,
    metric: Callable[[Any], Tensor] | None = None,
    direction: Tensor | None = None,
) -> AttributionResult:
    """SmoothGrad: the gradient of the score averaged over Gaussian-noised copies of the attributed tensor.

    ``values = mean_k ∂F/∂a (a + ε_k)`` with ``ε_k ~ N(0, stdev²)`` i.i.d. per element, or the
    mean of ``|∂F/∂a|`` with ``absolute=True`` (Captum's ``NoiseTunnel(Saliency)`` with
    ``abs=True``). The model is left as found.

    Args:
        model, inputs, target, site, metric, direction: as in `integrated_gradients`.
        n_samples: noisy copies (all in one pass unless ``internal_batch_size`` splits them).
        stdev: the noise's standard deviation, in the attributed tensor's units; Smilkov et al.
            recommend 10-20% of the data's range (digits in [0, 1]: 0.1-0.2).
        seed: seeds the noise (a private generator; the global RNG is untouched).
        absolute: average ``|gradient|`` instead of the signed gradient.
        internal_batch_size: rows per forward pass, to bound memory; ``None`` runs all copies at once.

    Returns:
        `AttributionResult` shaped like the attributed tensor, ``delta=None``.

    Raises:
        InputError: bad ``n_samples``, ``stdev`` or ``internal_batch_size``, and everything
            `integrated_gradients` checks.

    Example:
        >>> model = nn.Linear(3, 2)
        >>> torch.allclose(smoothgrad(model, torch.ones(4, 3), 1).values, model.weight[1].expand(4, 3))
        True

    References:
        Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017.
    """
    _check_noise(n_samples, stdev, seed)
    check_internal_batch_size(internal_batch_size)
    with gradients_enabled():
        problem = prepare(model, inputs, target, site, metric, direction)
        total, _, dtype = _noisy_gradients(problem, n_samples, stdev, seed, internal_batch_size, absolute)
    values = (total / n_samples).to(dtype)
    name = f"smoothgrad ({n_samples} samples, stdev {stdev:g}{', absolute' if absolute else ''})"
    return AttributionResult(values, None, name, problem.site)


def vargrad(
    model: nn.Module,
    inputs: Inputs,
    target: Tensor | int | None,
    *,
    site: Site | str | None = None,
    n_samples: int = 50,
    stdev: float = 0.15,
    seed: int = 0,
    internal_batch_size: int | None = None,
    metric: Callable[[Any], Tensor] | None = None,
    direction: Tensor | None = None,
) -> AttributionResult:
    """VarGrad: the variance (over Gaussian-noised copies) of the gradient of the score.

    ``values = mean_k g_k² - (mean_k g_k)²`` with ``g_k = ∂F/∂a (a + ε_k)``: the population
    variance, as Captum's ``NoiseTunnel(Saliency(...), nt_type="vargrad")`` computes it for
    ``abs=False``. Zero for a model linear in the attributed tensor. The same noise as
    `smoothgrad` for the same ``seed``.

    Args:
        model, inputs, target, site, metric, direction: as in `integrated_gradients`.
        n_samples, stdev, seed, internal_batch_size: as in `smoothgrad`.

    Returns:
        `AttributionResult` shaped like the attributed tensor (non-negative), ``delta=None``.

    Raises:
        InputError: as `smoothgrad`.

    Example:
        >>> model = nn.Linear(3, 2)
        >>> float(vargrad(model, torch.ones(4, 3), 1).values.abs().max()) < 1e-10
        True

    References:
        Adebayo et al., "Local explanation methods for deep neural networks lack sensitivity to
        parameter values", ICLR workshop 2018; Hooker et al., "A Benchmark for Interpretability
        Methods in Deep Neural Networks", NeurIPS 2019.
    """
    _check_noise(n_samples, stdev, seed)
    check_internal_batch_size(internal_batch_size)
    with gradients_enabled():
        problem = prepare(model, inputs, target, site, metric, direction)
        total, total_sq, dtype = _noisy_gradients(problem, n_samples, stdev, seed, internal_batch_size)
    mean = total / n_samples
    values = (total_sq / n_samples - mean.square()).clamp_(min=0.0)  # rounding can dip below 0
    return AttributionResult(values.to(dtype), None,
                             f"vargrad ({n_samples} samples, stdev {stdev:g})", problem.site)
