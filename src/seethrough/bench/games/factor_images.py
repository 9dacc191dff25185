"""Game: disentanglement metrics on images with known factors, and trained beta-VAEs between the extremes.

Each case renders dSprites-like images (`zoo.factors.factor_images`: a square, an ellipse or a
triangle, six sizes, any position, a rotation of up to 40 degrees) from five known factors and
scores representations of the images against them with `dci`, `mig` and `sap`: the factors
themselves (perfectly disentangled: DCI disentanglement and completeness must reach 0.95), a
random rotation of the standardised factors (entangled but fully informative), PCA of the pixels,
and the posterior means of a beta-VAE (beta 4) trained on the case's images
(`representations.train_beta_vae`, cached). The trained model is shown, not barred: where it lands
between the factors and the rotation is what the game reports. Measured: on calibration seed
100 the beta-VAE reached DCI disentanglement 0.41 (the rotation 0.26, the factors 1.0); on the scored
quick seeds 0-2 it averaged 0.32 against the rotation's 0.37 (worst 0.23), between the two on
completeness, MIG and SAP but not on disentanglement: it loses the rotation factor entirely (R² 0)
and about half of the shape and scale information, while a rotation of the factors keeps every
factor (informativeness 0.94 against 0.60). VAE settings (2,000 Adam steps at 3e-3, 128 hidden
units, 6 latents; beta 1 and 8 were also tried on seeds 100-101 and gave 0.21 and 0.14) were chosen
on seeds 100 and 101; the bench scores seeds 0, 1, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...representations.disentanglement import dci, mig, sap
from ..zoo import derive_seed
from ..zoo.factors import FACTOR_NAMES, factor_images, factor_vae
from .base import Game, Metric, register

__all__ = ["ImageFactorsPlanted"]


@dataclass(frozen=True, eq=False)
class ImageFactorsPlanted:
    """The images, their factors, the planted rotation, and the case's seed and VAE settings."""

    images: np.ndarray
    factors: np.ndarray
    rotation: np.ndarray
    seed: int
    n: int


@dataclass(frozen=True, eq=False)
class ImageFactorsAnswer:
    """A representation of the images: ``(n, n_codes)``."""

    codes: np.ndarray


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "n": 3000}]


def _build(case: Mapping[str, Any]) -> ImageFactorsPlanted:
    images, factors = factor_images(case["seed"], n=case["n"])
    q, r = np.linalg.qr(np.random.default_rng(derive_seed(case["seed"], "image-rotation")).standard_normal((5, 5)))
    return ImageFactorsPlanted(images, factors, q * np.sign(np.diag(r)), case["seed"], case["n"])


def _standardised(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / x.std(0)


def _factors(planted: ImageFactorsPlanted, generator: torch.Generator) -> ImageFactorsAnswer:
    return ImageFactorsAnswer(_standardised(planted.factors))


def _rotation(planted: ImageFactorsPlanted, generator: torch.Generator) -> ImageFactorsAnswer:
    return ImageFactorsAnswer(_standardised(planted.factors) @ planted.rotation)


def _pca(planted: ImageFactorsPlanted, generator: torch.Generator) -> ImageFactorsAnswer:
    from sklearn.decomposition import PCA

    return ImageFactorsAnswer(PCA(n_components=6, random_state=0).fit_transform(planted.images.reshape(planted.n, -1)))


def _vae(beta: float):
    def method(planted: ImageFactorsPlanted, generator: torch.Generator) -> ImageFactorsAnswer:
        vae, _ = factor_vae(planted.seed, beta=beta, n=planted.n)
        return ImageFactorsAnswer(vae.encode(torch.from_numpy(planted.images)).numpy())
    return method


def _score(answer: ImageFactorsAnswer, planted: ImageFactorsPlanted) -> dict[str, float]:
    result = dci(answer.codes, planted.factors)
    return {"dci_disentanglement": result.disentanglement, "dci_completeness": result.completeness,
            "dci_informativeness": result.informativeness, "mig": mig(answer.codes, planted.factors),
            "sap": sap(answer.codes, planted.factors)}


GAME = register(Game(
    name="known-factors-images",
    item="Representations / disentanglement (beta-VAE, DCI, MIG, SAP)",
    description=(f"dSprites-like 20x20 images of five known factors ({', '.join(FACTOR_NAMES)}; the first two "
                 "discrete). Representations: the factors themselves (must score ≥ 0.95 on DCI disentanglement and "
                 "completeness), a random rotation of them, PCA of the pixels, a VAE (beta 1) and a beta-VAE "
                 "(beta 4) trained on the images (posterior means); the trained models are shown, not barred."),
    metrics=(
        Metric("dci_disentanglement", chance=0.25, bar=0.95,
               description="Eastwood & Williams' disentanglement (chance: the random rotation of the factors, 0.26 "
                           "and 0.23 on the calibration seeds 100 and 101)"),
        Metric("dci_completeness", chance=0.25, bar=0.95,
               description="Eastwood & Williams' completeness (chance: the random rotation, 0.26 and 0.24)"),
        Metric("dci_informativeness", chance=0.1, bar=0.9,
               description="held-out accuracy (discrete factors) or R² (continuous), mean over factors"),
        Metric("mig", chance=0.1, bar=0.9,
               description="mutual information gap over factor entropy, nats (chance: the rotation, 0.12 and 0.09)"),
        Metric("sap", chance=0.15, bar=0.7,
               description="separated attribute predictability (chance: the rotation, 0.14 and 0.15; the factors "
                           "reach about 0.75, see `sap`)"),
    ),
    cases=_cases,
    build=_build,
    methods={"factors": _factors, "rotation": _rotation, "pca-pixels": _pca, "beta-vae": _vae(4.0)},
    score=_score,
    baselines=frozenset({"rotation", "pca-pixels", "beta-vae"}),
    order=162,
))
