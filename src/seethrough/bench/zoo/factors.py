"""Generated factors of variation and observations that mix them: the answer key of the DCI/MIG game.

Five independent factors in the spirit of dSprites: ``shape`` (3 values) and ``scale`` (6 values)
are discrete (integers), ``x``, ``y`` and ``rotation`` continuous (uniform in [0, 1]).
Observations are 20-dimensional mixtures of the standardised factors: a *linear* mixture (a random
Gaussian matrix) or a *nonlinear* one (a random two-layer tanh network). `factor_images` renders
the same five factors as small dSprites-like images (a square, an ellipse or a triangle of six sizes
at any position and a rotation of up to 40 degrees). Generated from the seed in milliseconds
(nothing is trained, so nothing is cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._seeding import derive_seed
from .cache import cached

__all__ = ["FACTOR_NAMES", "GeneratedFactors", "generated_factors", "factor_images", "MAX_ROTATION", "factor_vae"]

FACTOR_NAMES = ("shape", "scale", "x", "y", "rotation")
MAX_ROTATION = 40.0  # degrees; below every shape's symmetry angle (square 90, triangle 120, ellipse 180)


@dataclass(frozen=True, eq=False)
class GeneratedFactors:
    """The factors and two observation sets that mix them."""

    factors: np.ndarray  # (n, 5): shape and scale integers, x, y, rotation in [0, 1]
    linear: np.ndarray  # (n, n_observed): standardised factors times a random matrix
    nonlinear: np.ndarray  # (n, n_observed): a random tanh network of the standardised factors


def generated_factors(seed: int, n: int = 1000, n_observed: int = 20) -> GeneratedFactors:
    """``n`` rows of the five factors and their linear and nonlinear mixtures.

    Example:
        >>> g = generated_factors(0, n=10)
        >>> g.factors.shape, g.nonlinear.shape, sorted(set(g.factors[:, 0].tolist())) <= [0.0, 1.0, 2.0]
        ((10, 5), (10, 20), True)
    """
    rng = np.random.default_rng(derive_seed(seed, "factors"))
    factors = np.column_stack([rng.integers(0, 3, n), rng.integers(0, 6, n), rng.uniform(size=(n, 3))]).astype(float)
    z = (factors - factors.mean(0)) / factors.std(0)
    mix = np.random.default_rng(derive_seed(seed, "mixture"))
    linear = z @ mix.standard_normal((5, n_observed))
    hidden = np.tanh(z @ mix.standard_normal((5, 32)))
    nonlinear = np.tanh(hidden @ mix.standard_normal((32, n_observed)) / np.sqrt(32))
    return GeneratedFactors(factors, linear, nonlinear)


def _inside(shape: np.ndarray, half: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether the points ``(u, v)`` (in each example's own frame) fall inside its shape."""
    square = (np.abs(u) <= half) & (np.abs(v) <= half)
    ellipse = (u / half) ** 2 + (v / (0.6 * half)) ** 2 <= 1.0
    triangle = (v >= -half / 2) & (v <= half - np.sqrt(3.0) * np.abs(u))  # equilateral, circumradius ``half``
    return np.where(shape == 0, square, np.where(shape == 1, ellipse, triangle))


def factor_images(seed: int, n: int = 3000, size: int = 20, supersample: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, 1, size, size)`` in [0, 1] of the five factors, and the factors ``(n, 5)``.

    ``shape`` 0 square, 1 ellipse, 2 triangle; ``scale`` 0-5 sets the half-size (0.10 to 0.25 of the
    image); ``x`` and ``y`` in [0, 1] move the centre across the middle half of the image; ``rotation``
    in [0, 1] turns the shape by up to `MAX_ROTATION` degrees. Each pixel is the covered fraction of
    ``supersample``² sub-pixels, so position and rotation change the image smoothly.

    Example:
        >>> images, factors = factor_images(0, n=4)
        >>> images.shape, factors.shape, float(images.min()) >= 0.0 and float(images.max()) <= 1.0
        ((4, 1, 20, 20), (4, 5), True)
    """
    rng = np.random.default_rng(derive_seed(seed, "factor-images"))
    factors = np.column_stack([rng.integers(0, 3, n), rng.integers(0, 6, n), rng.uniform(size=(n, 3))]).astype(float)
    grid = (np.arange(size * supersample) + 0.5) / (size * supersample)
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    images = np.empty((n, 1, size, size), dtype=np.float32)
    for start in range(0, n, 256):
        f = factors[start:start + 256]
        shape, half = f[:, 0, None, None], (0.10 + 0.03 * f[:, 1])[:, None, None]
        dx, dy = gx[None] - (0.25 + 0.5 * f[:, 2, None, None]), gy[None] - (0.25 + 0.5 * f[:, 3, None, None])
        angle = np.deg2rad(MAX_ROTATION * f[:, 4])[:, None, None]
        u, v = np.cos(angle) * dx + np.sin(angle) * dy, -np.sin(angle) * dx + np.cos(angle) * dy
        covered = _inside(shape, half, u, -v).astype(np.float32)  # -v: image rows grow downwards
        images[start:start + 256, 0] = covered.reshape(len(f), size, supersample, size, supersample).mean((2, 4))
    return images, factors


def factor_vae(seed: int, *, beta: float, n: int = 3000, n_latents: int = 6, n_steps: int = 2000, hidden: int = 128,
               lr: float = 3e-3) -> tuple[Any, dict[str, Any]]:
    """A `BetaVAE` trained on ``factor_images(seed, n)``; cached by config. Returns ``(vae, metadata)``."""
    import torch

    from ...representations.vae import BetaVAE, train_beta_vae

    config = {"seed": seed, "beta": beta, "n": n, "n_latents": n_latents, "n_steps": n_steps, "hidden": hidden,
              "lr": lr}

    def build() -> BetaVAE:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "factor-vae"))
            return BetaVAE((1, 20, 20), n_latents, hidden)

    def train(vae: BetaVAE) -> dict[str, Any]:
        images, _ = factor_images(seed, n=n)
        train_beta_vae(torch.from_numpy(images), vae=vae, beta=beta, n_steps=n_steps, lr=lr, seed=seed)
        return {"history": vae.history}

    return cached("factor_vae", config, build, train)
