"""Errors raised by seethrough.

Every error derives from `SeethroughError` and from the builtin that fits it (`KeyError`,
`ValueError`, `TypeError`, `RuntimeError`), so callers can catch either. Messages say what
happened, what was expected, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "SeethroughError",
    "SiteNotFoundError",
    "SiteError",
    "HookNotFiredError",
    "InputError",
    "InputTypeError",
    "ForwardError",
    "LoadError",
    "NotFittedError",
]


class SeethroughError(Exception):
    """Base class of every error this package raises on purpose."""


class SiteNotFoundError(SeethroughError, KeyError):
    """A `Site` path (or glob) names no module of the model."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class SiteError(SeethroughError, ValueError):
    """A site exists but cannot be used as asked (bad selection, odd output, repeated calls).

    ``site`` is the offending `Site` when one is known.
    """

    def __init__(self, message: str, *, site: object = None) -> None:
        super().__init__(message)
        self.site = site


class HookNotFiredError(SeethroughError, RuntimeError):
    """A requested hook never ran during the forward pass."""


class InputError(SeethroughError, ValueError):
    """Inputs or data have the right type but bad content (empty, NaN, wrong dtype/shape)."""


class InputTypeError(SeethroughError, TypeError):
    """Inputs or arguments are of an unsupported type."""


class ForwardError(SeethroughError, RuntimeError):
    """The model's own forward pass failed; the original error is chained as `__cause__`."""


class LoadError(SeethroughError, ValueError):
    """A model spec, weights file or data file could not be loaded safely."""


class NotFittedError(SeethroughError, AttributeError):
    """An estimator was used before `fit`."""
