"""Activation patching: how much of the clean-to-corrupted change of a metric does each piece carry?

Subnetworks / circuits in the survey's taxonomy. `activation_patching` runs the clean inputs with
one piece of the model (a whole site, one selected unit, or one selected position) taking its
value from the corrupted run, and reports the metric's mean change divided by the clean-to-corrupted
change (0 = no effect, 1 = the whole effect). Every piece of a site is one copy of the clean batch
in `seethrough.core.patch_each`, edited with `seethrough.core.replace_slice`: many copies per
forward pass, never one Python-level forward per unit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core.checks import check_int
from ..core.errors import InputError
from ..core.hooks import Callback, capture
from ..core.interventions import patch_each, replace_slice
from ..core.results import Result, new_figure
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from ._metrics import metric_means

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["Patching", "activation_patching"]


@dataclass(frozen=True)
class Patching(Result):
    """Normalised patching effects, keyed by the sites as given.

    ``effects[site]`` is a 0-d tensor for a whole site, ``(n_units,)`` for a site selecting units,
    ``(n_positions,)`` for one selecting positions and ``(n_positions, n_units)`` for both.
    ``clean`` and ``corrupted`` are the metric's means on the two runs.
    """

    effects: dict[Any, Tensor]
    clean: float
    corrupted: float

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        rows = []
        for site, values in self.effects.items():
            name = site if isinstance(site, str) else repr(site)
            for index, value in np.ndenumerate(values.numpy()):
                rows.append((name, str(index) if index else "", float(value)))
        return pd.DataFrame(rows, columns=["site", "piece", "effect"])

    def plot(self) -> Figure:
        frame = self.to_frame()
        fig = new_figure(5, 2.6)
        ax = fig.add_subplot()
        ax.bar(range(len(frame)), frame["effect"].tolist())
        ax.set_xticks(range(len(frame)), [f"{s} {p}" for s, p in zip(frame["site"], frame["piece"], strict=True)],
                      rotation=60, ha="right", fontsize=6)
        ax.set_ylabel("normalised effect")
        return fig

    def to_dict(self) -> dict[str, Any]:
        from ..core.results import jsonable

        return {"effects": [{"site": jsonable(site), "effect": jsonable(value)} for site, value in self.effects.items()],
                "clean": jsonable(self.clean), "corrupted": jsonable(self.corrupted)}


def _pieces(site: Site, value: Tensor) -> tuple[list[Callback], tuple[int, ...]]:
    """One `replace_slice` edit per selected unit / position (one for a whole site), and the effects' shape."""
    positions = None
    if site.positions is not None:
        if value.ndim < 3:
            raise InputError(f"{site!r} selects positions, but its value has shape {tuple(value.shape)}; positions "
                             "index dim 1 of (batch, seq, d) values.")
        positions = [p % value.shape[1] for p in site.positions]
    units = None if site.units is None else list(site.units)
    if units is None and positions is None:
        return [replace_slice(value)], ()
    if positions is None:
        return [replace_slice(value, units=[u]) for u in units or ()], (len(units or ()),)
    if units is None:
        return [replace_slice(value, positions=[p]) for p in positions], (len(positions),)
    return ([replace_slice(value, units=[u], positions=[p]) for p in positions for u in units],
            (len(positions), len(units)))


def activation_patching(model: nn.Module, clean: Inputs, corrupted: Inputs, sites: Sequence[Site | str],
                        metric: Callable[[Any], Tensor], *, max_rows: int = 4096) -> Patching:
    """Patch each piece of each site from the corrupted run into the clean run; return normalised effects.

    ``effects[site] = (mean metric(patched) - mean metric(clean)) / (mean metric(corrupted) - mean metric(clean))``:
    0 when the piece carries none of the change, 1 when it carries all of it. A site without a
    unit or position selection is patched whole (one scalar); a site selecting units gives one
    effect per unit, one selecting positions one per position (negative positions count from
    the end), and both a ``(positions, units)`` grid. Example ``i`` of ``clean`` takes its values
    from example ``i`` of ``corrupted``.

    Args:
        model: any ``nn.Module`` (left unchanged).
        clean: the inputs the model is run on.
        corrupted: inputs of the same batch size, whose values are patched in.
        sites: `Site`\\ s or module paths; ``effects`` is keyed by them exactly as given.
        metric: model output → one score per row (copies are stacked copy-major, see
            `seethrough.evidence.per_example`).
        max_rows: rows per forward pass (``max_rows // batch`` patched copies at once).

    Returns:
        `Patching` with ``effects``, and the metric's clean and corrupted means.

    Raises:
        InputError: batches of different sizes, no sites or repeated ones, a metric without one
            score per row, equal clean and corrupted means, or a bad selection.
        SiteNotFoundError: an unknown path (before any forward pass).

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> clean, corrupted = torch.ones(4, 2), -torch.ones(4, 2)
        >>> res = activation_patching(model, clean, corrupted, ["1", Site("0", units=[0, 2])], lambda out: out[:, 0])
        >>> float(res.effects["1"])
        1.0

    References:
        Meng et al., "Locating and editing factual associations in GPT", 2022; Heimersheim & Nanda,
        "How to use and interpret activation patching", 2024.
    """
    sites = list(sites) if not isinstance(sites, (str, Site)) else [sites]
    if not sites:
        raise InputError("activation_patching needs at least one site.")
    check_int("max_rows", max_rows, at_least=1)
    resolved = [resolve_site(model, s)[0] for s in sites]
    if len(set(resolved)) != len(resolved):
        raise InputError(f"sites {sites} repeat a site; list each once.")
    clean_mean, corrupted_mean = metric_means(model, clean, corrupted, metric)
    gap = corrupted_mean - clean_mean
    whole = [dataclasses.replace(s, units=None, positions=None) for s in resolved]
    effects: dict[Any, Tensor] = {}
    with torch.no_grad():
        values = capture(model, corrupted, whole, clone=True)
        for key, site, at in zip(sites, resolved, whole, strict=True):
            edits, shape = _pieces(site, values[at])
            scores = patch_each(model, clean, at, edits, metric, max_rows=max_rows).double()
            effects[key] = ((scores.mean(dim=1) - clean_mean) / gap).to(torch.float32).reshape(shape)
    return Patching(effects, clean_mean, corrupted_mean)
