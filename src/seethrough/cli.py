"""The ``seethrough`` command line (typer + rich).

Commands: ``inspect`` (the module tree, site names, parameter counts, output shapes), ``audit``
(a trojan audit from clean data, DESIGN §6) and ``bench`` (the ground-truth games, DESIGN §6). Errors end with a one-line reason on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .core.errors import SeethroughError
from .core.inspection import inspect_model
from .core.io import atomic_write, load_data, load_model

__all__ = ["app"]

app = typer.Typer(
    name="seethrough",
    help="Inner interpretability of PyTorch networks, evaluated on planted ground truth.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _main() -> None:
    """Inner interpretability of PyTorch networks, evaluated on planted ground truth."""


def _fail(err: BaseException) -> typer.Exit:
    message = " ".join(str(err).split()) or type(err).__name__
    Console(stderr=True).print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


ModelOpt = Annotated[str, typer.Option("--model", help="path/to/file.py:factory or package.module:factory")]
WeightsOpt = Annotated[Path | None, typer.Option("--weights", help=".safetensors (or a .pt state dict)")]
DataOpt = Annotated[Path | None, typer.Option("--data", help=".npz with x (N,C,H,W or N,D), y (N,), class_names")]


@app.command()
def inspect(model: ModelOpt, weights: WeightsOpt = None, data: DataOpt = None,
            batch_size: Annotated[int, typer.Option(min=1, help="rows of data used for output shapes")] = 8) -> None:
    """Print the module tree: every site name, its type, parameter counts and, with --data, output shapes."""
    try:
        net = load_model(model, weights)
        inputs = load_data(data).x[:batch_size] if data is not None else None
        summary = inspect_model(net, inputs)
    except (SeethroughError, OSError) as err:
        raise _fail(err) from None
    table = Table(title=f"{summary.model_name}: {summary.total_params:,} parameters", title_justify="left")
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
        table.add_row(*cells)
    console = Console(width=max(Console().width, 100))
    console.print(table, markup=False, highlight=False)
    if summary.input_description:
        console.print(f"shapes from one batch of {summary.input_description}", markup=False, highlight=False)


@app.command()
def audit(model: ModelOpt, data: Annotated[Path, typer.Option("--data", help="clean .npz: x, y, class_names")],
          out: Annotated[Path, typer.Option("--out", help="writes DIR/findings.json and DIR/report.html")],
          weights: WeightsOpt = None,
          steps: Annotated[int, typer.Option(min=10, help="optimisation steps per class")] = 300,
          seed: Annotated[int, typer.Option(help="seeds the split, the optimisation and the controls")] = 0,
          repair: Annotated[bool, typer.Option("--repair", help="unlearn the validated triggers; writes "
                                               "DIR/repaired.safetensors")] = False,
          attack: Annotated[bool, typer.Option("--attack", help="design a new trigger from the implicated units "
                                               "and test it against random triggers of the same size")] = False) -> None:
    """Audit a classifier for a planted trojan from clean data: scan, calibrate, validate, report."""
    from rich.progress import Progress

    from . import audit as audits
    from .report.audit import write_audit_report

    console = Console()
    try:
        net = load_model(model, weights)
        dataset = load_data(data)
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("reverse-engineering a trigger per class", total=None)
            result = audits.scan(net, dataset.x, class_names=dataset.class_names, steps=steps, seed=seed,
                                 progress=lambda done, total: bar.update(task, completed=done, total=total))
        out.mkdir(parents=True, exist_ok=True)
        fixed = audits.repair(result, net, dataset.x, dataset.y, seed=seed) if repair else None
        designed = audits.attack(result, net, seed=seed) if attack else None
        report = result.to_dict()
        if repair:
            report["repair"] = _NOTHING_TO_REPAIR if fixed is None else {**fixed.to_dict(), "weights": _REPAIRED}
        if attack:
            report["attack"] = _NOTHING_TO_ATTACK if designed is None else designed.to_dict()
        if fixed is not None:
            from safetensors.torch import save_file

            save_file({k: v.detach().contiguous() for k, v in fixed.model.state_dict().items()}, str(out / _REPAIRED))
        findings = out / "findings.json"
        text = json.dumps(report, indent=1)
        atomic_write(findings, lambda tmp: Path(tmp).write_text(text))
        page = write_audit_report(out, result, dataset.x, meta={"model": model, "weights": str(weights or "—"),
                                                                "data": str(data)},
                                  repair=fixed, attack=designed)
    except (SeethroughError, OSError) as err:
        raise _fail(err) from None
    flagged = ", ".join(f"class {f.target} ({'validated' if v.validated else 'not validated'})"
                        for f, v in zip(result.findings, result.validations, strict=True))
    console.print(f"verdict: {result.verdict}   anomaly score: {result.anomaly_score:.2f}   "
                  f"flagged: {flagged or 'none'}", markup=False, highlight=False)
    if repair:
        summary = report["repair"]["status"] if fixed is None else (
            f"attack success {fixed.attack_success_before:.2f} -> {fixed.attack_success_after:.2f}, clean "
            f"accuracy {fixed.clean_accuracy_before:.3f} -> {fixed.clean_accuracy_after:.3f} (held out)")
        console.print(f"repair: {summary}", markup=False, highlight=False)
    if attack:
        record = report["attack"]
        summary = record["status"] if designed is None else (
            f"designed trigger success {record['attack_success_rate']:.2f} vs random triggers of the same size "
            f"{record['control_mean']:.2f} (max {record['control_max']:.2f}, p = {record['p_value']:.3f})")
        console.print(f"attack: {summary}", markup=False, highlight=False)
    console.print(f"findings: {findings}   report: {page}", markup=False, highlight=False)


_REPAIRED = "repaired.safetensors"
_NOTHING_TO_REPAIR = {"status": "nothing to repair: no validated trigger"}
_NOTHING_TO_ATTACK = {"status": "nothing to attack with: no validated trigger with implicated units"}


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="few seeds, small sizes: minutes on 2 cores")] = False,
    games: Annotated[str | None, typer.Option("--games", help="comma-separated game names (default: all)")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="seeds 0..N-1 (default 3 with --quick, else 10)")] = None,
    executor: Annotated[str, typer.Option("--executor", help="local or ray")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="connect to a running Ray cluster")] = None,
    db: Annotated[Path, typer.Option("--db", help="the results ledger (SQLite)")] = Path("seethrough-bench/ledger.sqlite"),
    report: Annotated[Path | None, typer.Option("--report", help="write DIR/index.html")] = Path("seethrough-bench/report"),
    json_out: Annotated[Path | None, typer.Option("--json", help="write the final table as JSON rows")] = None,
    list_games: Annotated[bool, typer.Option("--list", help="list the games and exit")] = False,
) -> None:
    """Run the ground-truth games: every case, every method, scored against chance; resumes from the ledger."""
    from rich.progress import Progress

    from .bench.executors import LocalExecutor, RayExecutor
    from .bench.ledger import Ledger
    from .bench.runner import plan, run, sections, select_games, table
    from .report.html import write_report

    console = Console()
    try:
        chosen = select_games([g.strip() for g in games.split(",") if g.strip()] if games else None)
        if list_games:
            for game in chosen:
                metrics = ", ".join(f"{m.name} (chance {m.chance:g}, bar {m.bar:g})" for m in game.metrics)
                console.print(f"{game.name}: {game.item}\n  methods: {', '.join(game.methods)}\n  metrics: {metrics}",
                              markup=False, highlight=False)
            return
        if executor not in ("local", "ray"):
            raise SeethroughError(f"--executor must be 'local' or 'ray', got {executor!r}.")
        n_seeds = seeds if seeds is not None else (3 if quick else 10)
        units = plan(chosen, list(range(n_seeds)), quick=quick)
        runner = LocalExecutor() if executor == "local" else RayExecutor(ray_address)
        with Ledger(db) as ledger:
            todo = len(units) - len(ledger.finished() & {u.key.id for u in units})
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task(f"bench ({len(units) - todo} of {len(units)} units already done)", total=todo)
                run(units, ledger, runner, progress=lambda unit, outcome: bar.advance(task))
            rows = table(ledger, units)
            parts = sections(ledger, units)
            n_errors = sum(len(p.errors) for p in parts)
            if report is not None:
                meta = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "seeds": str(n_seeds), "mode": "quick" if quick else "full", "executor": executor}
                page = write_report(report, parts, meta=meta)
    except (SeethroughError, OSError) as err:
        raise _fail(err) from None
    _print_table(console, rows)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    console.print(f"ledger: {db}" + (f"   report: {page}" if report is not None else ""), markup=False, highlight=False)
    if n_errors:
        for part in parts:
            for error in part.errors:
                Console(stderr=True).print(f"error: {error}", markup=False, highlight=False)
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
