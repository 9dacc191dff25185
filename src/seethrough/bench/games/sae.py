"""Game: recover a planted sparse dictionary with a sparse autoencoder (Representations / SAEs).

Each case draws synthetic activations from a known dictionary (`zoo.dictionaries`: random unit
directions in 64 dimensions with Zipf-distributed firing, mean L0 8, magnitudes in [0.5, 1.5],
small noise). Methods: TopK, BatchTopK, JumpReLU and ReLU-L1 SAEs with the estimator's defaults;
each returns a dictionary (unit rows) and the codes it gives held-out rows.
Scores: MMCS (each true direction's best cosine with a learned row, averaged), the fraction of
true directions recovered above cosine 0.9, firing F1 (each true direction's best-matching latent
fires where the direction fires) and the explained variance (shown; it does not track quality).
Baselines: a random dictionary, data samples as the dictionary (both encoded by TopK of their
projections) and a random-direction SAE (decoder frozen at random, encoder trained).
Calibrated on data seeds 100 and 101; the bench scores seeds 0, 1, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...representations.sae import SparseAutoencoder
from ..zoo.dictionaries import sparse_dictionary_data
from .base import Game, Metric, register

__all__ = ["DictionaryPlanted", "DictionaryAnswer"]

#: quick: 128 true directions, an SAE of 256 latents on 8,192 rows; full: 512 directions, 1,024
#: latents, 32,768 rows. Every SAE trains to convergence (the estimator's stopping rule): a cap of 30
#: epochs was measured to cut JumpReLU's recovered fraction to 0.41 and ReLU's to 0.28 (they need
#: about 40 and 90 epochs here), while TopK and BatchTopK gained (0.955 and 0.948 recovered);
#: measured with the foreach Adam used before the fused one.
_QUICK = {"n_features": 128, "n_latents": 256, "n_samples": 8192}
_FULL = {"n_features": 512, "n_latents": 1024, "n_samples": 32768}
_N_HELD_OUT = 4096


@dataclass(frozen=True, eq=False)
class DictionaryPlanted:
    """Training rows, held-out rows with their true codes, and the true dictionary."""

    train: Tensor
    held_out: Tensor
    held_out_codes: Tensor
    dictionary: Tensor
    n_latents: int
    k: int


@dataclass(frozen=True, eq=False)
class DictionaryAnswer:
    """A learned dictionary (unit rows) and the codes it gives the held-out rows."""

    decoder: Tensor  # (n_latents, d)
    codes: Tensor  # (n_held_out, n_latents)
    explained_variance: float


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "d": 64, "mean_l0": 8.0, "exponent": 1.0, **(_QUICK if quick else _FULL)}]


def _build(case: Mapping[str, Any]) -> DictionaryPlanted:
    data = sparse_dictionary_data(case["seed"], n_features=case["n_features"], d=case["d"], mean_l0=case["mean_l0"],
                                  exponent=case["exponent"], n_samples=case["n_samples"] + _N_HELD_OUT)
    n = case["n_samples"]
    return DictionaryPlanted(data.activations[:n], data.activations[n:], data.codes[n:], data.dictionary,
                             case["n_latents"], int(round(case["mean_l0"])))


def _explained(planted: DictionaryPlanted, recon: Tensor) -> float:
    x = planted.held_out
    return 1.0 - float(((recon - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def _sae(planted: DictionaryPlanted, train_decoder: bool = True, kind: str = "topk") -> DictionaryAnswer:
    """An SAE with the estimator's defaults (trained to convergence), ``k`` = the planted mean L0."""
    sae = SparseAutoencoder(planted.n_latents, kind=kind, k=planted.k, train_decoder=train_decoder, seed=0)
    sae.fit(planted.train)
    codes = sae.encode(planted.held_out)
    return DictionaryAnswer(sae.decoder_, codes, _explained(planted, sae.decode(codes)))


def _fixed(planted: DictionaryPlanted, rows: Tensor) -> DictionaryAnswer:
    """A fixed dictionary: codes are TopK of the centred rows' projections, decoded as ``codes @ rows + mean``."""
    decoder = rows / rows.norm(dim=1, keepdim=True)
    mean = planted.train.mean(0)
    pre = (planted.held_out - mean) @ decoder.T
    top = pre.topk(planted.k, dim=1)
    codes = torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))
    return DictionaryAnswer(decoder, codes, _explained(planted, codes @ decoder + mean))


