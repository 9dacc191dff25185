"""Linear CKA (Kornblith et al. 2019): the stateless measure and its streaming accumulator.

Representations / representation comparison. Compares two representations of the same ``n``
examples, ``(n, d1)`` and ``(n, d2)``, in float64; invariant to translation, isotropic scaling and
orthogonal transforms of either side. `StreamingCKA` accumulates it batch by batch in memory
independent of ``n``. A high similarity is an observation about geometry, not proof of shared function.
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from ..core.checks import check_float
from ..core.errors import InputError, NotFittedError
from ._arrays import _center, _pair, _pair_native, _sqnorm
from ._cka_terms import _Centered, _fast_cka, _Moments, _ratio

__all__ = ["cka", "StreamingCKA", "debiased_cka", "kernel_cka", "MAX_KERNEL_ROWS"]


# -- linear CKA ------------------------------------------------------------------------------


def cka(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Linear centered kernel alignment between two representations of the same examples.

    ``CKA = ||Yᶜᵀ Xᶜ||_F² / (||Xᶜᵀ Xᶜ||_F · ||Yᶜᵀ Yᶜ||_F)`` with column-centered ``Xᶜ``, ``Yᶜ``: 1 for
    representations equal up to an orthogonal transform, isotropic scaling and translation; near 0
    for unrelated ones. Computed in float64, in feature space (``O(n d²)`` time, ``O(d²)`` memory),
    or through the ``n × n`` Gram matrix for a side with more features than examples: same value.
    Large float32 inputs (``n · (d1 + d2) ≥ 2²⁰``) are multiplied in float32 over chunks of 4096
    rows and summed in float64 after an exact mean correction: within 1e-6 of the float64 formula
    (measured ≤ 5e-9), at about the cost of the float32 formula; float64 inputs stay in float64.

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
    xt, yt, _, _ = _pair_native(x, y, "cka")
    fast = _fast_cka(xt, yt)
    if fast is not None:
        return fast
    xt, yt, _, _ = _pair(xt, yt, "cka")
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


# -- debiased linear CKA and kernel (RBF) CKA ------------------------------------------------------------

#: Kernel CKA keeps two n × n float64 Gram matrices; above this many examples, subsample.
MAX_KERNEL_ROWS = 5000


def debiased_cka(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Linear CKA from the unbiased HSIC estimator: near 0 for independent data at any ``n``.

    The plain (biased) CKA of independent representations is about ``sqrt(d1 d2) / n``, far from 0
    when the width is comparable to the number of examples. Song et al.'s unbiased HSIC (a
    U-statistic; zero-diagonal Gram matrices) removes that bias; Kornblith et al.'s feature-space
    form needs only ``||Xᵀ Y||_F²``, the rows' squared norms and their sums, so it costs ``O(n d²)``
    like `cka` (or ``O(n² d)`` through Gram matrices when ``d > n``). Computed in float64.

    Args:
        x: ``(n, d1)`` representation, ``n ≥ 4``.
        y: ``(n, d2)`` representation of the same examples, in the same order.

    Returns:
        The debiased linear CKA, a float in [-1, 1] (slightly negative values mean "no similarity").

    Raises:
        InputError: as `cka`, ``n < 4``, or a representation whose debiased self-similarity is not
            positive (too few examples for its spread).

    Example:
        >>> import torch
        >>> x = torch.randn(2000, 50, generator=torch.Generator().manual_seed(0))
        >>> y = torch.randn(2000, 50, generator=torch.Generator().manual_seed(1))
        >>> round(cka(x, y), 3), abs(debiased_cka(x, y)) < 0.002, round(debiased_cka(x, 2 * x + 1), 6)
        (0.025, True, 1.0)

    References:
        Song, Smola, Gretton, Bedo and Borgwardt, "Feature Selection via Dependence Maximization",
        JMLR 2012; Nguyen, Raghu and Kornblith, "Do Wide and Deep Networks Learn the Same Things?",
        ICLR 2021; Kornblith et al., ICML 2019 (the feature-space form, their reference code).
    """
    xt, yt, _, _ = _pair(x, y, "debiased_cka", min_rows=4)
    rx = _Centered.of(_center(xt, "x", "debiased_cka"))
    ry = _Centered.of(_center(yt, "y", "debiased_cka"))
    n = xt.shape[0]
    rows_x, rows_y = rx.row_sqnorms(), ry.row_sqnorms()

    def unbiased(dot: float, rows_a: Tensor, rows_b: Tensor) -> float:
        # n(n-3) · HSIC_u of centered features (Kornblith et al.'s _debiased_dot_product_similarity_helper)
        return (dot - n / (n - 2) * float(rows_a @ rows_b)
                + float(rows_a.sum()) * float(rows_b.sum()) / ((n - 1) * (n - 2)))

    self_x = unbiased(rx.self_term(), rows_x, rows_x)
    self_y = unbiased(ry.self_term(), rows_y, rows_y)
    for value, name in ((self_x, "x"), (self_y, "y")):
        if not value > 0.0:
            raise InputError(f"debiased_cka: the debiased self-similarity of {name} is {value:.3g} (not positive) "
                             f"with n = {n} examples; use more examples.")
    value = unbiased(rx.cross(ry), rows_x, rows_y) / math.sqrt(self_x * self_y)
    return min(max(value, -1.0), 1.0)


