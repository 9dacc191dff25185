"""Game: layer correspondence (Representations / representation comparison).

Each case is two `zoo.correspondence.staged_cnn` networks of one architecture trained from
different seeds (zoo seeds ``1000 + 2·seed`` and ``1000 + 2·seed + 1``; zoo seeds 0-5 were used
to calibrate the architecture, see ``zoo.correspondence.WIDTHS``) and a functionally identical
twin of the first (`permuted_twin`: every hidden stage's units permuted, the next layer
compensated). A method is a similarity index; for every stage of network A it picks the most
similar stage of network B (`SimilarityMatrix.best_match`). Scored: ``depth_accuracy``, the
fraction of A's stages matched to the same depth (chance 1/5, bar 0.9; Kornblith et al. report
linear CKA 99.3%, PWCCA 11.1%, CCA 1.4% on CIFAR-10 CNNs), and ``twin_error``, the largest change
of the index when A is replaced by its twin (bar 1e-6). Activations are computed in float64 on
``n_examples`` of scikit-learn's 8×8 digits: all 1797 in full mode, the first `QUICK_EXAMPLES`
(250) held-out digits in quick mode (on the calibration pairs of zoo seeds 0-5, 250 and 500
digits gave the same depth accuracy for linear, debiased CKA and Procrustes; RBF CKA lost one
stage of 15 at 250). Each network's stages are captured once per case and every index is computed
from those values (the case's networks are kept while its methods run, so the first method's
unit time includes loading them). The baseline "random index" draws a uniform matrix.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ...core import Site, capture
from ...representations.similarity import INDICES, SimilarityMatrix
from ..zoo.correspondence import STAGES, digits8, permuted_twin, staged_cnn
from .base import Game, Metric, register

__all__ = ["MODEL_SEED_OFFSET", "QUICK_EXAMPLES", "INDEX_OF_METHOD", "RANDOM_TWIN_ERROR", "CorrespondencePlanted"]

#: Scored on zoo seeds 1000 + 2·seed and 1000 + 2·seed + 1; zoo seeds 0-5 calibrated the widths.
MODEL_SEED_OFFSET = 1000
#: Examples of a quick case (the first held-out digits); full cases use all 1797.
QUICK_EXAMPLES = 250
#: Each method's index in `seethrough.representations.INDICES`.
INDEX_OF_METHOD = {"linear CKA": "cka", "debiased CKA": "debiased_cka", "RBF CKA": "rbf_cka", "PWCCA": "pwcca",
                   "SVCCA": "svcca", "CCA (mean rho)": "cca", "Procrustes": "procrustes"}
#: The random index's expected twin error: E max over 5 stages of |U − U'| for independent uniforms,
#: ∫₀¹ 1 − (1 − (1 − t)²)⁵ dt = 0.6306.
RANDOM_TWIN_ERROR = 0.6306


@dataclass(frozen=True, eq=False)
class CorrespondencePlanted:
    """Two float64 networks of one architecture, the first one's twin, and the inputs.

    ``values`` (computed on first use, then kept) holds each network's stages on ``inputs``,
    flattened to ``(n, width)``: one forward pass per network, shared by every index.
    """

    model_a: nn.Module
    model_b: nn.Module
    twin_a: nn.Module
    inputs: Tensor

    @functools.cached_property
    def values(self) -> dict[str, dict[str, Tensor]]:
        """``{"a" | "b" | "twin": {stage: (n, width) float64 values}}``."""
        out = {}
        with torch.no_grad():
            for name, model in (("a", self.model_a), ("b", self.model_b), ("twin", self.twin_a)):
                out[name] = {s: v.flatten(1) for s, v in capture(model, self.inputs, list(STAGES)).items()}
        return out


@dataclass(frozen=True)
class CorrespondenceAnswer:
    """Per stage of A, the chosen stage of B; and per stage, |S(A_k, B_k) − S(twin_k, B_k)|."""

    matches: tuple[int, ...]
    twin_changes: tuple[float, ...]


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "model_a": MODEL_SEED_OFFSET + 2 * seed, "model_b": MODEL_SEED_OFFSET + 2 * seed + 1,
             "n_examples": QUICK_EXAMPLES if quick else 1797}]


def _build(case: Mapping[str, Any]) -> CorrespondencePlanted:
    return _planted(case["model_a"], case["model_b"], case["n_examples"])


@functools.lru_cache(maxsize=1)
def _planted(seed_a: int, seed_b: int, n_examples: int) -> CorrespondencePlanted:
    """One case's networks and inputs, kept while its methods run (they run one after another), so
    each network's activations are computed once per case, not once per index."""
    a, _ = staged_cnn(seed_a)
    b, _ = staged_cnn(seed_b)
    twin, _ = permuted_twin(a, seed_a)  # type: ignore[arg-type]  # staged_cnn builds a StagedCNN
    x = torch.cat([digits8("test")[0], digits8("train")[0]])[:n_examples].double()
    # staged_cnn returns a fresh copy of the cached weights, so converting it in place is safe.
    return CorrespondencePlanted(a.double(), b.double(), twin.double(), x)


