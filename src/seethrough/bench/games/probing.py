"""Game: decodable but unused (Representations / probes with control tasks and erasure).

Each case is a token model (`zoo.probing.trained_category_model`) whose task needs each token's
hidden category, plus planted token properties that are exactly linearly decodable at ``embed``
but wired to nothing (a masked layer; the zoo measures the ablation change, 0). Methods probe
every property at ``embed`` with a per-token control task and give each a "used" score. Scored:
the selectivity of the linear probe on the used category (bar 15 points) and, per case, the
AUROC of the used scores with the category as the positive and the planted properties as the
negatives (chance 0.5, bar 0.9). "probe+erasure" scores "used" by the behaviour change of LEACE
erasure, "probe+steering" by the change of a 2-sd step along the linear probe's direction. The baseline "probe-only" scores "used" by selectivity alone,
so it calls every decodable property used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ...evidence.ranks import auroc
from ...representations.erasure import erase
from ...representations.probes import probe
from ...representations.steering import steer
from ..zoo import generator
from ..zoo.probing import category_task, trained_category_model
from .base import Game, Metric, register

__all__ = ["MODEL_SEED_OFFSET"]

#: Scored on zoo seeds 1000 + seed; seeds 0 and 1 were used to develop the game (no threshold is tuned).
MODEL_SEED_OFFSET = 1000
N_UNUSED = 4


@dataclass(frozen=True, eq=False)
class ProbingPlanted:
    """One case: the model, probing inputs, and each property's per-position labels (the first is used)."""

    model: nn.Module
    tokens: Tensor
    labels: tuple[Tensor, ...]  # (batch, seq) each; labels[0] is the used category
    site: str
    seed: int


@dataclass(frozen=True)
class ProbingAnswer:
    """A method's selectivity on the used category and its "used" score for every property."""

    selectivity: float
    used_scores: tuple[float, ...]


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "n_sequences": 300 if quick else 600, "n_unused": N_UNUSED}]


def _build(case: Mapping[str, Any]) -> ProbingPlanted:
    seed = MODEL_SEED_OFFSET + case["seed"]
    model, meta = trained_category_model(seed, n_unused=case["n_unused"])
    category = torch.tensor(meta["category"])
    tokens, _ = category_task(generator(seed, "probe"), case["n_sequences"], meta["seq_len"], category)
    labels = (category[tokens], *(torch.tensor(u)[tokens] for u in meta["unused"]))
    return ProbingPlanted(model, tokens, labels, meta["site"], seed)


def _probe_and_erase(planted: ProbingPlanted, generator: torch.Generator) -> ProbingAnswer:
    selectivity = probe(planted.model, planted.tokens, planted.labels[0], planted.site, groups=planted.tokens,
                        seed=planted.seed).selectivity
    changes = [erase(planted.model, planted.tokens, y, planted.site, groups=planted.tokens, seed=planted.seed).change
               for y in planted.labels]
    return ProbingAnswer(selectivity, tuple(changes))


def _probe_and_steer(planted: ProbingPlanted, generator: torch.Generator) -> ProbingAnswer:
    results = [probe(planted.model, planted.tokens, y, planted.site, groups=planted.tokens, seed=planted.seed)
               for y in planted.labels]
    changes = [steer(planted.model, planted.tokens, r.coef[0], planted.site, seed=planted.seed).change
               for r in results]
    return ProbingAnswer(results[0].selectivity, tuple(changes))


def _probe_only(planted: ProbingPlanted, generator: torch.Generator) -> ProbingAnswer:
    scores = [probe(planted.model, planted.tokens, y, planted.site, groups=planted.tokens, seed=planted.seed).selectivity
              for y in planted.labels]
    return ProbingAnswer(scores[0], tuple(scores))


def _random(planted: ProbingPlanted, generator: torch.Generator) -> ProbingAnswer:
    scores = torch.rand(len(planted.labels), generator=generator).tolist()
    return ProbingAnswer(float(torch.rand(1, generator=generator)) - 0.5, tuple(scores))


def _score(answer: ProbingAnswer, planted: ProbingPlanted) -> dict[str, float]:
    truth = [True] + [False] * (len(answer.used_scores) - 1)
    return {"used_selectivity": answer.selectivity, "used_auroc": float(auroc(list(answer.used_scores), truth))}


GAME = register(Game(
    name="decodable-but-unused",
    item="Representations / probes (control tasks, erasure)",
    description=("A token model (vocab 64, 7-token sequences) trained to say whether most tokens are of a hidden "
                 f"category, with {N_UNUSED} planted token properties exactly decodable at the embedding but "
                 "wired to nothing (masked; zero ablation change). Methods probe each property with a per-token "
                 "control task and score whether the model uses it (LEACE erasure against shuffled-label "
                 "erasures, or a 2-sd step along the probe direction against random directions)."),
    metrics=(
        Metric("used_selectivity", chance=0.0, bar=0.15,
               description="linear probe accuracy minus control-task accuracy on the used category (held out)"),
        Metric("used_auroc", chance=0.5, bar=0.9,
               description="AUROC of the 'used' scores: the category (used) against the planted properties "
                           "(decodable, unused)"),
    ),
    cases=_cases,
    build=_build,
    methods={"probe+erasure": _probe_and_erase, "probe+steering": _probe_and_steer, "probe-only": _probe_only,
             "random": _random},
    score=_score,
    baselines=frozenset({"probe-only", "random"}),
    order=150,
))
