"""Game: planted reliance (Representations / concept vectors, TCAV with a calibrated null).

Each case trains five digits MLPs (`zoo.reliance.marked_digits_classifier`) whose training data
pairs a corner mark with class 0 at strength 0, .25, .5, .75 and 1; each model's reliance on the
mark is measured counterfactually (the flip rate to class 0 when the mark is added). A method
decides, per model, whether the mark concept (marked test digits against a pool of unmarked ones)
is significant for class 0 at the last hidden layer. Scored per case: the AUROC of those decisions
against "relies" (measured reliance > 0.2), the same AUROC against "relies (tested)" (the
counterfactual itself significant: adding the mark flips more other digits to class 0 than it
flips away from it, a one-sided exact McNemar test at 0.05), and the false-positive rate over 10
fixed random concepts (unmarked digits) on the strength-1 model. Methods: `tcav` (the TCAV score
as test statistic) and `tcav-cosine` (the mean cosine between the CAV and the gradients, the
same permutation null). Baseline "uncalibrated": the TCAV paper's test (a fixed concept set
against fixed random sets, a t-test of concept-vs-random scores against random-vs-random scores).

The tested truth and the cosine statistic were added after the 0.2 cut's AUROC missed its bar
(0.625): on development zoo seeds 0-4 (never scored) the strength-0.25 models flip 6-31% of other
digits when marked (strength 0: at most 0.2%), a reliance the 0.2 cut calls "none" on some seeds
and "some" on others, and the sign statistic's null piles up at 0 and 1. Both were checked on
those development seeds only; the 0.2 cut's metric is kept as it was.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from scipy.stats import binomtest, ttest_ind
from torch import Tensor, nn

from ...core.hooks import capture
from ...evidence.ranks import auroc
from ...representations.concepts import directional_derivatives, fit_cavs, tcav
from ..zoo import generator
from ..zoo.data import digits16
from ..zoo.reliance import add_mark, marked_digits_classifier
from .base import Game, Metric, register

__all__ = ["STRENGTHS", "RELIES"]

#: Scored on zoo seeds 1000 + seed; seed 0 was used to develop the game (the 0.2 cut was set before).
MODEL_SEED_OFFSET = 1000
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: A model "relies" on the mark when adding it flips more than this fraction of other digits to the target.
RELIES = 0.2
N_RANDOM_CONCEPTS, SET_SIZE, POOL_SIZE, TARGET = 10, 20, 200, 0
#: Random runs of the calibrated test. With the default 20 the smallest p-value, 1/21, is just under 0.05,
#: so one extreme null set (a random CAV scoring 0 or 1, seen on development seed 0) decides; 40 allows one.
#: Each statistic averages N_RUNS runs (41 x 10 CAVs per test instead of 41 x 40: the quick case's time budget).
N_RANDOM, N_RUNS = 40, 10


@dataclass(frozen=True, eq=False)
class ReliancePlanted:
    """One case: five models with their measured reliance, and the concept, random and input digits."""

    models: tuple[nn.Module, ...]
    reliance: tuple[float, ...]
    relies_tested: tuple[bool, ...]
    site: str
    concept: Tensor
    pool: Tensor
    inputs: Tensor
    random_concepts: tuple[Tensor, ...]
    target: int
    seed: int


@dataclass(frozen=True)
class RelianceAnswer:
    """Per model: is the mark significant; per random concept (on the strength-1 model): is it significant."""

    significant: tuple[bool, ...]
    random_significant: tuple[bool, ...]


def _cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "strengths": list(STRENGTHS), "target": TARGET}]


def _build(case: Mapping[str, Any]) -> ReliancePlanted:
    seed = MODEL_SEED_OFFSET + case["seed"]
    pairs = [marked_digits_classifier(seed, s, target=case["target"]) for s in case["strengths"]]
    xt, yt = digits16("test")
    order = torch.randperm(len(yt), generator=generator(seed, "tcav-sets"))
    pool, concept = xt[order[:POOL_SIZE]], add_mark(xt[order[POOL_SIZE:POOL_SIZE + SET_SIZE]])
    rest = order[POOL_SIZE + SET_SIZE:]
    randoms = tuple(xt[rest[i * SET_SIZE:(i + 1) * SET_SIZE]] for i in range(N_RANDOM_CONCEPTS))
    inputs = xt[yt == case["target"]]
    others = xt[yt != case["target"]]
    return ReliancePlanted(tuple(m for m, _ in pairs), tuple(float(meta["reliance"]) for _, meta in pairs),
                           tuple(_relies_tested(m, others, case["target"]) for m, _ in pairs),
                           pairs[0][1]["site"], concept, pool, inputs, randoms, case["target"], seed)


def _relies_tested(model: nn.Module, others: Tensor, target: int) -> bool:
    """Does adding the mark flip significantly more digits to ``target`` than away from it (exact McNemar, 0.05)?"""
    with torch.no_grad():
        before = model(others).argmax(-1) == target
        after = model(add_mark(others)).argmax(-1) == target
    to_target, away = int((after & ~before).sum()), int((before & ~after).sum())
    if to_target + away == 0:
        return False
    return bool(binomtest(to_target, to_target + away, 0.5, alternative="greater").pvalue < 0.05)


def _calibrated(planted: ReliancePlanted, generator: torch.Generator, statistic: str = "sign") -> RelianceAnswer:
    def test(model: nn.Module, concept: Tensor, seed: int) -> bool:
        return tcav(model, concept, planted.pool, planted.site, planted.inputs, planted.target, seed=seed,
                    n_random=N_RANDOM, n_runs=N_RUNS, statistic=statistic).significant

    marks = tuple(test(m, planted.concept, planted.seed) for m in planted.models)
    randoms = tuple(test(planted.models[-1], c, planted.seed + i) for i, c in enumerate(planted.random_concepts))
    return RelianceAnswer(marks, randoms)


def _calibrated_cosine(planted: ReliancePlanted, generator: torch.Generator) -> RelianceAnswer:
    return _calibrated(planted, generator, "cosine")


def _uncalibrated_test(model: nn.Module, concept: Tensor, pool: Tensor, site: str, inputs: Tensor, target: int,
                       n_random: int = 20) -> bool:
    """The TCAV paper's test: fixed sets, concept-vs-random_i against random_0-vs-random_i, a two-sided t-test."""
    concept_acts, pool_acts = (_capture(model, x, site).flatten(1).double() for x in (concept, pool))
    k = len(concept)
    starts = [(i * k) % (len(pool) - k + 1) for i in range(n_random + 1)]  # fixed random sets, reused every run
    sets = [pool_acts[s:s + k] for s in starts]
    cavs_concept = fit_cavs(concept_acts[None].expand(n_random, -1, -1), torch.stack(sets[1:]))
    cavs_random = fit_cavs(sets[0][None].expand(n_random, -1, -1), torch.stack(sets[1:]))
    derivatives = directional_derivatives(model, inputs, site, target, torch.cat([cavs_concept, cavs_random]))
    scores = (derivatives > 0).double().mean(1)
    with warnings.catch_warnings():  # identical score samples (all 0 or all 1) are a legitimate outcome here
        warnings.simplefilter("ignore", RuntimeWarning)
        p_value = float(ttest_ind(scores[:n_random].numpy(), scores[n_random:].numpy()).pvalue)
    return bool(p_value < 0.05) if p_value == p_value else False  # identical constant samples give NaN