def _topk_sae(planted: DictionaryPlanted, generator: torch.Generator) -> DictionaryAnswer:
    return _sae(planted, train_decoder=True)


def _batchtopk_sae(planted: DictionaryPlanted, generator: torch.Generator) -> DictionaryAnswer:
    return _sae(planted, kind="batchtopk")


def _jumprelu_sae(planted: DictionaryPlanted, generator: torch.Generator) -> DictionaryAnswer:
    return _sae(planted, kind="jumprelu")


def _relu_sae(planted: DictionaryPlanted, generator: torch.Generator) -> DictionaryAnswer:
    return _sae(planted, kind="relu")


def _random_direction_sae(planted: DictionaryPlanted, generator: torch.Generator) -> DictionaryAnswer:
    return _sae(planted, train_decoder=False)


def _random_dictionary(planted: DictionaryPlanted, generator: torch.Generator) -> DictionaryAnswer:
    return _fixed(planted, torch.randn(planted.n_latents, planted.train.shape[1], generator=generator))


def _data_samples(planted: DictionaryPlanted, generator: torch.Generator) -> DictionaryAnswer:
    rows = planted.train[torch.randperm(planted.train.shape[0], generator=generator)[:planted.n_latents]]
    return _fixed(planted, rows - planted.train.mean(0))


def _score(answer: DictionaryAnswer, planted: DictionaryPlanted) -> dict[str, float]:
    cos = planted.dictionary @ answer.decoder.T  # (n_features, n_latents)
    best = cos.max(1)
    truth = planted.held_out_codes > 0
    fired = truth.any(0)
    predicted = answer.codes[:, best.indices] > 0  # each true direction's best-matching latent
    hits = (predicted & truth).sum(0).float()
    f1 = 2 * hits / (predicted.sum(0) + truth.sum(0)).clamp_min(1)
    return {"mmcs": float(best.values.mean()), "recovered": float((best.values > 0.9).float().mean()),
            "firing_f1": float(f1[fired].mean()), "explained_variance": answer.explained_variance}


GAME = register(Game(
    name="sae-dictionary",
    item="Representations / sparse autoencoders",
    description=("Synthetic activations from a planted dictionary (random unit directions in 64 dimensions; "
                 "quick: 128 directions, SAE of 256 latents, 8,192 rows; full: 512 directions, 1,024 latents, "
                 "32,768 rows; trained to convergence) with Zipf firing (exponent 1), mean L0 8. TopK, BatchTopK, "
                 "JumpReLU and ReLU-L1 SAEs return a dictionary and held-out codes; scored by MMCS, the fraction of "
                 "true directions above cosine 0.9, firing F1 of each direction's best latent, and explained "
                 "variance (shown, not a quality measure). Baselines: random dictionary, data samples as the "
                 "dictionary, a random-direction SAE (decoder frozen at random)."),
    metrics=(
        Metric("mmcs", chance=0.35, bar=0.9,
               description="mean over true directions of the best cosine with a learned row (chance: a random "
                           "dictionary: 0.34 on the calibration seeds)"),
        Metric("recovered", chance=0.0, bar=0.8, description="fraction of true directions with a row above cosine 0.9"),
        Metric("firing_f1", chance=0.18, bar=0.3,
               description="F1 of each true direction's best-matching latent firing against the direction firing "
                           "(held-out rows); chance: the random dictionary (0.18), bar: the random-direction SAE's 0.17 + 0.1, "
                           "both measured on the calibration seeds 100 and 101"),
        Metric("explained_variance", chance=0.0, bar=0.5,
               description="1 − held-out residual / variance; reported, it does not track dictionary quality"),
    ),
    cases=_cases,
    build=_build,
    methods={"topk-sae": _topk_sae, "batchtopk-sae": _batchtopk_sae, "jumprelu-sae": _jumprelu_sae,
             "relu-sae": _relu_sae, "random-direction-sae": _random_direction_sae,
             "random-dictionary": _random_dictionary, "data-samples": _data_samples},
    score=_score,
    baselines=frozenset({"random-direction-sae", "random-dictionary", "data-samples"}),
    order=160,
))