def kernel_cka(x: Tensor | np.ndarray, y: Tensor | np.ndarray, *, bandwidth: float = 1.0,
               debiased: bool = False) -> float:
    """CKA with Gaussian (RBF) kernels whose width is ``bandwidth`` times the median distance.

    ``K_ij = exp(-||x_i − x_j||² / (2 σ²))`` with ``σ² = bandwidth² · median_ij ||x_i − x_j||²``
    (the median over all ``n²`` pairs, diagonal included, as Kornblith et al.'s ``gram_rbf``), the
    same for ``y`` with its own median; then ``<HKH, HLH>_F / (||HKH||_F ||HLH||_F)``, or the
    unbiased-HSIC form with ``debiased=True``. Invariant to orthogonal maps, isotropic scaling and
    translation of either side (distances and their median scale together). Costs ``O(n² (d + 1))``
    time and two ``n × n`` float64 matrices: for modest ``n`` only.

    Args:
        x: ``(n, d1)`` representation, ``n ≤ MAX_KERNEL_ROWS`` (5000).
        y: ``(n, d2)`` representation of the same examples.
        bandwidth: σ as a multiple of the median distance (Kornblith et al. use 0.2 to 0.8 and 1).
        debiased: use the unbiased HSIC estimator (needs ``n ≥ 4``).

    Returns:
        The RBF CKA, a float in [0, 1] (in [-1, 1] when debiased).

    Raises:
        InputError: as `cka`, ``n`` above ``MAX_KERNEL_ROWS``, ``bandwidth`` not a positive finite
            number, or a representation where most pairs of examples coincide (median distance 0).

    Example:
        >>> import torch
        >>> x = torch.randn(300, 5, generator=torch.Generator().manual_seed(0))
        >>> rotation = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(1)))[0]
        >>> round(kernel_cka(x, 3 * x @ rotation + 1), 6), kernel_cka(x, x ** 2) < cka(x, x ** 2) + 0.5
        (1.0, True)

    References:
        Kornblith, Norouzi, Lee and Hinton, "Similarity of Neural Network Representations Revisited",
        ICML 2019; Gretton, Bousquet, Smola and Schölkopf, "Measuring Statistical Dependence with
        Hilbert-Schmidt Norms", ALT 2005.
    """
    bandwidth = check_float("kernel_cka: bandwidth", bandwidth)
    if not (bandwidth > 0.0 and math.isfinite(bandwidth)):
        raise InputError(f"kernel_cka: bandwidth is σ as a multiple of the median distance; pass a positive "
                         f"finite number, got {bandwidth!r}.")
    xt, yt, _, _ = _pair_native(x, y, "kernel_cka", min_rows=4 if debiased else 2)
    if xt.shape[0] > MAX_KERNEL_ROWS:
        raise InputError(f"kernel_cka keeps n × n matrices and takes at most {MAX_KERNEL_ROWS} examples, got "
                         f"{xt.shape[0]}; pass a random subset of the rows (the same rows of x and y).")
    xt, yt, _, _ = _pair(xt, yt, "kernel_cka", min_rows=4 if debiased else 2)
    k = _centered_gram(_rbf_gram(_center(xt, "x", "kernel_cka"), bandwidth, "x"), debiased)
    l_ = _centered_gram(_rbf_gram(_center(yt, "y", "kernel_cka"), bandwidth, "y"), debiased)
    self_x, self_y = _sqnorm(k), _sqnorm(l_)
    for value, name in ((self_x, "x"), (self_y, "y")):
        if not value > 0.0:
            raise InputError(f"kernel_cka: the centered kernel of {name} is zero (its examples are all alike "
                             "at this bandwidth); raise the bandwidth or check the site.")
    value = float((k * l_).sum()) / math.sqrt(self_x * self_y)
    return min(max(value, -1.0 if debiased else 0.0), 1.0)


def _rbf_gram(centered: Tensor, bandwidth: float, name: str) -> Tensor:
    """``exp(-D / (2 bandwidth² median(D)))`` for the squared distances ``D`` (float64, ``n × n``)."""
    sq = centered.square().sum(1)
    dist = (sq[:, None] + sq[None, :]).sub_(centered @ centered.T, alpha=2.0).clamp_(min=0.0)
    dist.fill_diagonal_(0.0)
    flat = dist.flatten()
    half = flat.numel() // 2  # numpy's median (Kornblith's code): the mean of the middle two for an even count
    median = float(flat.kthvalue(half + 1).values)
    if flat.numel() % 2 == 0:
        median = 0.5 * (median + float(flat.kthvalue(half).values))
    if median == 0.0:
        raise InputError(f"kernel_cka: the median squared distance between examples of {name} is 0 (most "
                         "examples coincide), so the RBF width is undefined; deduplicate the examples.")
    return dist.div_(-2.0 * bandwidth**2 * median).exp_()


def _centered_gram(gram: Tensor, debiased: bool) -> Tensor:
    """``H K H``, or with ``debiased`` the U-statistic centering (zero diagonal; Kornblith et al.'s code)."""
    n = gram.shape[0]
    if not debiased:
        means = gram.mean(0)
        return gram - means[:, None] - means[None, :] + means.mean()
    gram = gram.clone()
    gram.fill_diagonal_(0.0)
    means = gram.sum(0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    gram -= means[:, None]
    gram -= means[None, :]
    gram.fill_diagonal_(0.0)
    return gram
