"""Generated factors of variation and observations that mix them: the answer key of the DCI/MIG game.

Five independent factors in the spirit of dSprites: ``shape`` (3 values) and ``scale`` (6 values)
are discrete (integers), ``x``, ``y`` and ``rotation`` continuous (uniform in [0, 1]).
Observations are 20-dimensional mixtures of the standardised factors: a *linear* mixture (a random
Gaussian matrix) or a *nonlinear* one (a random two-layer tanh network). Generated from the seed
in milliseconds (nothing is trained, so nothing is cached).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._seeding import derive_seed

__all__ = ["FACTOR_NAMES", "GeneratedFactors", "generated_factors"]

FACTOR_NAMES = ("shape", "scale", "x", "y", "rotation")


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
