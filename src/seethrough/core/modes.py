"""Run a model in eval mode for a block and give every module its own mode back afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode inside the block; every module's own mode is restored on exit, errors included.

    ``model.train(mode)`` afterwards would not do: a caller may keep some submodules in eval mode
    (frozen BatchNorm) inside a model in training mode.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
        >>> model[1].eval()  # a caller's mixed modes
        Dropout(p=0.5, inplace=False)
        >>> with eval_mode(model):
        ...     model.training
        False
        >>> model.training, model[1].training
        (True, False)
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode
