"""Activation and attribution patching: how much of the clean-to-corrupted change does each piece carry?

Subnetworks / circuits in the survey's taxonomy. `activation_patching` runs the clean inputs with
one piece of the model (a whole site, one unit, one position, one attention head, or a position ×
unit/head pair) taking its value from the corrupted run (or its zero, mean or resample ablation),
and reports the metric's mean change divided by the clean-to-corrupted change (0 = no effect, 1 =
the whole effect). Every piece is one copy of the clean batch; the copies of all sites are stacked
in as few forward passes as ``max_rows`` allows, never one Python-level forward per piece, and
with ``blocks=`` each copy runs only the blocks at and after its patch (prefix reuse).
`attribution_patching` estimates the same effects to first order from one forward and one backward.
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
from ..core.edges import ablated_reference
from ..core.errors import InputError, InputTypeError
from ..core.hooks import Callback, hooks
from ..core.inputs import call_model, validate_inputs
from ..core.interventions import Ablation, check_ablation
from ..core.results import Result, new_figure
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from ._copies import Pieces, check_chain, cut, run_batched, run_prefix

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["Patching", "activation_patching", "attribution_patching"]


@dataclass(frozen=True)
class Patching(Result):
    """Normalised patching effects, keyed by the sites as given.

    ``effects[site]`` is a 0-d tensor for a whole site, ``(n_units,)`` for a site selecting units,
    ``(n_positions,)`` for one selecting positions and ``(n_positions, n_units)`` for both
    (``n_heads`` in place of ``n_units`` when the unit axis was split into heads). ``clean`` and
    ``corrupted`` are the metric's means on the two runs. ``method`` is ``"exact"`` (patched
    forward passes) or ``"attribution"`` (first-order estimate); ``prefix`` says whether the
    copies ran with prefix reuse (``blocks=``).
    """

    effects: dict[Any, Tensor]
    clean: float
    corrupted: float
    method: str = "exact"
    ablation: str | None = None
    n_heads: int | None = None
    prefix: bool = False

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
                "clean": jsonable(self.clean), "corrupted": jsonable(self.corrupted), "method": self.method,
                "ablation": self.ablation, "n_heads": self.n_heads, "prefix": self.prefix}


def _sites(model: nn.Module, sites: Sequence[Site | str]) -> tuple[list[Site | str], list[Site]]:
    keys = list(sites) if not isinstance(sites, (str, Site)) else [sites]
    if not keys:
        raise InputError("patching needs at least one site.")
    resolved = [resolve_site(model, s)[0] for s in keys]
    if len(set(resolved)) != len(resolved):
        raise InputError(f"sites {keys} repeat a site; list each once.")
    return keys, resolved


def _check_options(metric: Any, n_heads: int | None, ablation: str | None, seed: int) -> None:
    if not callable(metric):
        raise InputTypeError(f"metric must be a callable output -> (rows,) scores, got {type(metric).__name__}.")
    if n_heads is not None:
        check_int("n_heads", n_heads, at_least=1)
    if ablation is not None:
        check_ablation(ablation)
    check_int("seed", seed, at_least=0)


def _pair(model: nn.Module, clean: Inputs, corrupted: Inputs) -> int:
    n, n_corrupted = validate_inputs(model, clean), validate_inputs(model, corrupted)
    if n != n_corrupted:
        raise InputError(f"clean has {n} examples but corrupted has {n_corrupted}; patching pairs example i of "
                         "clean with example i of corrupted, so pass batches of the same size.")
    return n


def _run(model: nn.Module, inputs: Inputs, sites: Sequence[Site],
         edit: Callback | None = None) -> tuple[Any, dict[Site, Tensor]]:
    """The model's output on ``inputs`` and the value at each site (``edit``, if given, replaces them)."""
    values: dict[Site, Tensor] = {}

    def store(value: Tensor, site: Site) -> Tensor | None:
        values[site] = value.detach().clone()
        return None if edit is None else edit(value, site)

    ctx = hooks(model, dict.fromkeys(sites, store), refuse_repeats=True)
    with ctx:
        out = ctx.call(inputs)
    return out, values


def _mean(scores: Any, n: int) -> float:
    """The mean of the metric's scores on one run of the n examples, after checking their shape."""
    if not isinstance(scores, Tensor) or tuple(scores.shape) != (n,):
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise InputError(f"metric must return one score per example, shape ({n},); got {got}.")
    return float(scores.detach().double().mean())


def _gap(clean_mean: float, corrupted_mean: float) -> float:
    gap = corrupted_mean - clean_mean
    if not np.isfinite(gap) or gap == 0:
        raise InputError(f"the metric's mean is {clean_mean} on clean and {corrupted_mean} on corrupted inputs; "
                         "normalised effects need a clean-to-corrupted change: pick inputs or a metric that differ.")
    return gap


def _pieces(resolved: Sequence[Site], values: dict[Site, Tensor], n: int, n_heads: int | None,
            ablation: str | None, seed: int) -> list[Pieces]:
    out = []
    for site in resolved:
        value = values[dataclasses.replace(site, units=None, positions=None)]
        out.append(cut(site, value if ablation is None else ablated_reference(value, ablation, n, seed), n_heads))
    return out


def activation_patching(model: nn.Module, clean: Inputs, corrupted: Inputs, sites: Sequence[Site | str],
                        metric: Callable[[Any], Tensor], *, n_heads: int | None = None,
                        ablation: Ablation | None = None, seed: int = 0, blocks: Sequence[str] | None = None,
                        max_rows: int = 4096) -> Patching:
    """Patch each piece of each site from the corrupted run into the clean run; return normalised effects.

    ``effects[site] = (mean metric(patched) - mean metric(clean)) / (mean metric(corrupted) - mean metric(clean))``:
    0 when the piece carries none of the change, 1 when it carries all of it. A site without a
    unit or position selection is patched whole (one scalar); a site selecting units gives one
    effect per unit, one selecting positions one per position (negative positions count from
    the end), and both a ``(positions, units)`` grid. Example ``i`` of ``clean`` takes its values
    from example ``i`` of ``corrupted``.

    Every piece is one copy of the clean batch; the copies of all sites are stacked copy-major,
    ``max_rows // batch`` of them in one forward pass, each site's hook editing its own copies.
    With ``blocks`` (module paths the stream passes through one after another, ending with the
    module whose output the model returns), a copy patched at a block's input or output joins the
    batch there and runs only the blocks after it: the blocks before it ran once, on the clean batch.

    Args:
        model: any ``nn.Module`` (left unchanged).
        clean: the inputs the model is run on.
        corrupted: inputs of the same batch size, whose values are patched in.
        sites: `Site`\\ s or module paths; ``effects`` is keyed by them exactly as given.
        metric: model output → one score per row (copies are stacked copy-major, see
            `seethrough.evidence.per_example`).
        n_heads: split each site's unit axis into this many equal contiguous groups (attention
            heads: use the input of the attention's output projection, where head ``h`` is units
            ``h * d_head ... (h + 1) * d_head - 1``); one effect per head (per position and head
            if the site selects positions).
        ablation: what a patched piece takes: None (default), the paired corrupted example's
            value; ``"zero"``, zeros; ``"mean"``, the mean over the corrupted batch (per position);
            ``"resample"``, the value of a corrupted example drawn with replacement (``seed``).
            The normalisation stays the clean-to-corrupted change of the metric.
        seed: seeds the resample draw.
        blocks: the chain of blocks for prefix reuse. Checked on the clean batch: each block's
            input is the previous one's output and the model returns the last one's output (before
            any copy runs); and calling each block alone reproduces the run (on clean rows that
            run beside the first pass of copies). Sites not at a block's input or output run in
            the plain stacked copies.
        max_rows: rows per forward pass (``max_rows // batch`` patched copies at once).

    Returns:
        `Patching` with ``effects``, and the metric's clean and corrupted means.

    Raises:
        InputError: batches of different sizes, no sites or repeated ones, a metric without one
            score per row, equal clean and corrupted means, a bad selection or ``n_heads``, or
            ``blocks`` that do not form such a chain.
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
    keys, resolved = _sites(model, sites)
    _check_options(metric, n_heads, ablation, seed)
    check_int("max_rows", max_rows, at_least=1)
    if blocks is not None:
        for path in blocks if not isinstance(blocks, str) else [blocks]:
            resolve_site(model, path)
    n = _pair(model, clean, corrupted)
    whole = list(dict.fromkeys(dataclasses.replace(s, units=None, positions=None) for s in resolved))
    with torch.no_grad():
        corrupted_out, values = _run(model, corrupted, whole)
        chain = check_chain(model, clean, blocks) if blocks is not None else None
        clean_out = chain.stream[-1] if chain is not None else call_model(model, clean)
    clean_mean, corrupted_mean = _mean(metric(clean_out), n), _mean(metric(corrupted_out), n)
    gap = _gap(clean_mean, corrupted_mean)
    pieces = _pieces(resolved, values, n, n_heads, ablation, seed)
    starts = [None if chain is None else chain.start(p.site) for p in pieces]
    means: list[Tensor | None] = [None] * len(pieces)
    reuse = [i for i, s in enumerate(starts) if s is not None]
    plain = [i for i, s in enumerate(starts) if s is None]
    if reuse:
        assert chain is not None
        got = run_prefix(chain, n, [pieces[i] for i in reuse], [int(starts[i] or 0) for i in reuse], metric, max_rows)
        for i, m in zip(reuse, got, strict=True):
            means[i] = m
    if plain:
        with torch.no_grad():
            got = run_batched(model, clean, n, [pieces[i] for i in plain], metric, max_rows)
        for i, m in zip(plain, got, strict=True):
            means[i] = m
    effects: dict[Any, Tensor] = {}
    for key, piece, m in zip(keys, pieces, means, strict=True):
        assert m is not None
        effects[key] = ((m - clean_mean) / gap).to(torch.float32).reshape(piece.shape)
    return Patching(effects, clean_mean, corrupted_mean, "exact", ablation, n_heads, bool(reuse))


def attribution_patching(model: nn.Module, clean: Inputs, corrupted: Inputs, sites: Sequence[Site | str],
                         metric: Callable[[Any], Tensor], *, n_heads: int | None = None,
                         ablation: Ablation | None = None, seed: int = 0) -> Patching:
    """First-order estimates of `activation_patching`'s effects from one forward and one backward pass.

    For each piece, ``mean_i Σ_piece (source_i - clean_i) · ∂metric_i/∂value`` at the clean run,
    divided by the clean-to-corrupted change of the metric's mean (Nanda's attribution patching;
    ``source`` is the corrupted value or its ``ablation``). Exact for a metric linear in the
    site's value; a piece behind a saturated nonlinearity (zero gradient on the clean run) is
    missed. Gradients are taken at zero tensors added at each site, so no parameter gets a
    ``.grad``. Arguments and shapes as in `activation_patching` (one corrupted forward pass, one
    clean forward pass and its backward).

    Returns:
        `Patching` with ``method="attribution"``.

    Raises:
        InputError: as `activation_patching`.
        SiteNotFoundError: an unknown path (before any forward pass).

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))   # linear: the estimate is exact
        >>> res = attribution_patching(model, torch.ones(4, 2), -torch.ones(4, 2), ["0"], lambda out: out[:, 0])
        >>> round(float(res.effects["0"]), 6)
        1.0

    References:
        Nanda, "Attribution patching: activation patching at industrial scale", 2023; Syed et al.,
        "Attribution patching outperforms automated circuit discovery", 2023.
    """
    keys, resolved = _sites(model, sites)
    _check_options(metric, n_heads, ablation, seed)
    n = _pair(model, clean, corrupted)
    whole = list(dict.fromkeys(dataclasses.replace(s, units=None, positions=None) for s in resolved))
    with torch.no_grad():
        corrupted_out, values = _run(model, corrupted, whole)
    corrupted_mean = _mean(metric(corrupted_out), n)
    pieces = _pieces(resolved, values, n, n_heads, ablation, seed)
    leaves: dict[Site, Tensor] = {}

    def add_leaf(value: Tensor, site: Site) -> Tensor:
        leaves[site] = torch.zeros_like(value, requires_grad=True)
        return value + leaves[site]

    with torch.enable_grad():
        out, clean_values = _run(model, clean, whole, add_leaf)
        scores = metric(out)
        clean_mean = _mean(scores, n)
        gap = _gap(clean_mean, corrupted_mean)
        grads = torch.autograd.grad(scores.sum(), [leaves[s] for s in whole], allow_unused=True)
    grad_at = {s: (torch.zeros_like(leaves[s]) if g is None else g.detach()) for s, g in zip(whole, grads, strict=True)}
    effects: dict[Any, Tensor] = {}
    for key, piece in zip(keys, pieces, strict=True):
        per_unit = ((piece.source - clean_values[piece.site]) * grad_at[piece.site]).mean(0)
        estimate = (piece.masks.flatten(1).to(per_unit) @ per_unit.flatten()).double()
        effects[key] = (estimate / gap).to(torch.float32).reshape(piece.shape)
    return Patching(effects, clean_mean, corrupted_mean, "attribution", ablation, n_heads, False)
