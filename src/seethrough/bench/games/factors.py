"""Game: disentanglement metrics against known factors (Representations / disentanglement).

A sanity game for `dci`, `mig` and `sap`: each case generates five known factors (`zoo.factors`: shape
and scale discrete, x, y and rotation continuous) and representations of them whose
disentanglement is known in advance: the factors themselves (perfectly disentangled: DCI
disentanglement and completeness must reach 0.95), a random rotation of the standardised factors
(entangled: the metrics' chance level), FastICA of a linear mixture (recovers the factors up to
sign and scale), and PCA and FastICA of a nonlinear mixture (partly entangled). Every
representation is also scored after a planted random rotation: ``rotation_drop`` is its DCI
disentanglement minus that of its rotated copy (large for a disentangled code, about 0 for an
entangled one). Calibrated on seeds 100 and 101; the bench scores seeds 0, 1, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...representations.disentanglement import dci, mig, sap
from ..zoo import derive_seed
from ..zoo.factors import FACTOR_NAMES, generated_factors
from .base import Game, Metric, register

__all__ = ["FactorsPlanted", "FactorsAnswer"]


@dataclass(frozen=True, eq=False)
class FactorsPlanted:
    """The factors, their linear and nonlinear mixtures, and the planted rotations."""

    factors: np.ndarray
    linear: np.ndarray
    nonlinear: np.ndarray
    rotation: np.ndarray  # (5, 5) orthogonal: the "rotation" representation
    control: np.ndarray  # (5, 5) orthogonal: the rotation applied to every answer for rotation_drop


@dataclass(frozen=True, eq=False)
class FactorsAnswer:
    """A representation: ``(n, 5)`` codes, one row per example."""

    codes: np.ndarray


def _orthogonal(seed: int, stream: str) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(derive_seed(seed, stream)).standard_normal((5, 5)))
    return q * np.sign(np.diag(r))  # Haar-distributed


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "n": 1000 if quick else 3000}]


def _build(case: Mapping[str, Any]) -> FactorsPlanted:
    g = generated_factors(case["seed"], n=case["n"])
    return FactorsPlanted(g.factors, g.linear, g.nonlinear, _orthogonal(case["seed"], "rotation"),
                          _orthogonal(case["seed"], "control"))


def _standardised(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / x.std(0)


def _factors(planted: FactorsPlanted, generator: torch.Generator) -> FactorsAnswer:
    return FactorsAnswer(_standardised(planted.factors))


def _rotation(planted: FactorsPlanted, generator: torch.Generator) -> FactorsAnswer:
    return FactorsAnswer(_standardised(planted.factors) @ planted.rotation)


def _ica(observed: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import FastICA

    return FastICA(n_components=5, whiten="unit-variance", max_iter=1000, random_state=0).fit_transform(observed)


def _ica_linear(planted: FactorsPlanted, generator: torch.Generator) -> FactorsAnswer:
    return FactorsAnswer(_ica(planted.linear))


def _ica_nonlinear(planted: FactorsPlanted, generator: torch.Generator) -> FactorsAnswer:
    return FactorsAnswer(_ica(planted.nonlinear))


def _pca_nonlinear(planted: FactorsPlanted, generator: torch.Generator) -> FactorsAnswer:
    from sklearn.decomposition import PCA

    return FactorsAnswer(PCA(n_components=5).fit_transform(planted.nonlinear))


def _score(answer: FactorsAnswer, planted: FactorsPlanted) -> dict[str, float]:
    result = dci(answer.codes, planted.factors)
    rotated = dci(_standardised(answer.codes) @ planted.control, planted.factors)
    return {"dci_disentanglement": result.disentanglement, "dci_completeness": result.completeness,
            "dci_informativeness": result.informativeness, "mig": mig(answer.codes, planted.factors),
            "sap": sap(answer.codes, planted.factors),
            "rotation_drop": result.disentanglement - rotated.disentanglement}


GAME = register(Game(
    name="known-factors",
    item="Representations / disentanglement (DCI, MIG, SAP)",
    description=(f"Five generated factors ({', '.join(FACTOR_NAMES)}; the first two discrete) and representations "
                 "of known disentanglement: the factors themselves (must score ≥ 0.95 on DCI disentanglement and "
                 "completeness), a random rotation of them (chance), FastICA of a linear mixture, PCA and FastICA "
                 "of a nonlinear mixture. DCI uses gradient-boosted trees; MIG is in nats on 20 equal-width bins; "
                 "SAP uses the disentanglement_lib score matrix; rotation_drop is DCI disentanglement minus that after a "
                 "planted random rotation."),
    metrics=(
        Metric("dci_disentanglement", chance=0.3, bar=0.95,
               description="Eastwood & Williams' disentanglement (chance: the random rotation, 0.30 and 0.32 on the "
                           "calibration seeds 100 and 101)"),
        Metric("dci_completeness", chance=0.3, bar=0.95,
               description="Eastwood & Williams' completeness (chance: the random rotation, 0.30 and 0.32)"),
        Metric("dci_informativeness", chance=0.1, bar=0.9,
               description="held-out accuracy (discrete factors) or R² (continuous), mean over factors (chance: "
                           "guessing, 1/3 and 1/6 for the discrete factors, R² 0 for the others)"),
        Metric("mig", chance=0.1, bar=0.9,
               description="mutual information gap over factor entropy, nats (chance: the random rotation, 0.07 "
                           "and 0.10; the factors themselves give 0.95, not 1, from the plug-in MI's bias)"),
        Metric("sap", chance=0.2, bar=0.7,
               description="Kumar et al.'s separated attribute predictability (chance: the random rotation, 0.17 "
                           "and 0.12 on the calibration seeds; the factors themselves give 0.75, not 1, because a "
                           "regularised linear classifier on one code separates only a third of the 6-valued "
                           "scale factor's values)"),
        Metric("rotation_drop", chance=0.0, bar=0.4,
               description="DCI disentanglement minus that of the representation after a random rotation "
                           "(the factors: 0.57 and 0.78 on the calibration seeds)"),
    ),
    cases=_cases,
    build=_build,
    methods={"factors": _factors, "ica-linear": _ica_linear, "pca-nonlinear": _pca_nonlinear,
             "ica-nonlinear": _ica_nonlinear, "rotation": _rotation},
    score=_score,
    baselines=frozenset({"ica-linear", "pca-nonlinear", "ica-nonlinear", "rotation"}),
    order=161,
))
