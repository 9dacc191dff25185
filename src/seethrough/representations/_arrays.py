"""Input handling shared by the similarity measures: float64 conversion, finiteness, pairing, centering."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..core.errors import InputError, InputTypeError

__all__ = []

_F64_EPS = float(torch.finfo(torch.float64).eps)


# -- validation and centering (shared by every measure) -------------------------------------


def _as_tensor(x: Tensor | np.ndarray, name: str, fn: str) -> tuple[Tensor, float]:
    """``x`` as a detached tensor of shape (n, d), float32/16 kept as is (else float64), and its dtype's epsilon.

    A float32 numpy array is shared, not copied; other numpy dtypes become a float64 copy.
    """
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fiub":
            raise InputTypeError(f"{fn}: {name} has dtype {x.dtype}; pass real numbers (a float array).")
        shape, eps = x.shape, float(np.finfo(x.dtype).eps) if x.dtype.kind == "f" else _F64_EPS
    elif isinstance(x, Tensor):
        if x.is_complex():
            raise InputTypeError(f"{fn}: {name} has dtype {x.dtype}; pass real numbers (a float tensor).")
        shape, eps = tuple(x.shape), torch.finfo(x.dtype).eps if x.is_floating_point() else _F64_EPS
    else:
        raise InputTypeError(f"{fn}: {name} must be a numpy array or a torch tensor, got {type(x).__name__}.")
    if len(shape) != 2:
        raise InputError(f"{fn}: {name} has shape {tuple(shape)}, but a representation is 2-D (n examples, "
                         "d features); flatten with x.reshape(n, -1).")
    if isinstance(x, np.ndarray):
        keep = x.dtype in (np.float32, np.float16) and x.dtype.isnative
        return torch.from_numpy(np.ascontiguousarray(x if keep else x.astype(np.float64))), eps
    t = x.detach()
    return (t if t.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64) else t.to(torch.float64)), eps


def _as_float64(x: Tensor | np.ndarray, name: str, fn: str) -> tuple[Tensor, float]:
    """``x`` as a detached float64 tensor of shape (n, d), and the machine epsilon of its own dtype."""
    t, eps = _as_tensor(x, name, fn)
    return t.to(torch.float64), eps


def _check_finite(t: Tensor, name: str, fn: str) -> None:
    if t.numel() and not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise InputError(f"{fn}: {name} contains {n_bad} NaN/inf value(s) (shape {tuple(t.shape)}); "
                         "clean the data first (e.g. torch.nan_to_num).")


def _pair_native(x: Tensor | np.ndarray, y: Tensor | np.ndarray, fn: str, *,
                 min_rows: int = 2) -> tuple[Tensor, Tensor, float, float]:
    """``x`` and ``y`` checked for shape (not yet for NaN/inf), in their own float dtype, ``y`` on ``x``'s device."""
    xt, eps_x = _as_tensor(x, "x", fn)
    yt, eps_y = _as_tensor(y, "y", fn)
    if xt.shape[0] != yt.shape[0]:
        raise InputError(f"{fn}: x has {xt.shape[0]} examples (rows) but y has {yt.shape[0]}; both must hold "
                         "the same examples in the same order.")
    if xt.shape[0] < min_rows:
        raise InputError(f"{fn} needs at least {min_rows} examples (rows), got {xt.shape[0]}.")
    for t, name in ((xt, "x"), (yt, "y")):
        if t.shape[1] == 0:
            raise InputError(f"{fn}: {name} has shape {tuple(t.shape)}, with no features; pass d ≥ 1 columns.")
    return xt, yt.to(xt.device), eps_x, eps_y


def _pair(x: Tensor | np.ndarray, y: Tensor | np.ndarray, fn: str, *,
          min_rows: int = 2) -> tuple[Tensor, Tensor, float, float]:
    """Validated float64 copies of ``x`` and ``y`` (on ``x``'s device) and their dtypes' epsilons."""
    xt, yt, eps_x, eps_y = _pair_native(x, y, fn, min_rows=min_rows)
    xt, yt = xt.to(torch.float64), yt.to(torch.float64)
    for t, name in ((xt, "x"), (yt, "y")):
        _check_finite(t, name, fn)
    return xt, yt, eps_x, eps_y


def _constant_error(name: str, fn: str) -> InputError:
    return InputError(f"{fn}: {name} is constant (every example has the same representation), so it has zero "
                      f"variance and {fn} is undefined; check that the site varies with the inputs.")


def _center(t: Tensor, name: str, fn: str) -> Tensor:
    """Columns minus their means, scaled so that the largest |entry| is 1.

    Shifting by the first row before taking the mean makes constant columns exactly zero and keeps
    precision for data far from the origin; the scaling (all measures here are scale invariant)
    keeps the sums of fourth powers below clear of overflow.
    """
    centered = t - t[0]  # a new tensor (``t`` may be the caller's own): the rest works in place
    centered -= centered.mean(0)
    scale = float(centered.abs().amax())
    if scale == 0.0:
        raise _constant_error(name, fn)
    return centered.div_(scale)


def _sqnorm(t: Tensor) -> float:
    return float(t.square().sum())
