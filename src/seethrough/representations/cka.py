"""Linear CKA (Kornblith et al. 2019): the stateless measure and its streaming accumulator.

Representations / representation comparison. Compares two representations of the same ``n``
examples, ``(n, d1)`` and ``(n, d2)``, in float64; invariant to translation, isotropic scaling and
orthogonal transforms of either side. `StreamingCKA` accumulates it batch by batch in memory
independent of ``n``. A high similarity is an observation about geometry, not proof of shared function.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ..core.errors import InputError, NotFittedError
from ._arrays import _center, _pair
from ._cka_terms import _Centered, _Moments, _ratio

__all__ = ["cka", "StreamingCKA"]


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


class StreamingCKA:
    """Linear CKA accumulated over batches in memory independent of the number of examples.

    Keeps float64 means and the co-moment matrices ``Σ Xᶜᵀ Xᶜ`` (d1 × d1), ``Σ Yᶜᵀ Yᶜ`` (d2 × d2) and
    ``Σ Xᶜᵀ Yᶜ`` (d1 × d2) in a `seethrough.core.RunningBlockCovariance`, merged batch by batch with
    Chan et al.'s parallel update, so `value` equals `cka` on the concatenated batches however the
    data was split; two accumulators over disjoint examples `merge` into the one of all of them.

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

    def merge(self, other: StreamingCKA) -> StreamingCKA:
        """Fold in ``other`` (fed other examples of the same two representations); returns ``self``."""
        if other._moments is None or other._dims is None:
            return self
        if self._dims is not None and other._dims != self._dims:
            raise InputError(f"StreamingCKA.merge got widths (d1, d2) = {other._dims}, but this one has "
                             f"{self._dims}; merge only accumulators of the same two representations.")
        if self._moments is None:
            self._moments, self._dims = _Moments(other._moments.pairs), other._dims
        self._moments.merge(other._moments)
        return self

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
