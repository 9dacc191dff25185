"""Many lesioned copies of one batch in few forward passes: the engine of lesion tests and the ablation graph.

Copy ``c`` of the batch has, at each layer path, the units where ``masks[path][c]`` is True replaced
by ``fills[path]`` (zeros, or each unit's mean); copies are stacked copy-major (row r of a chunk is
example r mod n), as many per forward pass as ``max_rows`` allows. Every edit goes through
`core.hooks` (`seethrough.hooks`), so nothing outlives the call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..core import Site, capture, hooks, unit_means
from ..core.inputs import batch_size_of, repeat_inputs, validate_inputs
from ..core.types import Inputs

Observe = Callable[[Any, dict[str, Tensor], int], Tensor]


def unit_fills(model: nn.Module, inputs: Inputs, paths: Sequence[str], ablation: str) -> dict[str, Tensor]:
    """What an ablated unit of each path takes: zeros, or its mean over ``inputs`` (``ablation`` "zero"/"mean")."""
    values = capture(model, inputs, list(paths), clone=True)
    out = {}
    for path in paths:
        site = Site(path)
        means = unit_means(values[path].detach(), site)
        out[path] = torch.zeros_like(means) if ablation == "zero" else means
    return out


def _edit(mask: Tensor, fill: Tensor, n: int) -> Callable[[Tensor, Site], Tensor]:
    def edit(value: Tensor, site: Site) -> Tensor:
        axis = site.unit_axis(value)
        copies = value.shape[0] // n
        shape = [copies, 1] + [1] * (value.ndim - 1)
        shape[axis + 1] = value.shape[axis]
        where = mask.to(value.device).view(shape)
        fill_shape = [1, 1] + [1] * (value.ndim - 1)
        fill_shape[axis + 1] = value.shape[axis]
        fills = fill.to(value).view(fill_shape)
        grouped = value.view(copies, n, *value.shape[1:])
        return torch.where(where, fills, grouped).view_as(value)
    return edit


def _recorder(edit: Callable[[Tensor, Site], Tensor] | None, into: dict[str, Tensor]) -> Callable[[Tensor, Site], Tensor | None]:
    """A callback that applies ``edit`` (if any) and keeps the resulting value under the site's path."""
    def keep(value: Tensor, site: Site) -> Tensor | None:
        new = edit(value, site) if edit is not None else None
        into[site.path] = value if new is None else new
        return new
    return keep


def run_copies(model: nn.Module, inputs: Inputs, masks: Mapping[str, Tensor], fills: Mapping[str, Tensor],
               observe: Observe, *, record: Sequence[str] = (), max_rows: int = 4096) -> Tensor:
    """``observe(output, recorded, copies)`` for every chunk of lesioned copies, concatenated along dim 0.

    ``masks[path]`` is ``(n_copies, n_units)`` bool (the same ``n_copies`` for every path);
    ``recorded`` holds the (edited) values of the ``record`` paths for the chunk's rows.
    """
    n = validate_inputs(model, inputs)
    n_copies = next(iter(masks.values())).shape[0]
    per_pass = max(1, max_rows // n)
    out = []
    with torch.no_grad():
        for start in range(0, n_copies, per_pass):
            stop = min(n_copies, start + per_pass)
            batch = repeat_inputs(inputs, stop - start)
            recorded: dict[str, Tensor] = {}
            callbacks: dict[Site | str, Any] = {}
            for path in {*masks, *record}:
                edit = _edit(masks[path][start:stop], fills[path], n) if path in masks else None
                callbacks[path] = _recorder(edit, recorded) if path in record else edit
            ctx = hooks(model, callbacks, refuse_repeats=True)
            with ctx:
                output = ctx.call(batch)
            out.append(observe(output, recorded, stop - start))
    return torch.cat(out)


def copy_means(metrics: Sequence[Callable[[Any], Tensor]], n: int) -> Observe:
    """An observer: each metric's mean per copy, ``(copies, n_metrics)`` float64."""
    def observe(output: Any, recorded: dict[str, Tensor], copies: int) -> Tensor:
        return torch.stack([m(output).double().reshape(copies, n).mean(1) for m in metrics], dim=1)
    return observe


def n_rows(inputs: Inputs) -> int:
    return batch_size_of(inputs)
