"""The game harness: a ground-truth game names its taxonomy item, its cases, methods and metrics.

A `Game` builds cases from the zoo (one or more configs per seed), runs a method on a case and
scores it against the planted answer. Every metric states its chance level and the pass bar;
baseline methods (random units, random class) run beside the methods under test so every table
shows the gap to chance.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

__all__ = ["Metric", "Game", "case_generator", "outranks"]


def case_generator(game: str, method: str, case: Mapping[str, Any]) -> torch.Generator:
    """A generator seeded by a hash of (game, method, case), for baselines' random choices.

    Hashing matters: ``torch.Generator().manual_seed(k)`` for consecutive small ``k`` gives
    correlated first draws (seeds 1, 3, 5, ... all drew a first ``rand()`` below 0.5), which
    biased a coin-flip baseline.
    """
    text = json.dumps([game, method, dict(case)], sort_keys=True)
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))


@dataclass(frozen=True)
class Metric:
    """A score of one case: its chance level, the bar a method must reach, and its direction.

    A *ranking* metric (``ranks`` set) is an AUROC over the population of cases: ``ranks`` names a
    per-case score the game's ``play`` returns (higher = more suspicious), ``positive`` and
    ``negative`` the case-config fields that make a case a positive or a negative. Each positive
    case's value is the fraction of negative cases it outranks (ties count one half), so the mean
    over positives is exactly the AUROC, the median and worst are real cases (the worst is the
    positive that looks most like a negative), and the CI resamples positives (negatives fixed).
    """

    name: str
    chance: float
    bar: float
    higher_is_better: bool = True
    description: str = ""
    ranks: str | None = None
    positive: tuple[tuple[str, Any], ...] = ()
    negative: tuple[tuple[str, Any], ...] = ()

    def matches(self, case: Mapping[str, Any], fields: tuple[tuple[str, Any], ...]) -> bool:
        return all(case.get(key) == value for key, value in fields)


def outranks(positives: list[float], negatives: list[float]) -> list[float]:
    """Per positive, the fraction of negatives with a lower score (ties one half); their mean is the AUROC.

    Example:
        >>> outranks([3.0, 1.0], [1.0, 2.0])
        [1.0, 0.25]
    """
    if not negatives:
        return []
    return [sum(1.0 if p > n else 0.5 if p == n else 0.0 for n in negatives) / len(negatives) for p in positives]


class Game(ABC):
    """One ground-truth game. Subclasses set the class attributes and implement two methods.

    ``cases(seed, quick)`` returns the JSON-able configs of the cases for one seed (a case is
    identified by its config hash); ``play(method, case)`` builds the case (cached), runs the
    method and returns ``{metric name: value}`` for the metrics that apply to that case.
    """

    name: ClassVar[str]
    item: ClassVar[str]  # the survey's taxonomy item, e.g. "Neurons / perturbation & ablation"
    description: ClassVar[str]
    metrics: ClassVar[tuple[Metric, ...]]
    methods: ClassVar[tuple[str, ...]]
    baselines: ClassVar[frozenset[str]]

    @abstractmethod
    def cases(self, seed: int, quick: bool) -> list[dict[str, Any]]:
        """The case configs for one seed (each JSON-able, each with its own seed)."""

    @abstractmethod
    def play(self, method: str, case: Mapping[str, Any]) -> dict[str, float]:
        """Run ``method`` on ``case`` and score it: ``{metric name: value}``."""

    def check_method(self, method: str) -> None:
        """Raise ``KeyError`` for a method this game does not run (before any model is built)."""
        if method not in self.methods:
            raise KeyError(f"unknown method {method!r} for game {self.name!r}; it runs {list(self.methods)}.")

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"game {self.name!r} has no metric {name!r}; it has {[m.name for m in self.metrics]}.")
