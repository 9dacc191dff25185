"""Games for feature synthesis (Neurons / feature synthesis): trigger rediscovery and visualisation faithfulness.

*Trigger rediscovery* (multiple choice, after Casper et al. 2023): a glyph CNN carries four
planted patch, style or natural-feature trojans, each to its own class. For each, a method sees
the model, clean test images and the target class and produces images; a fixed automated judge
(`judge_candidates`) that sees neither the model nor the answer picks one of eight candidate
triggers of the same family. Scored per family: the fraction of a model's triggers rediscovered
(chance 1/8).

*Visualisation faithfulness* (after Geirhos et al. 2023): a glyph CNN has read-out units that
copy a conv channel on natural data, some of them manipulated to respond far more strongly to a
coloured glyph that natural images never contain. A method scores every unit; the metric is the
AUROC of the scores for manipulated vs plain units (chance 0.5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ...core.hooks import capture
from ...core.sites import Site
from ...evidence.ranks import auroc
from ...neurons.synthesis import Transforms, channel_objective, logit_objective, synthesize
from ..zoo import generator
from ..zoo.fooling import fooling_units_cnn
from ..zoo.glyphs import FAMILIES, GlyphTrigger, candidate_triggers, glyph_data, trojaned_glyph_classifier
from .base import Game, Metric, register

__all__ = ["RediscoveryPlanted", "RediscoveryAnswer", "FaithfulnessPlanted", "FaithfulnessAnswer",
           "judge_candidates", "flag_fooling_units"]

N_CANDIDATES = 8
N_TRIGGERS = 4  # triggers planted per trojaned model: each is one trial of a case
MIN_ATTACK_SUCCESS = 0.5  # a planted trigger the model did not learn is not a fair trial
N_IMAGES = 32  # clean images the synthesis starts from (and the judge stamps candidates onto)
N_EXEMPLARS = 16


def _match(changes: Tensor, candidates: Tensor) -> Tensor:
    """Mean over images of the best normalised cross-correlation over all shifts, per candidate.

    ``changes`` is ``(N, C, H, W)``, ``candidates`` ``(K, N, C, H, W)``; the correlation sums over
    channels (so colour must agree), both are zero-padded to ``2H × 2W`` so shifts do not wrap, and
    each image pair is normalised by both norms (a cosine at the best shift). Returns ``(K,)``.
    """
    size = (2 * changes.shape[-2], 2 * changes.shape[-1])
    mine = torch.fft.rfft2(changes.double(), s=size)
    theirs = torch.fft.rfft2(candidates.double(), s=size)
    corr = torch.fft.irfft2((theirs * mine.conj()[None]).sum(2), s=size)  # (K, N, 2H, 2W)
    best = corr.flatten(2).max(2).values
    norms = changes.double().flatten(1).norm(dim=1)[None] * candidates.double().flatten(2).norm(dim=2)
    return (best / norms.clamp(min=1e-12)).mean(1)


def judge_candidates(images: Float[Tensor, "batch channels height width"],
                     clean: Float[Tensor, "batch channels height width"], candidates: Sequence[GlyphTrigger], *,
                     seed: int = 0) -> int:
    """The fixed automated judge: the index of the candidate whose effect looks most like ``images - clean``.

    Each candidate is applied to ``clean`` (random places/phases drawn from ``seed``); for every
    image the judge takes the cosine between the method's change and the candidate's change at
    the best relative shift (a translation-invariant template match that keeps shape, phase
    structure and colour), averages over images and picks the highest. It sees only the images,
    the clean images and the candidates: never the model, and never which candidate is planted.

    Example:
        >>> clean = torch.zeros(4, 3, 16, 16)
        >>> cands = candidate_triggers("style", 0)
        >>> judge_candidates(cands[5].apply(clean, torch.Generator().manual_seed(1)), clean, cands)
        5
    """
    gen = torch.Generator().manual_seed(seed)
    theirs = torch.stack([c.apply(clean, gen) - clean for c in candidates])
    return int(torch.argmax(_match(images - clean, theirs)))


def _clean_images(target: int, seed: int, trial: int) -> Tensor:
    x, y = glyph_data("test")
    pool = torch.nonzero(y != target).flatten()
    pick = pool[torch.randperm(len(pool), generator=generator(seed, f"clean-images-{trial}"))[:N_IMAGES]]
    return x[pick]


@dataclass(frozen=True)
class Trial:
    """One planted trigger the model learned: its target, the clean images, the candidates in the judge's order."""

    target: int
    clean: Tensor
    candidates: tuple[GlyphTrigger, ...]
    truth: int  # the index of the planted trigger among the candidates