def _capture(model: nn.Module, inputs: Tensor, site: str) -> Tensor:
    with torch.no_grad():
        return capture(model, inputs, [site])[site]


def _uncalibrated(planted: ReliancePlanted, generator: torch.Generator) -> RelianceAnswer:
    args = (planted.pool, planted.site, planted.inputs, planted.target)
    marks = tuple(_uncalibrated_test(m, planted.concept, *args) for m in planted.models)
    randoms = tuple(_uncalibrated_test(planted.models[-1], c, *args) for c in planted.random_concepts)
    return RelianceAnswer(marks, randoms)


def _coin(planted: ReliancePlanted, generator: torch.Generator) -> RelianceAnswer:
    flips = (torch.rand(len(planted.models) + len(planted.random_concepts), generator=generator) < 0.5).tolist()
    return RelianceAnswer(tuple(flips[:len(planted.models)]), tuple(flips[len(planted.models):]))


def _score(answer: RelianceAnswer, planted: ReliancePlanted) -> dict[str, float]:
    relies = [r > RELIES for r in planted.reliance]
    decisions = [float(s) for s in answer.significant]
    return {"reliance_auroc": float(auroc(decisions, relies)),
            "tested_reliance_auroc": float(auroc(decisions, list(planted.relies_tested))),
            "false_positive_rate": sum(answer.random_significant) / len(answer.random_significant)}


GAME = register(Game(
    name="planted-reliance",
    item="Representations / concept vectors (TCAV)",
    description=("Five digits MLPs per case trained with a corner mark paired with class 0 at strength 0, .25, .5, "
                 ".75, 1 (reliance measured by adding the mark); is the mark concept significant for class 0 at "
                 "the last hidden layer? Plus 10 random concepts (unmarked digits) on the strength-1 model."),
    metrics=(
        Metric("reliance_auroc", chance=0.5, bar=0.9,
               description=f"AUROC of the significance decisions against measured reliance > {RELIES}"),
        Metric("tested_reliance_auroc", chance=0.5, bar=0.9,
               description="AUROC of the significance decisions against a significant counterfactual (adding the "
                           "mark flips more digits to class 0 than away: one-sided exact McNemar at 0.05)"),
        Metric("false_positive_rate", chance=0.5, bar=0.13, higher_is_better=False,
               description="fraction of 10 random concepts called significant at alpha 0.05 (bar: 0.05 plus two "
                           "binomial standard errors over 3 seeds x 10 concepts)"),
    ),
    cases=_cases,
    build=_build,
    methods={"tcav": _calibrated, "tcav-cosine": _calibrated_cosine, "uncalibrated": _uncalibrated, "coin": _coin},
    score=_score,
    baselines=frozenset({"uncalibrated", "coin"}),
    order=151,
))
