"""The ``seethrough`` command line (typer + rich).

Commands: ``inspect`` (the module tree, site names, parameter counts, output shapes). Errors end
with a one-line reason on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .core.errors import SeethroughError
from .core.inspection import inspect_model
from .core.io import load_data, load_model

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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
