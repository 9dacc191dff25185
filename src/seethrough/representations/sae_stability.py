"""Seed stability of sparse autoencoders: the share of latents two dictionaries have in common.

Representations / dictionary learning (survey §5.3). Paulo & Belrose (2025) found only about 30%
of latents shared between SAEs trained with different seeds; `shared_latents` measures it by a
one-to-one (Hungarian) matching of the two decoders' unit rows on cosine similarity.
"""

from __future__ import annotations

import numpy as np

from ..core.checks import check_float
from .sae import SparseAutoencoder

__all__ = ["shared_latents"]


def shared_latents(a: SparseAutoencoder, b: SparseAutoencoder, *, threshold: float = 0.7) -> float:
    """The fraction of ``a``'s latents matched one-to-one to a latent of ``b`` with decoder cosine ≥ ``threshold``.

    The matching maximises the summed cosine similarity (``scipy.optimize.linear_sum_assignment``);
    with fewer latents in ``b`` the unmatched ones of ``a`` count as not shared.

    Raises:
        NotFittedError: either SAE is not fitted. InputError: their widths differ, or a bad threshold.

    Example:
        >>> import torch
        >>> x = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
        >>> sae = SparseAutoencoder(16, k=2, max_epochs=2).fit(x)
        >>> shared_latents(sae, sae)
        1.0

    References:
        Paulo & Belrose 2025, "Sparse autoencoders trained on the same data learn different features".
    """
    from scipy.optimize import linear_sum_assignment

    from ..core.errors import InputError

    check_float("threshold", threshold, at_least=-1.0, at_most=1.0)
    a._check_fitted()
    b._check_fitted()
    if a.decoder_.shape[1] != b.decoder_.shape[1]:
        raise InputError(f"the SAEs read different widths ({a.decoder_.shape[1]} and {b.decoder_.shape[1]}); "
                         "compare SAEs trained at the same site.")
    cos = (a.decoder_.double() @ b.decoder_.double().T).numpy()
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return float(np.sum(cos[rows, cols] >= threshold) / cos.shape[0])
