"""The ``seethrough`` command line (typer + rich).

Commands: ``inspect`` (the module tree, site names, parameter counts, output shapes), ``audit``
(a trojan audit from clean data, DESIGN §6) and ``bench`` (the ground-truth games, DESIGN §6).
Every refusal is one line on stderr (``error: ...``) and exit status 2, before any work and with
nothing half-written; Ctrl-C is one line and exit status 130. User text (paths, names, exception
messages) is always printed literally, never read as Rich markup.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .core.checks import check_float, check_int
from .core.errors import InputError, SeethroughError
from .core.inspection import inspect_model
from .core.io import atomic_write, check_writable, load_data, load_model

__all__ = ["app"]

app = typer.Typer(
    name="seethrough",
    help="Inner interpretability of PyTorch networks, evaluated on planted ground truth.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: The exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
#: The largest seed: torch's and numpy's generators take any non-negative 64-bit signed int.
MAX_SEED = 2**63 - 1
#: The most seeds one bench run plans (the full suite uses 10).
MAX_SEEDS = 1000


@app.callback()
def _main() -> None:
    """Inner interpretability of PyTorch networks, evaluated on planted ground truth."""


def _say_error(message: str) -> None:
    """One ``error:`` line on stderr; ``message`` is printed literally (a ``[/x]`` in it is text, not markup)."""
    line = Text("error: ", style="bold red")
    line.append(" ".join(message.split()))
    Console(stderr=True, highlight=False, soft_wrap=True).print(line)


def _fail(err: BaseException) -> typer.Exit:
    _say_error(str(err) or type(err).__name__)
    return typer.Exit(code=2)


def _interrupted(note: str) -> typer.Exit:
    _say_error(f"interrupted (Ctrl-C); {note}")
    return typer.Exit(code=INTERRUPTED)


def _say(console: Console, message: str) -> None:
    """Print ``message`` literally, unwrapped (a long path stays on its line)."""
    console.print(Text(message), highlight=False, soft_wrap=True)


@contextmanager
def _progress(console: Console, description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """``update(**fields)`` of a transient progress bar on a terminal; in a pipe or a log, nothing is printed."""
    if not console.is_terminal:
        yield lambda **fields: None
        return
    from rich.progress import Progress

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda **fields: bar.update(task, **fields)


ModelOpt = Annotated[str, typer.Option("--model", help="path/to/file.py:factory or package.module:factory")]
WeightsOpt = Annotated[Path | None, typer.Option("--weights", help=".safetensors (or a .pt state dict)")]
DataOpt = Annotated[Path | None, typer.Option("--data", help=".npz with x (N,C,H,W or N,D), y (N,), class_names")]


@app.command()
def inspect(model: ModelOpt, weights: WeightsOpt = None, data: DataOpt = None,
            batch_size: Annotated[int, typer.Option(help="rows of data used for output shapes (≥ 1)")] = 8) -> None:
    """Print the module tree: every site name, its type, parameter counts and, with --data, output shapes."""
    try:
        check_int("--batch-size", batch_size, at_least=1)
        net = load_model(model, weights)
        inputs = load_data(data, max_rows=batch_size).x if data is not None else None  # reads only those rows
        summary = inspect_model(net, inputs)
    except KeyboardInterrupt:
        raise _interrupted("nothing was written.") from None
    except (SeethroughError, OSError) as err:
        raise _fail(err) from None
    table = Table(title=Text(f"{summary.model_name}: {summary.total_params:,} parameters"), title_justify="left")
    table.add_column("site")
    table.add_column("type")
    table.add_column("params", justify="right")
    table.add_column("own", justify="right")
    if inputs is not None:
        table.add_column("output shape")
    for row in summary.rows:
        cells = ["  " * max(row.depth - 1, 0) + (row.path or "(model)"), row.kind, f"{row.total_params:,}",
                 f"{row.own_params:,}"]
        if inputs is not None:
            shapes = row.output_shapes
            cells.append("—" if not shapes else str(list(shapes[0])) + (f" ×{len(shapes)} calls" if len(shapes) > 1 else ""))
        table.add_row(*(Text(cell) for cell in cells))  # module names are user text: never markup
    console = Console(width=max(Console().width, 100))
    console.print(table, markup=False, highlight=False)
    if summary.input_description:
        _say(console, f"shapes from one batch of {summary.input_description}")


@app.command()
def audit(model: ModelOpt, data: Annotated[Path, typer.Option("--data", help="clean .npz: x, y, class_names")],
          out: Annotated[Path, typer.Option("--out", help="writes DIR/report.html, then DIR/findings.json last: a "
                                            "DIR without findings.json holds no complete audit")],
          weights: WeightsOpt = None,
          steps: Annotated[int, typer.Option(help="optimisation steps per class (≥ 10)")] = 300,
          seed: Annotated[int, typer.Option(help="seeds the split, the optimisation and the controls "
                                            f"(0..{MAX_SEED})")] = 0,
          max_rows: Annotated[int, typer.Option("--max-rows", help="audit at most the first N rows of --data "
                                                "(shuffle a file sorted by class)")] = 10_000,
          repair: Annotated[bool, typer.Option("--repair", help="unlearn the validated triggers; writes "
                                               "DIR/repaired.safetensors")] = False,
          max_accuracy_drop: Annotated[float, typer.Option("--max-accuracy-drop", help="with --repair: the clean "
                                                           "accuracy (0..1) the repair may lose, measured on a "
                                                           "selection split of --data")] = 0.02,
          attack: Annotated[bool, typer.Option("--attack", help="design a new trigger from the implicated units "
                                               "and test it against random triggers of the same size")] = False) -> None:
    """Audit a classifier for a planted trojan from clean data: scan, calibrate, validate, report.

    Every argument, the data and (with --repair) the labels are checked before the scan starts.
    Artefacts of an earlier run in DIR are removed, and DIR/findings.json is written last: an
    interrupted or failed run removes what it wrote, so a DIR without findings.json is incomplete.
    """
    console = Console()
    try:
        check_int("--steps", steps, at_least=10)
        check_int("--seed", seed, at_least=0, at_most=MAX_SEED)
        check_int("--max-rows", max_rows, at_least=4)
        check_float("--max-accuracy-drop", max_accuracy_drop, at_least=0.0, at_most=1.0)
        check_writable(out, "--out", folder=True)
        from . import audit as audits
        from .report.artefacts import save_audit

        net = load_model(model, weights)
        dataset = load_data(data, max_rows=max_rows)
        with _progress(console, "reverse-engineering a trigger per class", None) as update:
            result = audits.scan(net, dataset.x, labels=dataset.y if repair else None,
                                 class_names=dataset.class_names, steps=steps, seed=seed,
                                 progress=lambda done, total: update(completed=done, total=total))
        with warnings.catch_warnings():  # a budget not met is printed below, from the result
            warnings.simplefilter("ignore", UserWarning)
            fixed = audits.repair(result, net, dataset.x, dataset.y, max_accuracy_drop=max_accuracy_drop,
                                  seed=seed) if repair else None
        designed = audits.attack(result, net, seed=seed) if attack else None
        meta = {"model": model, "weights": str(weights or "—"), "data": str(data)}
        findings = save_audit(out, result, dataset.x, meta=meta, repair=fixed, attack=designed,
                              repaired=repair, attacked=attack)
    except KeyboardInterrupt:
        raise _interrupted(f"no audit was written to {str(out)!r}.") from None
    except (SeethroughError, OSError) as err:
        raise _fail(err) from None
    flagged = ", ".join(f"class {f.target} ({'validated' if v.validated else 'not validated'})"
                        for f, v in zip(result.findings, result.validations, strict=True))
    if len(dataset) == max_rows:
        _say(console, f"audited the first {max_rows:,} rows of {data} (--max-rows)")
    _say(console, f"verdict: {result.verdict}   anomaly score: {result.anomaly_score:.2f}   "
                  f"flagged: {flagged or 'none'}")
    _say(console, result.summary)
    if repair:
        _say(console, "repair: " + ("nothing to repair: no validated trigger" if fixed is None else (
            f"attack success {fixed.attack_success_before:.2f} -> {fixed.attack_success_after:.2f}, clean "
            f"accuracy {fixed.clean_accuracy_before:.3f} -> {fixed.clean_accuracy_after:.3f} (held out, "
            f"{fixed.n_held_out} examples); {fixed.epochs} epoch(s), distill {fixed.distill:g}, chosen on "
            f"{fixed.n_selection} other examples")))
        if fixed is not None:
            _say(console, "repair " + fixed.budget_summary)
    if attack and designed is None:
        _say(console, "attack: nothing to attack with: no validated trigger with implicated units")
    elif attack:
        record = designed.to_dict()
        _say(console, f"attack: designed trigger success {record['attack_success_rate']:.2f} vs random triggers of "
                      f"the same size {record['control_mean']:.2f} (max {record['control_max']:.2f}, "
                      f"p = {record['p_value']:.3f})")
    _say(console, f"findings: {findings}   report: {out / 'report.html'}")


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="few seeds, small sizes: minutes on 2 cores")] = False,
    games: Annotated[str | None, typer.Option("--games", help="comma-separated game names (default: all)")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help=f"seeds 0..N-1, N in 1..{MAX_SEEDS} (default 3 "
                                              "with --quick, else 10)")] = None,
    executor: Annotated[str, typer.Option("--executor", help="local or ray")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="connect to a running Ray cluster")] = None,
    db: Annotated[Path, typer.Option("--db", help="the results ledger (SQLite)")] = Path("seethrough-bench/ledger.sqlite"),
    report: Annotated[Path | None, typer.Option("--report", help="write DIR/index.html")] = Path("seethrough-bench/report"),
    json_out: Annotated[Path | None, typer.Option("--json", help="write the final table as JSON rows")] = None,
    list_games: Annotated[bool, typer.Option("--list", help="list the games and exit")] = False,
) -> None:
    """Run the ground-truth games: every case, every method, scored against chance; resumes from the ledger.

    Every argument and output path is checked before the first unit runs; Ctrl-C keeps the finished
    units in the ledger (rerun to resume) and writes no report or table.
    """
    console = Console()
    try:
        from .bench.executors import LocalExecutor, RayExecutor
        from .bench.ledger import Ledger
        from .bench.runner import plan, run, sections, select_games, table
        from .report.html import write_report

        chosen = select_games([g.strip() for g in games.split(",") if g.strip()] if games else None)
        if list_games:
            for game in chosen:
                metrics = ", ".join(f"{m.name} (chance {m.chance:g}, bar {m.bar:g})" for m in game.metrics)
                _say(console, f"{game.name}: {game.item}\n  methods: {', '.join(game.methods)}\n  metrics: {metrics}")
            return
        if executor not in ("local", "ray"):
            raise InputError(f"--executor must be 'local' or 'ray', got {executor!r}.")
        n_seeds = check_int("--seeds", seeds, at_least=1, at_most=MAX_SEEDS) if seeds is not None else (3 if quick else 10)
        if json_out is not None:
            check_writable(json_out, "--json", folder=False)
        if report is not None:
            check_writable(report, "--report", folder=True)
        units = plan(chosen, list(range(n_seeds)), quick=quick)
        runner = LocalExecutor() if executor == "local" else RayExecutor(ray_address)
        with Ledger(db) as ledger:
            todo = len(units) - len(ledger.finished() & {u.key.id for u in units})
            with _progress(console, f"bench ({len(units) - todo} of {len(units)} units already done)", todo) as update:
                run(units, ledger, runner, progress=lambda unit, outcome: update(advance=1))
            rows = table(ledger, units)
            parts = sections(ledger, units)
            n_errors = sum(len(p.errors) for p in parts)
            if report is not None:
                meta = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "seeds": str(n_seeds), "mode": "quick" if quick else "full", "executor": executor}
                page = write_report(report, parts, meta=meta)
        if json_out is not None:
            text = json.dumps([asdict(r) for r in rows], indent=2)
            atomic_write(json_out, lambda tmp: Path(tmp).write_text(text))
    except KeyboardInterrupt:
        raise _interrupted(f"finished units are kept in {str(db)!r}: rerun the same command to resume.") from None
    except (SeethroughError, OSError) as err:
        raise _fail(err) from None
    _print_table(console, rows)
    _say(console, f"ledger: {db}" + (f"   report: {page}" if report is not None else ""))
    if n_errors:
        errors = Console(stderr=True, highlight=False)
        for part in parts:
            for error in part.errors:
                errors.print(Text(f"error: {error}"))
        raise typer.Exit(code=1)


def _print_table(console: Console, rows: list) -> None:
    table = Table(title="seethrough bench", title_justify="left")
    for name, justify in [("game", "left"), ("method", "left"), ("metric", "left"), ("chance", "right"),
                          ("bar", "right"), ("mean", "right"), ("median", "right"), ("worst", "right"),
                          ("95% CI", "right"), ("n", "right"), ("pass", "center")]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]  # rich's literal type
    for r in rows:
        verdict = "—" if r.passed is None else ("yes" if r.passed else "NO")
        table.add_row(r.game, r.method, r.metric, f"{r.chance:.3f}", "—" if r.bar is None else f"{r.bar:.3f}",
                      f"{r.mean:.3f}", f"{r.median:.3f}", f"{r.worst:.3f}", f"[{r.ci_low:.3f}, {r.ci_high:.3f}]",
                      str(r.n), verdict)
    # a pipe or CI log gets rich's 80-column default, which truncates every cell: never narrower than 140
    Console(width=max(console.width, 140)).print(table, markup=False, highlight=False)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
