"""The game harness: a ground-truth game declared as data (cases, build, methods, score).

A `Game` names its taxonomy item and metrics (each with its chance level and pass bar), lists the
configs of its cases per seed, builds a case's planted answer key (`build(case) -> Planted`, a
small typed frozen dataclass), runs a method on it (`methods[name](planted, generator) -> Answer`)
and scores the answer against the key (`score(answer, planted) -> {metric: value}`). `play` is
what the harness calls: it checks the method before building anything and checks the scores it
returns. A game module calls `register(game)`; `seethrough.bench.games` imports every module of
the package, so adding a game is adding one file. Baseline methods (random units, random class)
run beside the methods under test so every table shows the gap to chance.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import torch

from ...core.errors import SeethroughError

__all__ = ["Metric", "Game", "GameError", "register", "registered", "case_generator", "outranks"]

PlantedT = TypeVar("PlantedT")
AnswerT = TypeVar("AnswerT")


class GameError(SeethroughError, ValueError):
    """A game is declared wrongly or scored a case wrongly (a bug in the game, not in the method)."""


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
    per-case score the game's ``score`` returns (higher = more suspicious), ``positive`` and
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


@dataclass(frozen=True, eq=False)
class Game(Generic[PlantedT, AnswerT]):
    """One ground-truth game, declared as data: what it plants, how methods answer, how answers score.

    Attributes:
        name: the game's name in tables and on the command line (``--games``).
        item: the survey's taxonomy item it scores, e.g. ``"Neurons / perturbation & ablation"``.
        description: what the game plants and what counts as finding it.
        metrics: every metric a case can score, with chance level and bar.
        cases: ``cases(seed, quick)``: the JSON-able configs of one seed's cases (each with its own
            ``"seed"``; a case is identified in the ledger by its config hash).
        build: ``build(case) -> Planted``: the planted model(s) and the answer key of one case.
        methods: method name to ``fn(planted, generator) -> Answer``, in table order; ``generator``
            is `case_generator` of (game, method, case), for a method's random choices.
        score: ``score(answer, planted) -> {metric: value}`` for the metrics that apply to the case
            (plus the per-case scores that ranking metrics rank, named by ``Metric.ranks``).
        baselines: the methods that are trivial baselines (no bar, no verdict).
        order: the game's place in the registry and the table (lower first; ties by name).
    """

    name: str
    item: str
    description: str
    metrics: tuple[Metric, ...]
    cases: Callable[[int, bool], list[dict[str, Any]]]
    build: Callable[[Mapping[str, Any]], PlantedT]
    methods: Mapping[str, Callable[[PlantedT, torch.Generator], AnswerT]]
    score: Callable[[AnswerT, PlantedT], Mapping[str, float]]
    baselines: frozenset[str]
    order: int = field(default=1000, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "methods", MappingProxyType(dict(self.methods)))
        object.__setattr__(self, "baselines", frozenset(self.baselines))
        names = [m.name for m in self.metrics]
        if not self.metrics or len(set(names)) != len(names):
            raise GameError(f"game {self.name!r} needs at least one metric and unique metric names, got {names}.")
        if not self.methods or not all(callable(fn) for fn in self.methods.values()):
            raise GameError(f"game {self.name!r} needs a callable per method, got {dict(self.methods)}.")
        stray = sorted(self.baselines - set(self.methods))
        if stray:
            raise GameError(f"game {self.name!r} names baselines {stray} that are not among its methods "
                            f"{list(self.methods)}; add them to methods or drop them from baselines.")

    def check_method(self, method: str) -> None:
        """Raise ``KeyError`` for a method this game does not run (before any model is built)."""
        if method not in self.methods:
            raise KeyError(f"unknown method {method!r} for game {self.name!r}; it runs {list(self.methods)}.")

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"game {self.name!r} has no metric {name!r}; it has {[m.name for m in self.metrics]}.")

    def play(self, method: str, case: Mapping[str, Any]) -> dict[str, float]:
        """Build ``case``, run ``method`` on it and score the answer: ``{metric name: value}``.

        Raises:
            KeyError: ``method`` is not one of the game's methods (raised before anything is built).
            GameError: the game's ``score`` returned an unknown metric name or a non-finite value.
        """
        self.check_method(method)
        planted = self.build(case)
        answer = self.methods[method](planted, case_generator(self.name, method, case))
        return self.checked_scores(self.score(answer, planted))

    def checked_scores(self, scores: Mapping[str, Any]) -> dict[str, float]:
        """``scores`` as finite floats, after checking every name is a metric or a ranked per-case score."""
        known = {m.name for m in self.metrics} | {m.ranks for m in self.metrics if m.ranks is not None}
        unknown = sorted(set(scores) - known)
        if unknown:
            raise GameError(f"game {self.name!r} scored unknown metric(s) {unknown}; its metrics are "
                            f"{sorted(known)}. Declare the metric or fix the name in the game's score().")
        out: dict[str, float] = {}
        for name, value in scores.items():
            number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            if number is None or not math.isfinite(number):
                raise GameError(f"game {self.name!r} scored {name!r} as {value!r}; a score is a finite float "
                                "(record a failed case by raising, never as NaN).")
            out[name] = number
        return out


_REGISTRY: dict[str, Game[Any, Any]] = {}


def register(game: Game[PlantedT, AnswerT]) -> Game[PlantedT, AnswerT]:
    """Add ``game`` to the registry `seethrough.bench.games.GAMES` is read from; returns it unchanged.

    Raises:
        GameError: ``game`` is not a `Game`, or another game already holds its name.
    """
    if not isinstance(game, Game):
        raise GameError(f"register expects a Game, got {type(game).__name__}.")
    held = _REGISTRY.get(game.name)
    if held is not None and held is not game:
        raise GameError(f"two games are named {game.name!r}; rename one.")
    _REGISTRY[game.name] = game
    return game


def registered() -> list[Game[Any, Any]]:
    """The registered games in table order (``order``, then name)."""
    return sorted(_REGISTRY.values(), key=lambda g: (g.order, g.name))
