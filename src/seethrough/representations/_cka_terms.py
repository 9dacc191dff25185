"""The terms of linear CKA, shared by `cka`, `StreamingCKA` and `cka_between` (private to representations).

``||Xᵀ Y||_F²`` from centered features or their Gram matrix (`_Centered`), or from streamed
co-moments (`_Moments`, a `seethrough.core.RunningBlockCovariance`), and the clipped ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
