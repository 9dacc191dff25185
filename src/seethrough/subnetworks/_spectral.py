"""Spectral clustering of unit graphs and the weighted layers they are built from (for `partition` and friends).

Shi & Malik's relaxation of the normalised cut: k-means on the top eigenvectors of the normalised
adjacency ``D^-1/2 A D^-1/2`` (scaled back by ``D^-1/2``), with a shortcut for large bipartite graphs.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from ..core.errors import InputError, InputTypeError


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` of every ``nn.Linear`` / ``nn.Conv2d`` in registration order; refuses a model with none."""
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        raise InputError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d; partition needs weighted layers.")
    return layers


BIPARTITE_FROM = 1000  # nodes: from here a bipartite graph's eigenvectors come from its smaller side's Gram matrix


def two_colouring(adjacency: np.ndarray) -> np.ndarray | None:
    """Side (0/1) of each node if the graph is bipartite (no edge inside a side), else None."""
    linked = adjacency != 0
    side = np.full(len(adjacency), -1)
    for start in range(len(adjacency)):
        if side[start] >= 0:
            continue
        side[start], frontier = 0, np.zeros(len(adjacency), dtype=bool)
        frontier[start] = True
        while frontier.any():
            reached = linked[frontier].any(0) & (side < 0)
            colour = 1 - side[np.flatnonzero(frontier)[0]]
            side[reached] = colour
            frontier = reached
    even, odd = side == 0, side == 1
    if linked[np.ix_(even, even)].any() or linked[np.ix_(odd, odd)].any():
        return None
    return side


def top_eigenvectors(normalised: np.ndarray, k: int) -> np.ndarray:
    """The eigenvectors of the ``k`` largest eigenvalues of a symmetric ``normalised`` adjacency.

    A layered network's unit graph is bipartite (edges join odd and even layers only): then
    ``N = [[0, B], [Bᵀ, 0]]``, its eigenvalues are ``±σ`` (the singular values of ``B``) and the
    eigenvector of ``σ`` is ``[u; v] / √2``; the top ``k`` come from the smaller side's Gram matrix,
    much cheaper than the dense eigendecomposition (tests/subnetworks/test_partition.py checks
    both give the same partition).
    """
    import scipy.linalg

    n = normalised.shape[0]
    side = two_colouring(normalised) if n >= BIPARTITE_FROM else None
    if side is not None:
        even, odd = np.flatnonzero(side == 0), np.flatnonzero(side == 1)
        small, large = (odd, even) if len(odd) <= len(even) else (even, odd)
        block = normalised[np.ix_(large, small)]
        if len(small) >= k:
            values, right = scipy.linalg.eigh(block.T @ block, subset_by_index=[len(small) - k, len(small) - 1])
            if values.min() > 1e-12:
                sigma = np.sqrt(values)
                vectors = np.zeros((n, k))
                vectors[small] = right / np.sqrt(2)
                vectors[large] = (block @ right) / sigma / np.sqrt(2)
                return vectors
    return scipy.linalg.eigh(normalised, subset_by_index=[n - k, n - 1])[1]


def spectral_labels(adjacency: np.ndarray, n_modules: int, seed: int) -> np.ndarray:
    """Shi-Malik spectral clustering: k-means on the first generalised eigenvectors of (D - A) x = λ D x."""
    from sklearn.cluster import KMeans

    degree = adjacency.sum(1)
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)), 0.0)
    normalised = adjacency * inv_sqrt[:, None] * inv_sqrt[None, :]
    embedding = top_eigenvectors(normalised, n_modules) * inv_sqrt[:, None]
    return KMeans(n_modules, n_init=10, random_state=seed).fit_predict(embedding)