@dataclass(frozen=True, eq=False)
class RediscoveryPlanted:
    """One case: a glyph CNN trojaned with N_TRIGGERS triggers of one family, and one trial per learned trigger."""

    model: nn.Module
    family: str
    trials: tuple[Trial, ...]
    steps: int
    seed: int


@dataclass(frozen=True)
class RediscoveryAnswer:
    """The candidate the judge picked, per trial."""

    choices: tuple[int, ...]


def _rediscovery_cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"family": family, "seed": seed, "steps": 128} for family in FAMILIES]


def _rediscovery_build(case: Mapping[str, Any]) -> RediscoveryPlanted:
    family, seed = case["family"], case["seed"]
    model, meta = trojaned_glyph_classifier(family, seed, n_triggers=N_TRIGGERS)
    rates = meta["attack_success_rates"]
    learned = [j for j, r in enumerate(rates) if r >= MIN_ATTACK_SUCCESS] or [max(range(N_TRIGGERS),
                                                                                   key=rates.__getitem__)]
    pool = candidate_triggers(family, seed)  # pool[j] is planted towards meta["targets"][j] for j < N_TRIGGERS
    trials = []
    for j in learned:
        target = int(meta["targets"][j])
        # the judge sees all candidates in a seeded order per trial; the planted one is candidates[truth]
        order = torch.randperm(N_CANDIDATES, generator=generator(seed, f"order-{family}-{j}")).tolist()
        trials.append(Trial(target, _clean_images(target, seed, j), tuple(pool[i] for i in order), order.index(j)))
    return RediscoveryPlanted(model, family, tuple(trials), case["steps"], seed)


def _synthesis(planted: RediscoveryPlanted, rng: torch.Generator) -> RediscoveryAnswer:
    choices = []
    for trial in planted.trials:
        # one shared (universal) perturbation of the clean images raising log p(target), kept small by L2
        result = synthesize(planted.model, logit_objective(trial.target, log_prob=True), shape=(3, 16, 16),
                            init=trial.clean, shared=True, steps=planted.steps, lr=0.02,
                            transforms=Transforms(jitter=1), l2=1.0, seed=planted.seed)
        choices.append(judge_candidates(result.images, trial.clean, trial.candidates, seed=planted.seed))
    return RediscoveryAnswer(tuple(choices))


def _noise(planted: RediscoveryPlanted, rng: torch.Generator) -> RediscoveryAnswer:
    """The judge's own bias: a random shared perturbation, no model at all."""
    choices = []
    for trial in planted.trials:
        noise = 0.1 * torch.randn(trial.clean.shape[1:], generator=rng)
        choices.append(judge_candidates((trial.clean + noise).clamp(0, 1), trial.clean, trial.candidates,
                                        seed=planted.seed))
    return RediscoveryAnswer(tuple(choices))


def _random_choice(planted: RediscoveryPlanted, rng: torch.Generator) -> RediscoveryAnswer:
    return RediscoveryAnswer(tuple(int(torch.randint(0, N_CANDIDATES, (1,), generator=rng)) for _ in planted.trials))


def _rediscovery_score(answer: RediscoveryAnswer, planted: RediscoveryPlanted) -> dict[str, float]:
    correct = [choice == trial.truth for choice, trial in zip(answer.choices, planted.trials, strict=True)]
    return {f"correct_{planted.family}": sum(correct) / len(correct)}


REDISCOVERY = register(Game(
    name="trigger-rediscovery",
    item="Neurons / feature synthesis (trigger rediscovery, multiple choice)",
    description=(f"Glyph CNNs, each trojaned with {N_TRIGGERS} triggers of one family, each to its own target class: "
                 "patches (4x4 colour patterns at random places), styles (coloured gratings, random phase) or natural "
                 f"features (small grey shapes at random places). Per planted trigger the model learned (attack "
                 f"success >= {MIN_ATTACK_SUCCESS}), a method gets the model, {N_IMAGES} clean images and the target "
                 f"class and produces images; a fixed judge that never sees the model or the answer picks one of "
                 f"{N_CANDIDATES} candidates of the family (the model's other planted triggers among the distractors) "
                 "by translation-invariant template matching of the change. Scored: the fraction of a model's "
                 "triggers picked correctly (chance 1/8)."),
    metrics=tuple(
        Metric(f"correct_{family}", chance=1 / N_CANDIDATES, bar=bar,
               description=f"fraction of planted {family} triggers the judge picks among {N_CANDIDATES}")
        for family, bar in zip(FAMILIES, (0.4, 0.6, 0.4), strict=True)),
    cases=_rediscovery_cases,
    build=_rediscovery_build,
    methods={"synthesis": _synthesis, "noise": _noise, "random": _random_choice},
    score=_rediscovery_score,
    baselines=frozenset({"noise", "random"}),
    order=40,
))


