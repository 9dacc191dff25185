"""A model's map: every site name, its type, parameter counts and (given inputs) output shapes.

This is what `seethrough inspect` prints; it is the first thing to look at before choosing sites.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .errors import SiteError
from .hooks import hooks
from .inputs import describe_inputs, validate_inputs
from .results import Result, new_figure
from .sites import Site
from .types import Inputs

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["ModuleRow", "ModelSummary", "inspect_model"]


@dataclass(frozen=True)
class ModuleRow:
    """One module: its site path, depth, class, parameters (own and total) and observed outputs."""

    path: str
    depth: int
    kind: str
    own_params: int
    total_params: int
    trainable_params: int
    output_shapes: tuple[tuple[int, ...], ...] | None = None  # one per call; None if not observed


@dataclass(frozen=True)
class ModelSummary(Result):
    """The result of `inspect_model`: one `ModuleRow` per module in ``named_modules()`` order."""

    model_name: str
    rows: tuple[ModuleRow, ...]
    input_description: str | None = None

    @property
    def total_params(self) -> int:
        return self.rows[0].total_params if self.rows else 0

    def to_frame(self) -> pandas.DataFrame:
        """The rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame([
            {"site": r.path or "(model)", "depth": r.depth, "type": r.kind, "own_params": r.own_params,
             "params": r.total_params, "trainable": r.trainable_params,
             "calls": None if r.output_shapes is None else len(r.output_shapes),
             "output_shape": None if not r.output_shapes else str(list(r.output_shapes[0]))}
            for r in self.rows
        ])

    def plot(self) -> Figure:
        """Each module's own parameter count (horizontal bars, in ``named_modules()`` order)."""
        rows = [r for r in self.rows if r.own_params] or list(self.rows[:1])
        fig = new_figure(5, 1.0 + 0.25 * len(rows))
        ax = fig.add_subplot()
        ax.barh(range(len(rows)), [r.own_params for r in rows])
        ax.set_yticks(range(len(rows)), [f"{r.path or '(model)'} ({r.kind})" for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"own parameters (total {self.total_params:,})")
        return fig


def _count(module: nn.Module, recurse: bool) -> tuple[int, int]:
    params = list(module.parameters(recurse=recurse))
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def inspect_model(model: nn.Module, inputs: Inputs | None = None) -> ModelSummary:
    """Summarise ``model``; with ``inputs``, run one no-grad forward and record output shapes.

    Modules whose output holds no tensor are shown without a shape. The model is left unchanged.

    Example:
        >>> s = inspect_model(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), torch.zeros(4, 2))
        >>> [(r.path, r.total_params, r.output_shapes) for r in s.rows]
        [('', 9, ((4, 3),)), ('0', 9, ((4, 3),)), ('1', 0, ((4, 3),))]
    """
    shapes: dict[str, list[tuple[int, ...]]] = {}
    described = None
    if inputs is not None:
        validate_inputs(model, inputs)
        described = describe_inputs(inputs)
        skip: set[str] = set()

        def record(value: Tensor, site: Site) -> None:
            shapes.setdefault(site.path, []).append(tuple(value.shape))

        # A module whose output holds no tensor raises SiteError naming it; drop it and retry.
        for _ in range(len(list(model.modules())) + 1):
            shapes.clear()
            sites = {Site(name): record for name, _ in model.named_modules() if name not in skip}
            try:
                ctx = hooks(model, sites, require_fired=False)
                with torch.no_grad(), ctx:
                    ctx.call(inputs)
                break
            except SiteError as err:
                if not isinstance(err.site, Site) or err.site.path in skip:
                    raise
                skip.add(err.site.path)
    rows = []
    for name, module in model.named_modules():
        own, _ = _count(module, recurse=False)
        total, trainable = _count(module, recurse=True)
        observed = shapes.get(name)
        rows.append(ModuleRow(name, 0 if not name else name.count(".") + 1, type(module).__name__, own, total,
                              trainable, None if observed is None else tuple(observed)))
    return ModelSummary(type(model).__name__, tuple(rows), described)
