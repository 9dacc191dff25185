"""The zoo's image data: scikit-learn's bundled 8×8 digits, upsampled to 16×16.

A fixed, seeded, stratified 75/25 train/test split, so every zoo classifier is trained and
scored on the same examples on every machine. No download: the digits ship with scikit-learn.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int64
from torch import Tensor

from seethrough.core import InputError

__all__ = ["digits16"]

_SPLIT_SEED = 20240516  # fixed forever: changing it changes every cached zoo model's data
_TEST_FRACTION = 0.25


@functools.lru_cache(maxsize=1)
def _load_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read-only numpy arrays per split; recomputed at most once per process."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / np.float32(16.0)).repeat(2, axis=1).repeat(2, axis=2)[:, None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(_SPLIT_SEED)
    is_test = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        n_test = int(round(_TEST_FRACTION * len(members)))
        is_test[rng.permutation(members)[:n_test]] = True
    out = {"train": (x[~is_test], y[~is_test]), "test": (x[is_test], y[is_test])}
    for arrays in out.values():
        for a in arrays:
            a.setflags(write=False)
    return out


def digits16(split: Literal["train", "test"]) -> tuple[Float[Tensor, "batch 1 16 16"], Int64[Tensor, " batch"]]:
    """scikit-learn's digits in [0, 1] as ``(N, 1, 16, 16)`` float32 images and int64 labels.

    Each 8×8 image is scaled from 0..16 to [0, 1] and upsampled to 16×16 by repeating every
    pixel 2×2 (nearest neighbour). The 1797 examples are split 75/25, stratified by class,
    with a fixed seed: 1347 train and 450 test examples, always the same ones.

    Args:
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(x, y)``: fresh tensors (callers may modify them freely).

    Raises:
        InputError: ``split`` is neither ``"train"`` nor ``"test"``.

    Example:
        >>> x, y = digits16("test")
        >>> tuple(x.shape), x.dtype, y.dtype
        ((450, 1, 16, 16), torch.float32, torch.int64)
    """
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}.")
    x, y = _load_split()[split]
    return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())
