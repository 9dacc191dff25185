"""Canonical correlations and the measures built on them (SVCCA, PWCCA), and the Procrustes distance.

Representations / representation comparison. Like `cka`, each compares ``(n, d1)`` and ``(n, d2)``
representations of the same examples in float64 (PWCCA is invariant to permutations and sign flips
of its weighted side's neurons only, not to rotations of that side).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from ..core.checks import check_float
from ..core.errors import InputError
from ._arrays import _center, _pair

__all__ = ["cca_correlations", "svcca", "pwcca", "procrustes"]

def _basis(centered: Tensor, eps: float, keep: float | None = None) -> Tensor:
    """Orthonormal basis ``(n, r)`` of the column space, from the left singular vectors.

    Directions with singular value below ``s_max · max(n, d) · eps`` (``eps`` of the input's own
    dtype, as ``numpy.linalg.matrix_rank``) are dropped: this rank cut replaces the ridge epsilon
    often added to the covariance, so no regularisation biases the correlations. With ``keep``, only
    the top directions explaining that fraction of the variance remain (SVCCA's reduction).
    """
    u, s, _ = torch.linalg.svd(centered, full_matrices=False)
    r = int((s > s[0] * max(centered.shape) * eps).sum())
    if keep is not None:
        variance = s[:r].square()
        explained = variance.cumsum(0) / variance.sum()
        r = min(r, int((explained < keep).sum()) + 1)
    return u[:, :r]


def _bases(x: Tensor | np.ndarray, y: Tensor | np.ndarray, fn: str,
           keep: float | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validated float64 ``x``, ``y`` and orthonormal bases of their centered column spaces."""
    xt, yt, eps_x, eps_y = _pair(x, y, fn)
    ux = _basis(_center(xt, "x", fn), eps_x, keep)
    uy = _basis(_center(yt, "y", fn), eps_y, keep)
    spare = ux.shape[1] + uy.shape[1] - (xt.shape[0] - 1)
    if spare > 0:
        warnings.warn(f"{fn}: x and y span {ux.shape[1]} + {uy.shape[1]} dimensions but centered data of "
                      f"n = {xt.shape[0]} examples has only {xt.shape[0] - 1}, so at least {spare} canonical "
                      "correlation(s) are 1 whatever the data; use many more examples than features "
                      "(or svcca with a smaller keep).", stacklevel=3)
    return xt, yt, ux, uy


def cca_correlations(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> Tensor:
    """Canonical correlations between two representations, sorted in descending order.

    The cosines of the principal angles between the column spaces of the centered ``x`` and ``y``:
    the singular values of ``Uxᵀ Uy`` for orthonormal bases ``Ux``, ``Uy`` (from the SVD). Directions
    below the numerical rank (at the precision of each input's dtype) are dropped instead of adding
    a ridge epsilon, so there are ``min(rank x, rank y)`` correlations.

    Args:
        x: ``(n, d1)`` representation; ``y``: ``(n, d2)`` representation of the same examples.

    Returns:
        float64 tensor of the correlations, in [0, 1], largest first.

    Raises:
        InputError: as `cka`. Warns when ``rank x + rank y > n - 1`` (some correlations are then 1
            whatever the data: CCA needs many more examples than features).

    Example:
        >>> x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
        >>> cca_correlations(x, x @ torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 3.0]]))
        tensor([1.0000, 1.0000, 1.0000], dtype=torch.float64)

    References:
        Hotelling, "Relations between two sets of variates", Biometrika 1936; Björck and Golub,
        "Numerical methods for computing angles between linear subspaces", 1973.
    """
    _, _, ux, uy = _bases(x, y, "cca_correlations")
    return torch.linalg.svdvals(ux.T @ uy).clamp(0.0, 1.0)


def svcca(x: Tensor | np.ndarray, y: Tensor | np.ndarray, *, keep: float = 0.99) -> float:
    """SVCCA: mean canonical correlation after reducing each side to its top singular directions.

    Each centered representation keeps the fewest singular directions that explain ``keep`` of its
    variance (sum of squared singular values); the result is the mean of the canonical correlations
    between the two reduced representations.

    Args:
        x: ``(n, d1)`` representation; ``y``: ``(n, d2)`` representation of the same examples.
        keep: fraction of the variance each side keeps, in (0, 1].

    Returns:
        The mean canonical correlation, a float in [0, 1].

    Raises:
        InputError: as `cka`, or ``keep`` outside (0, 1].

    Example:
        >>> x = torch.randn(500, 10, generator=torch.Generator().manual_seed(0))
        >>> round(svcca(x, 2 * x + 1), 6)
        1.0

    References:
        Raghu, Gilmer, Yosinski and Sohl-Dickstein, "SVCCA: Singular Vector Canonical Correlation
        Analysis for Deep Learning Dynamics and Interpretability", NeurIPS 2017.
    """
    keep = check_float("svcca: keep", keep)
    if not 0.0 < keep <= 1.0:
        raise InputError(f"svcca: keep is the fraction of variance to keep, in (0, 1]; got {keep!r}.")
    _, _, ux, uy = _bases(x, y, "svcca", keep=keep)
    return float(torch.linalg.svdvals(ux.T @ uy).clamp(0.0, 1.0).mean())


def pwcca(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """PWCCA: canonical correlations averaged with weights by how much of one side each accounts for.

    The canonical variates ``h_i`` (orthonormal, ``(n,)`` each) of the side with the lower rank
    (``x`` on ties; its variates span all of it) get the weight ``α_i ∝ Σ_j |⟨h_i, z_j⟩|`` over that
    side's centered feature columns ``z_j``; the result is ``Σ_i α_i ρ_i`` with ``Σ α_i = 1``. Unlike
    the plain mean, directions that carry little of the representation count little. The weights
depend on the weighted side's neuron basis: unlike the other measures here, PWCCA is not invariant
to rotations of that side (only to permutations and sign flips of its neurons).

    Args:
        x: ``(n, d1)`` representation; ``y``: ``(n, d2)`` representation of the same examples.

    Returns:
        The projection-weighted mean canonical correlation, a float in [0, 1].

    Raises:
        InputError: as `cka`.

    Example:
        >>> x = torch.randn(500, 6, generator=torch.Generator().manual_seed(0))
        >>> round(pwcca(x, x @ torch.randn(6, 6, generator=torch.Generator().manual_seed(1))), 6)
        1.0

    References:
        Morcos, Raghu and Bengio, "Insights on representational similarity in neural networks with
        canonical correlation", NeurIPS 2018 (and the google/svcca reference code, which also
        weights by the side with fewer directions).
    """
    xt, yt, ux, uy = _bases(x, y, "pwcca")
    p, rho, qt = torch.linalg.svd(ux.T @ uy, full_matrices=False)
    rho = rho.clamp(0.0, 1.0)
    if ux.shape[1] <= uy.shape[1]:
        variates, features = ux @ p, _center(xt, "x", "pwcca")
    else:
        variates, features = uy @ qt.T, _center(yt, "y", "pwcca")
    variates = variates[:, : rho.shape[0]]
    weights = (variates.T @ features).abs().sum(1)
    return float((weights * rho).sum() / weights.sum())


def procrustes(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Orthogonal Procrustes distance between two representations (0 iff equal up to rotation).

    With ``X``, ``Y`` centered and scaled to unit Frobenius norm, the distance is
    ``min_Q ||X − Y Q||_F² = 2 − 2 ||Xᵀ Y||_*`` over orthogonal ``Q`` (nuclear norm ``||·||_*``, the sum
    of singular values), in [0, 2]. Different widths are compared as if the narrower were padded
    with zero columns. ``sqrt`` of it is a metric; ``arccos(1 − d / 2)`` is Williams et al.'s angular
    shape metric.

    Args:
        x: ``(n, d1)`` representation; ``y``: ``(n, d2)`` representation of the same examples.

    Returns:
        The squared Procrustes distance, a float in [0, 2].

    Raises:
        InputError: as `cka`.

    Example:
        >>> x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
        >>> rotation = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(1)))[0]
        >>> procrustes(x, 5 * x @ rotation - 2) < 1e-12, procrustes(x, torch.randn(50, 4)) > 0.5
        (True, True)

    References:
        Ding, Denain and Steinhardt, "Grounding Representation Similarity with Statistical Testing",
        NeurIPS 2021; Williams, Kunz, Kornblith and Linderman, "Generalized Shape Metrics on Neural
        Representations", NeurIPS 2021; Schönemann, "A generalized solution of the orthogonal
        Procrustes problem", 1966.
    """
    xt, yt, _, _ = _pair(x, y, "procrustes")
    xc, yc = _narrow(_center(xt, "x", "procrustes")), _narrow(_center(yt, "y", "procrustes"))
    xc, yc = xc / torch.linalg.matrix_norm(xc), yc / torch.linalg.matrix_norm(yc)
    nuclear = float(torch.linalg.svdvals(xc.T @ yc).sum())
    return min(max(2.0 - 2.0 * nuclear, 0.0), 2.0)


def _narrow(centered: Tensor) -> Tensor:
    """``U S`` of the thin SVD when ``d > n``: the same Gram matrix (so the same ``||Xᵀ Y||_*``) in n columns."""
    n, d = centered.shape
    if d <= n:
        return centered
    u, s, _ = torch.linalg.svd(centered, full_matrices=False)
    return u * s
