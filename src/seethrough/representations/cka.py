"""Linear CKA (Kornblith et al. 2019): the stateless measure and its streaming accumulator.

Representations / representation comparison. Compares two representations of the same ``n``
examples, ``(n, d1)`` and ``(n, d2)``, in float64; invariant to translation, isotropic scaling and
orthogonal transforms of either side. `StreamingCKA` accumulates it batch by batch in memory
independent of ``n``. A high similarity is an observation about geometry, not proof of shared function.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from ..core.errors import InputError, NotFittedError
from ._arrays import _center, _constant_error, _pair, _sqnorm

__all__ = ["cka", "StreamingCKA"]

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


# -- linear CKA ------------------------------------------------------------------------------


def cka(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Linear centered kernel alignment between two representations of the same examples.

    ``CKA = ||Yᶜᵀ Xᶜ||_F² / (||Xᶜᵀ Xᶜ||_F · ||Yᶜᵀ Yᶜ||_F)`` with column-centered ``Xᶜ``, ``Yᶜ``: 1 for
    representations equal up to an orthogonal transform, isotropic scaling and translation; near 0
    for unrelated ones. Computed in float64, in feature space (``O(n d²)`` time, ``O(d²)`` memory),
    or through the ``n × n`` Gram matrix for a side with more features than examples: same value.

    Args:
        x: ``(n, d1)`` representation (numpy array or torch tensor, any real dtype).
        y: ``(n, d2)`` representation of the same ``n`` examples, in the same order.

    Returns:
        The linear CKA, a Python float in [0, 1].

    Raises:
        InputError: shapes other than 2-D, different ``n``, ``n < 2``, no features, NaN/inf, or a
            constant representation (zero variance: CKA is undefined).
        InputTypeError: not a numpy array or torch tensor, or complex values.

    Example:
        >>> import torch
        >>> x = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
        >>> rotation = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))[0]
        >>> round(cka(x, 3 * x @ rotation + 1), 6)
        1.0
        >>> round(cka(x, x[:, :2]), 2)
        0.47

    References:
        Kornblith, Norouzi, Lee and Hinton, "Similarity of Neural Network Representations Revisited",
        ICML 2019.
    """
    xt, yt, _, _ = _pair(x, y, "cka")
    rx = _Centered.of(_center(xt, "x", "cka"))
    ry = _Centered.of(_center(yt, "y", "cka"))
    return _ratio(rx.cross(ry), rx.self_term(), ry.self_term())


class _Moments:
    """Means and co-moments (sums of outer products of deviations) of several blocks of columns.

    Merged batch by batch with Chan et al.'s update, as `seethrough.core.RunningCovariance`, but
    only for the blocks pairs ``pairs`` (``(i, i)`` for each block's own co-moment, ``(i, j)``
    with ``i < j`` for a cross block). Rows are first shifted by the first row ever seen, so
    constant columns stay exactly zero and data far from the origin loses no digits.
    """

    def __init__(self, pairs: Iterable[tuple[int, int]]) -> None:
        self.pairs = sorted(set(pairs))
        self.count = 0
        self.shift: list[Tensor] = []
        self.mean: list[Tensor] = []
        self.m2: dict[tuple[int, int], Tensor] = {}

    def update(self, blocks: list[Tensor]) -> None:
        """Add rows; ``blocks[i]`` is a float64 ``(n_b, d_i)`` tensor (all with the same ``n_b``)."""
        n_b = blocks[0].shape[0]
        if n_b == 0:
            return
        if not self.shift:
            self.shift = [b[0].clone() for b in blocks]
        devs, means = [], []
        for block, shift in zip(blocks, self.shift, strict=True):
            dev = block - shift  # a new tensor (``block`` may be the caller's own)
            mean_b = dev.mean(0)
            devs.append(dev.sub_(mean_b))
            means.append(mean_b)
        if self.count == 0:
            self.count, self.mean = n_b, means
            self.m2 = {(i, j): devs[i].T @ devs[j] for i, j in self.pairs}
            return
        n_a, n = self.count, self.count + n_b
        deltas = [mb - ma for mb, ma in zip(means, self.mean, strict=True)]
        for i, j in self.pairs:  # in place, so memory stays at one copy of each block
            self.m2[(i, j)].addmm_(devs[i].T, devs[j]).addr_(deltas[i], deltas[j], alpha=n_a * n_b / n)
        for mean, delta in zip(self.mean, deltas, strict=True):
            mean.add_(delta, alpha=n_b / n)
        self.count = n

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


class StreamingCKA:
    """Linear CKA accumulated over batches in memory independent of the number of examples.

    Keeps float64 means and the co-moment matrices ``Σ Xᶜᵀ Xᶜ`` (d1 × d1), ``Σ Yᶜᵀ Yᶜ`` (d2 × d2) and
    ``Σ Xᶜᵀ Yᶜ`` (d1 × d2), merged batch by batch with Chan et al.'s parallel update, so `value`
    equals `cka` on the concatenated batches however the data was split.

    Example:
        >>> import torch
        >>> x = torch.randn(100, 6, generator=torch.Generator().manual_seed(0))
        >>> y = torch.tanh(x[:, :4])
        >>> acc = StreamingCKA()
        >>> for xb, yb in zip(x.split(32), y.split(32)): acc.update(xb, yb)
        >>> acc.count, abs(acc.value - cka(x, y)) < 1e-12
        (100, True)

    References:
        Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019;
        Chan, Golub and LeVeque, "Updating formulae and a pairwise algorithm for computing sample
        variances", 1979.
    """

    def __init__(self) -> None:
        self._moments: _Moments | None = None
        self._dims: tuple[int, int] | None = None

    def update(self, x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> None:
        """Add a batch: ``x`` ``(batch, d1)`` and ``y`` ``(batch, d2)`` for the same examples.

        Raises:
            InputError: as `cka` (a batch may have any number of rows), or widths that differ from
                earlier batches.
        """
        xt, yt, _, _ = _pair(x, y, "StreamingCKA.update", min_rows=0)
        dims = (xt.shape[1], yt.shape[1])
        if self._dims is not None and dims != self._dims:
            raise InputError(f"StreamingCKA.update got widths (d1, d2) = {dims}, but earlier batches had "
                             f"{self._dims}; every batch must come from the same two representations.")
        if self._moments is None:
            self._moments, self._dims = _Moments([(0, 0), (1, 1), (0, 1)]), dims
        device = self._moments.shift[0].device if self._moments.shift else xt.device
        self._moments.update([xt.to(device), yt.to(device)])

    @property
    def count(self) -> int:
        """Examples seen so far."""
        return 0 if self._moments is None else self._moments.count

    @property
    def value(self) -> float:
        """Linear CKA of everything seen so far.

        Raises:
            NotFittedError: no batch yet.
            InputError: fewer than 2 examples, or a constant representation.
        """
        if self._moments is None:
            raise NotFittedError("StreamingCKA has seen no data; call update(x, y) first.")
        return self._moments.cka(0, 1, ("x", "y"), "StreamingCKA")