def flag_fooling_units(model: nn.Module, data: Tensor, site: Site | str, upstream: Site | str, *,
                       steps: int = 64, n: int = 4, seed: int = 0) -> Tensor:
    """Score each unit at ``site`` by how unlike its natural exemplars its visualisation is.

    For every unit: synthesise ``n`` images maximising it (channel objective, jitter), take its
    top ``N_EXEMPLARS`` natural exemplars from ``data``, and compare the mean ``upstream``
    activations (spatially averaged, minus their mean over ``data``) that the two sets evoke. A
    faithful visualisation drives the same upstream path as the exemplars; the score is
    ``1 - cosine similarity`` (higher = more suspicious).
    """
    site = Site(site) if isinstance(site, str) else site
    upstream = Site(upstream) if isinstance(upstream, str) else upstream
    with torch.no_grad():
        values = capture(model, data, [site, upstream])
    n_units = values[site].shape[1]
    natural = values[site].flatten(2).mean(2)  # (N, units)
    ups = values[upstream].flatten(2).mean(2)  # (N, channels)
    objectives = [channel_objective(site, j) for j in range(n_units)]
    result = synthesize(model, objectives, shape=tuple(data.shape[1:]), n=n, steps=steps, lr=0.05,
                        transforms=Transforms(jitter=1), seed=seed)
    with torch.no_grad():
        vis_ups = capture(model, result.images, [upstream])[upstream].flatten(2).mean(2)
    centre = ups.mean(0)  # compare departures from the average natural image, not the shared positive profile
    scores = []
    for j in range(n_units):
        top = torch.topk(natural[:, j], N_EXEMPLARS).indices
        a, b = ups[top].mean(0) - centre, vis_ups[j * n:(j + 1) * n].mean(0) - centre
        scores.append(1.0 - float(torch.dot(a, b) / (a.norm() * b.norm()).clamp(min=1e-12)))
    return torch.tensor(scores)


@dataclass(frozen=True, eq=False)
class FaithfulnessPlanted:
    """One case: a glyph CNN with read-out units, the manipulated ones marked, and natural test images."""

    model: nn.Module
    inputs: Tensor
    site: str
    fooling: tuple[int, ...]  # 1 for a manipulated unit, 0 for a plain one
    steps: int
    seed: int


@dataclass(frozen=True)
class FaithfulnessAnswer:
    """A suspicion score per read-out unit (higher = more suspicious)."""

    scores: tuple[float, ...]


def _faithfulness_cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "steps": 48 if quick else 96}]


def _faithfulness_build(case: Mapping[str, Any]) -> FaithfulnessPlanted:
    model, meta = fooling_units_cnn(case["seed"])
    return FaithfulnessPlanted(model, glyph_data("test")[0], meta["site"], tuple(meta["fooling"]), case["steps"],
                               case["seed"])


def _path_similarity(planted: FaithfulnessPlanted, rng: torch.Generator) -> FaithfulnessAnswer:
    scores = flag_fooling_units(planted.model, planted.inputs, planted.site, "base.act2", steps=planted.steps,
                                seed=planted.seed)
    return FaithfulnessAnswer(tuple(scores.tolist()))


def _random_scores(planted: FaithfulnessPlanted, rng: torch.Generator) -> FaithfulnessAnswer:
    return FaithfulnessAnswer(tuple(torch.rand(len(planted.fooling), generator=rng).tolist()))


def _faithfulness_score(answer: FaithfulnessAnswer, planted: FaithfulnessPlanted) -> dict[str, float]:
    return {"auroc": auroc(list(answer.scores), list(planted.fooling))}


FAITHFULNESS = register(Game(
    name="visualisation-faithfulness",
    item="Neurons / feature synthesis (are visualisations faithful?)",
    description=("A glyph CNN with 12 read-out units, each copying a conv2 channel on natural (grey) images; 6 are "
                 "manipulated to respond 20x more strongly to a coloured glyph no natural image contains. A method "
                 "scores every unit; AUROC of the scores for manipulated vs plain units (chance 0.5)."),
    metrics=(Metric("auroc", chance=0.5, bar=0.7, description="AUROC of unit scores, manipulated units as positives"),),
    cases=_faithfulness_cases,
    build=_faithfulness_build,
    methods={"path-similarity": _path_similarity, "random": _random_scores},
    score=_faithfulness_score,
    baselines=frozenset({"random"}),
    order=50,
))
