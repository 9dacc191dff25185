"""The bench runner: plan units, run the unfinished ones, and aggregate the table from the ledger.

A unit is (game, method, seed, case config); its key is deterministic, so re-running skips what
the ledger already holds as ``ok`` and retries errors. The final table is always re-aggregated
from the ledger (never from memory), restricted to the units of the current plan.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..core.errors import InputError
from ..evidence.summary import summarize
from .executors import Outcome, Task
from .games import GAMES, Game
from .games.base import Metric, outranks
from .ledger import Ledger, UnitKey
from .table import GameSection, MetricRow
from .zoo.cache import config_hash

__all__ = ["PlannedUnit", "plan", "run", "table", "sections", "select_games"]


@runtime_checkable
class Executor(Protocol):
    def run(self, tasks: Sequence[Task]) -> Iterable[Outcome]: ...


@dataclass(frozen=True)
class PlannedUnit:
    key: UnitKey
    case: dict[str, Any]


def select_games(names: Sequence[str] | None) -> list[Game[Any, Any]]:
    """The games to run, by name (all when ``names`` is None), in registry order."""
    if names is None:
        return list(GAMES.values())
    unknown = [n for n in names if n not in GAMES]
    if unknown:
        raise InputError(f"unknown game(s) {unknown}; available: {sorted(GAMES)} (see seethrough bench --list).")
    return [GAMES[n] for n in GAMES if n in set(names)]


def plan(games: Sequence[Game[Any, Any]], seeds: Sequence[int], *, quick: bool) -> list[PlannedUnit]:
    """Every unit of the run, in a deterministic order (game, seed, case, method)."""
    if not seeds:
        raise InputError("no seeds to run; pass --seeds N with N >= 1.")
    units = []
    for game in games:
        for seed in seeds:
            for case in game.cases(seed, quick):
                digest = config_hash(case)
                units += [PlannedUnit(UnitKey(game.name, method, seed, digest), case) for method in game.methods]
    return units


def run(units: Sequence[PlannedUnit], ledger: Ledger, executor: Executor, *,
        progress: Callable[[PlannedUnit, Outcome], None] | None = None) -> list[PlannedUnit]:
    """Run the units the ledger does not hold as ``ok``; record each outcome as it arrives.

    Returns the units that ran. The driver (this process) is the only writer of the ledger.
    """
    done = ledger.finished()
    todo = [u for u in units if u.key.id not in done]
    tasks = [(i, u.key.game, u.key.method, u.case) for i, u in enumerate(todo)]
    for outcome in executor.run(tasks):
        unit = todo[outcome.index]
        if outcome.metrics is not None:
            ledger.record_ok(unit.key, outcome.metrics, seconds=outcome.seconds, config=unit.case)
        else:
            ledger.record_error(unit.key, outcome.error or "unknown error", seconds=outcome.seconds, config=unit.case)
        if progress is not None:
            progress(unit, outcome)
    return todo


def _values(ledger: Ledger, units: Sequence[PlannedUnit]) -> tuple[dict[tuple[str, str, str], list[float]], list[str]]:
    """Per (game, method, metric) the per-case values of the plan's ``ok`` units; one line per failed unit.

    A plain metric's values are the cases' own scores, in ledger order. A ranking metric's values
    are computed over the population of a (game, method)'s cases: one per positive case (`_ranked`).
    """
    wanted = {u.key.id for u in units}
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    scored: dict[tuple[str, str], list[tuple[dict[str, Any], dict[str, float]]]] = defaultdict(list)
    errors = []
    for row in ledger.rows(games=sorted({u.key.game for u in units})):
        if row["id"] not in wanted:
            continue
        if row["status"] != "ok":
            first = (row["error"] or "").splitlines()[0] if row["error"] else "error"
            errors.append(f"{row['game']}/{row['method']} seed {row['seed']}: {first}")
            continue
        for metric, value in sorted(row["metrics"].items()):
            values[(row["game"], row["method"], metric)].append(float(value))
        scored[(row["game"], row["method"])].append((row["config"], row["metrics"]))
    for (name, method), cases in scored.items():
        for metric in GAMES[name].metrics if name in GAMES else ():
            if metric.ranks is not None:
                values[(name, method, metric.name)] = _ranked(metric, cases)
    return values, errors


def _ranked(metric: Metric, cases: Sequence[tuple[dict[str, Any], dict[str, float]]]) -> list[float]:
    """A ranking metric's values: per positive case, the fraction of negative cases it outranks.

    Positives and negatives are picked by their configs (``metric.positive``/``negative``) and
    compared on the per-case score the metric ranks (``metric.ranks``), so the mean is the AUROC.
    """
    def ranked_scores(fields: tuple[tuple[str, Any], ...]) -> list[float]:
        return [m[metric.ranks] for c, m in cases if metric.matches(c, fields) and metric.ranks in m]

    return outranks(ranked_scores(metric.positive), ranked_scores(metric.negative))


def table(ledger: Ledger, units: Sequence[PlannedUnit]) -> list[MetricRow]:
    """One row per (game, method, metric) over the plan's ``ok`` units, re-read from the ledger.

    A method under test passes when its mean reaches the bar and its 95% CI clears chance (below
    chance and bar when lower is better); baselines have no bar and no verdict.
    """
    values, _ = _values(ledger, units)
    rows = []
    for game in [GAMES[name] for name in dict.fromkeys(u.key.game for u in units)]:
        for method in game.methods:
            for metric in game.metrics:
                cases = values.get((game.name, method, metric.name))
                if not cases:
                    continue
                s = summarize(cases, higher_is_better=metric.higher_is_better)
                baseline = method in game.baselines
                if baseline:
                    passed = None
                elif metric.higher_is_better:
                    passed = s.mean >= metric.bar and s.ci_low > metric.chance
                else:
                    passed = s.mean <= metric.bar and s.ci_high < metric.chance
                rows.append(MetricRow(game.name, method, metric.name, s.n, s.mean, s.median, s.worst, s.ci_low,
                                      s.ci_high, metric.chance, None if baseline else metric.bar, passed))
    return rows


def sections(ledger: Ledger, units: Sequence[PlannedUnit]) -> list[GameSection]:
    """The report's sections: per game its rows, every case's value per method and metric, its errors."""
    values, errors = _values(ledger, units)
    rows = table(ledger, units)
    out = []
    for game in [GAMES[name] for name in dict.fromkeys(u.key.game for u in units)]:
        cases = {m.name: {method: values.get((game.name, method, m.name), []) for method in game.methods}
                 for m in game.metrics}
        out.append(GameSection(
            name=game.name, item=game.item, description=game.description,
            rows=tuple(r for r in rows if r.game == game.name), cases=cases,
            higher_is_better={m.name: m.higher_is_better for m in game.metrics},
            errors=tuple(e for e in errors if e.startswith(f"{game.name}/")),
        ))
    return out