def _index_method(index: str) -> Callable[[CorrespondencePlanted, torch.Generator], CorrespondenceAnswer]:
    fn = INDICES[index]

    def method(planted: CorrespondencePlanted, generator: torch.Generator) -> CorrespondenceAnswer:
        va, vb, vt = planted.values["a"], planted.values["b"], planted.values["twin"]
        values = torch.tensor([[fn(va[sa], vb[sb]) for sb in STAGES] for sa in STAGES], dtype=torch.float64)
        sites = tuple(Site(s) for s in STAGES)
        matches = SimilarityMatrix(values, sites, sites, index).best_match()
        changes = tuple(abs(fn(vt[s], vb[s]) - float(values[k, k])) for k, s in enumerate(STAGES))
        return CorrespondenceAnswer(tuple(matches.tolist()), changes)

    return method


def _random(planted: CorrespondencePlanted, generator: torch.Generator) -> CorrespondenceAnswer:
    values = torch.rand(len(STAGES), len(STAGES), generator=generator)
    twin = torch.rand(len(STAGES), generator=generator)
    return CorrespondenceAnswer(tuple(values.argmax(1).tolist()),
                                tuple((twin - values.diagonal()).abs().tolist()))


def _score(answer: CorrespondenceAnswer, planted: CorrespondencePlanted) -> dict[str, float]:
    hits = sum(int(m == k) for k, m in enumerate(answer.matches))
    return {"depth_accuracy": hits / len(answer.matches), "twin_error": max(answer.twin_changes)}


GAME = register(Game(
    name="layer-correspondence",
    item="Representations / representation comparison (CKA, CCA family, Procrustes)",
    description=("Two 5-stage CNNs (16×8×8 conv, 32×4×4 conv+pool, 64×2×2 conv+pool, 128 dense, 10 logits) "
                 "trained on the 8×8 digits from different seeds, and a twin of the first with every hidden "
                 "stage's units permuted (same function). Each index matches every stage of A to its most "
                 "similar stage of B; the twin must not change the index (float64 activations)."),
    metrics=(
        Metric("depth_accuracy", chance=1.0 / len(STAGES), bar=0.9,
               description="fraction of A's stages whose most similar stage of B is at the same depth"),
        Metric("twin_error", chance=RANDOM_TWIN_ERROR, bar=1e-6, higher_is_better=False,
               description="max over stages of |S(A_k, B_k) - S(twin(A)_k, B_k)|, twin = A with units permuted; "
                           "chance: the random index's expected value, 0.63"),
    ),
    cases=_cases,
    build=_build,
    methods={**{name: _index_method(index) for name, index in INDEX_OF_METHOD.items()}, "random index": _random},
    score=_score,
    baselines=frozenset({"random index"}),
    order=152,
))
