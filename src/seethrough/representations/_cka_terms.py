"""The terms of linear CKA, shared by `cka`, `StreamingCKA` and `cka_between` (private to representations).

``||Xᵀ Y||_F²`` from centered features or their Gram matrix (`_Centered`), or from streamed
co-moments (`_Moments`, a `seethrough.core.RunningBlockCovariance`), and the clipped ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.errors import InputError
from ..core.stats import RunningBlockCovariance
from ._arrays import _constant_error, _sqnorm

__all__: list[str] = []


@dataclass(frozen=True)
class _Centered:
    """A centered representation, kept as features ``(n, d)`` or, when ``d > n``, as its Gram matrix ``(n, n)``.

    Either form gives ``||Xᵀ Y||_F²`` (what CKA needs); the Gram form is cheaper when ``d > n``.
    """

    data: Tensor
    is_gram: bool

    @staticmethod
    def of(centered: Tensor) -> _Centered:
        n, d = centered.shape
        return _Centered(centered @ centered.T, True) if d > n else _Centered(centered, False)

    def cross(self, other: _Centered) -> float:
        """``||Xᵀ Y||_F²`` = ``<K, L>_F`` with ``K = X Xᵀ``, ``L = Y Yᵀ`` (Kornblith et al., eq. 3)."""
        if self.is_gram and other.is_gram:
            return float((self.data * other.data).sum())
        if self.is_gram or other.is_gram:
            gram, feats = (self.data, other.data) if self.is_gram else (other.data, self.data)
            return float(((gram @ feats) * feats).sum())  # tr(Yᵀ K Y), n² d instead of n d²
        return _sqnorm(self.data.T @ other.data)

    def row_sqnorms(self) -> Tensor:
        """``||x_i||²`` per example (the Gram matrix's diagonal)."""
        return self.data.diagonal() if self.is_gram else self.data.square().sum(1)

    def self_term(self) -> float:
        """``||Xᵀ X||_F²``."""
        return _sqnorm(self.data) if self.is_gram else _sqnorm(self.data.T @ self.data)


def _ratio(cross: float, self_x: float, self_y: float) -> float:
    """``cross / sqrt(self_x · self_y)``, clipped to [0, 1] against rounding.

    Symmetric in ``x`` and ``y`` to the last bit. No overflow: inputs are scaled (max |entry| or
    trace 1) before the squares are summed, so ``self_x · self_y`` stays far below 1e308.
    """
    value = cross / math.sqrt(self_x * self_y)
    return min(max(value, 0.0), 1.0)


class _Moments(RunningBlockCovariance):
    """`seethrough.core.RunningBlockCovariance` of several representations, plus the CKA of two of them."""

    def cka(self, i: int, j: int, names: tuple[str, str], fn: str) -> float:
        """Linear CKA between blocks ``i`` and ``j`` from the co-moments alone."""
        if self.count < 2:
            raise InputError(f"{fn} needs at least 2 examples (rows), got {self.count}.")
        m_ii, m_jj, m_ij = self.m2[(i, i)], self.m2[(j, j)], self.m2[(min(i, j), max(i, j))]
        t_i, t_j = float(m_ii.trace()), float(m_jj.trace())  # = ||Xᶜ||_F², exactly 0 iff constant
        for t, name in ((t_i, names[0]), (t_j, names[1])):
            if t == 0.0:
                raise _constant_error(name, fn)
        # Scale to unit trace first: entries are then at most 1 in absolute value (Cauchy–Schwarz).
        cross = _sqnorm(m_ij / math.sqrt(t_i * t_j))
        return _ratio(cross, _sqnorm(m_ii / t_i), _sqnorm(m_jj / t_j))


# -- linear CKA of float32 data: float32 products over row chunks, accumulated in float64 -------------

#: Rows per chunk: float32 sums run over at most this many products before joining a float64 total,
#: which bounds their rounding (measured: ≤ 5e-9 from the float64 formula at n = 200,000).
_CHUNK_ROWS = 4096
#: From this many values (n · (d1 + d2)) on, float32 inputs take the float32-product path; smaller
#: inputs cost little in float64 and stay exact to the last bits.
_FAST_FROM = 2**20
_LOW_PRECISION = (torch.float32, torch.float16, torch.bfloat16)


def _chunked_moments(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, float, float] | None:
    """Centered ``(Xᵀ X, Yᵀ Y, Xᵀ Y)`` in float64 from float32 products, or None where that is not accurate.

    Each chunk is shifted by an approximate mean ``s`` in float32 (the subtraction of two float32
    numbers is correctly rounded, so the error is relative to the *centered* value, however far the
    data sits from the origin), multiplied in float32 and added to float64 totals. The exact mean
    correction ``Σ (x - m)(x - m)ᵀ = Σ (x - s)(x - s)ᵀ - n δ δᵀ`` with ``δ = Σ (x - s) / n`` then
    centers exactly. Returns None (the caller falls back to float64) for non-finite data or totals,
    a spread below 1e-4 of the offset (then ``δ δᵀ`` would cancel digits) or a tiny scale.
    """
    n = x.shape[0]
    xs, ys = x.float(), y.float()
    sx, sy = xs.sum(0) / n, ys.sum(0) / n
    if not bool(torch.isfinite(sx).all()) or not bool(torch.isfinite(sy).all()):
        return None
    f64 = {"dtype": torch.float64, "device": x.device}
    m_xx, m_yy = torch.zeros(x.shape[1], x.shape[1], **f64), torch.zeros(y.shape[1], y.shape[1], **f64)
    m_xy = torch.zeros(x.shape[1], y.shape[1], **f64)
    u_x, u_y = torch.zeros(x.shape[1], **f64), torch.zeros(y.shape[1], **f64)
    for start in range(0, n, _CHUNK_ROWS):
        a, b = xs[start:start + _CHUNK_ROWS] - sx, ys[start:start + _CHUNK_ROWS] - sy
        m_xx += a.T @ a
        m_yy += b.T @ b
        m_xy += a.T @ b
        u_x += a.sum(0)
        u_y += b.sum(0)
    d_x, d_y = u_x / n, u_y / n
    m_xx -= n * torch.outer(d_x, d_x)
    m_yy -= n * torch.outer(d_y, d_y)
    m_xy -= n * torch.outer(d_x, d_y)
    t_x, t_y = float(m_xx.trace()), float(m_yy.trace())
    for m, t, s, d in ((m_xx, t_x, sx, x.shape[1]), (m_yy, t_y, sy, y.shape[1])):
        if not math.isfinite(t) or not bool(torch.isfinite(m).all()):
            return None
        if t <= 1e-8 * n * float(s.double().square().sum()) or t <= 1e-30 * n * d:
            return None
    if not bool(torch.isfinite(m_xy).all()):
        return None
    return m_xx, m_yy, m_xy, t_x, t_y


def _fast_cka(x: Tensor, y: Tensor) -> float | None:
    """Linear CKA of large float32 (or float16) inputs through `_chunked_moments`; None to use float64.

    Within 1e-6 of the float64 formula (measured ≤ 5e-9). Not used on CUDA while TF32 matmuls are
    allowed (``torch.backends.cuda.matmul.allow_tf32``): they keep only 10 mantissa bits.
    """
    n, d1 = x.shape
    d2 = y.shape[1]
    if (x.dtype not in _LOW_PRECISION or y.dtype not in _LOW_PRECISION or n * (d1 + d2) < _FAST_FROM
            or d1 > n or d2 > n or (x.is_cuda and torch.backends.cuda.matmul.allow_tf32)):
        return None
    moments = _chunked_moments(x, y)
    if moments is None:
        return None
    m_xx, m_yy, m_xy, t_x, t_y = moments
    return _ratio(_sqnorm(m_xy / math.sqrt(t_x * t_y)), _sqnorm(m_xx / t_x), _sqnorm(m_yy / t_y))
