"""Guided backpropagation: the gradient with negative signals stopped at every ReLU on the way back.

Neurons / gradient attribution in the survey's taxonomy. Kept as the known counter-example of the
sanity checks (Adebayo et al. 2018): its maps look sharp but barely change when the top layer's
weights are randomised, so they reflect the input more than the model. Every ``nn.ReLU`` module's
output is routed (through `patch`, no backward hook) via an identity whose backward clamps the
incoming gradient at zero; the ReLU's own backward then masks by the forward activation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..core.errors import InputError
from ..core.hooks import hooks
from ..core.sites import Site
from ._gradients import gradients_enabled, prepare, scores
from .attribution import AttributionResult

__all__ = ["guided_backprop"]


class _PositiveGradient(torch.autograd.Function):
    """Identity forward; the backward passes only the positive part of the gradient."""

    @staticmethod
    def forward(ctx: Any, value: Tensor) -> Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp(min=0.0)


def _guide(value: Tensor, site: Site) -> Tensor:
    return _PositiveGradient.apply(value)


def guided_backprop(model: nn.Module, inputs: Tensor, target: Tensor | int | None, *,
                    metric: Callable[[Any], Tensor] | None = None) -> AttributionResult:
    """Guided backpropagation of the score to the input (ReLU networks built from ``nn.ReLU`` modules).

    Args:
        model: a network whose rectifiers are ``nn.ReLU`` modules (every call of each is guided;
            functional ``torch.relu`` calls are not).
        inputs: a ``(batch, ...)`` floating tensor.
        target, metric: as in `integrated_gradients`.

    Returns:
        `AttributionResult` shaped like ``inputs``, ``delta=None``.

    Raises:
        InputError: the model has no ``nn.ReLU`` module, and everything `saliency` checks.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1), nn.Flatten(0))
        >>> tuple(guided_backprop(model, torch.ones(3, 2), None).values.shape)
        (3, 2)

    References:
        Springenberg et al., "Striving for Simplicity: The All Convolutional Net", 2015;
        Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
    """
    with gradients_enabled():
        problem = prepare(model, inputs, target, None, metric)
        relus = [name for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
        if not relus:
            raise InputError(f"{type(model).__name__} has no nn.ReLU module, so there is nothing to guide; "
                             "guided backpropagation is defined for ReLU networks (use saliency instead).")
        x = problem.inputs
        assert isinstance(x, Tensor)
        leaf = x.detach().requires_grad_()
        # every call of every ReLU is guided (a module reused in the forward, ResNet style, too),
        # and declared-but-unused ReLUs are fine: raw hooks, not patch's once-per-forward sites
        with hooks(model, dict.fromkeys(relus, _guide), require_fired=False, refuse_repeats=False) as ctx:
            output = ctx.call(leaf)  # a failing forward is a ForwardError naming the model and inputs
        found = scores(problem, output, 1)
        (grads,) = torch.autograd.grad(found.sum(), leaf, allow_unused=True)
    values = torch.zeros_like(leaf) if grads is None else grads
    return AttributionResult(values.detach(), None, "guided_backprop", None)
