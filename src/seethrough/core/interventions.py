"""Interventions: the value edits that ablation, steering, validation and patching sweeps compose.

Each edit is a `patch` callback ``fn(value, site) -> Tensor``, built once by a small factory:
zero, mean or resample ablation of units, replacing a slice by another run's values, projecting a
direction out, adding a direction. `along_units` is the one way to place a vector along the unit
axis of a site's value. `patch_each` is the tiled engine: many edited copies of one batch, stacked
copy-major, in as few forward passes as ``max_rows`` allows (unit importance, frivolous units,
activation patching). `position_mask` says which positions of a ``(batch, seq, d)`` value count
(an HF ``attention_mask`` by default), so reference values (`unit_means`, `resample_draws`) and the
dataset summaries of `seethrough.neurons` leave padding out. Nothing here registers a hook: every
edit runs through `core.hooks.patch`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .checks import check_float, check_int
from .errors import InputError, InputTypeError, SiteError
from .hooks import Callback, patch
from .inputs import repeat_inputs, validate_inputs
from .references import (
    along_units,
    check_position_mask,
    position_mask,
    resample_draws,
    resample_indices,
    unit_means,
    unit_values,
)
from .sites import Site
from .types import Inputs

__all__ = ["Ablation", "ABLATIONS", "check_ablation", "along_units", "unit_means", "unit_values",
           "resample_indices", "resample_draws", "check_position_mask", "position_mask",
           "zero_ablation", "mean_ablation", "resample_ablation", "replace_slice", "project_out", "add_direction",
           "patch_each"]

#: The kinds of ablation: replace a unit by 0, by its mean over reference data, or by its value on a
#: reference example drawn uniformly with replacement (resample ablation).
Ablation = Literal["zero", "mean", "resample"]
ABLATIONS: tuple[str, ...] = ("zero", "mean", "resample")


def check_ablation(ablation: str, allowed: Sequence[str] = ABLATIONS) -> str:
    """Return ``ablation`` if it is one of ``allowed``, else raise `InputError` naming the choices.

    Example:
        >>> check_ablation("mean")
        'mean'
    """
    if not isinstance(ablation, str) or ablation not in allowed:
        names = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}" if len(allowed) > 1 \
            else repr(allowed[0])
        raise InputError(f"ablation must be {names}, got {ablation!r}.")
    return ablation


# -- selections ------------------------------------------------------------------------------


def _as_indices(name: str, indices: Iterable[int] | None) -> tuple[int, ...] | None:
    """Distinct non-negative ints (numpy and 0-d integer tensors accepted), or None for all."""
    if indices is None:
        return None
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Iterable):
        raise InputTypeError(f"{name} must be a sequence of ints or None, got {type(indices).__name__}.")
    out: list[int] = []
    for i in indices:
        if isinstance(i, Tensor) and i.ndim == 0 and not i.is_floating_point():
            i = int(i.item())
        if isinstance(i, bool) or not hasattr(i, "__index__"):
            raise InputTypeError(f"{name} must hold ints, got {i!r} ({type(i).__name__}).")
        out.append(int(i))
    if not out or len(set(out)) != len(out) or min(out) < 0:
        raise InputError(f"{name} must be distinct non-negative indices (at least one), got {out}; pass None "
                         "for all.")
    return tuple(out)


def _mask(value: Tensor, site: Site, units: tuple[int, ...] | None,
          positions: tuple[int, ...] | None = None) -> Tensor:
    """Bool mask, broadcastable to ``value``: True at the selected units (and positions)."""
    axis = site.unit_axis(value)
    n_units = value.shape[axis]
    chosen = torch.ones(n_units, dtype=torch.bool)
    if units is not None:
        bad = [u for u in units if u >= n_units]
        if bad:
            raise InputError(f"units {bad} are out of range for {n_units} units at {site!r} (unit axis {axis}).")
        chosen = torch.zeros(n_units, dtype=torch.bool)
        chosen[list(units)] = True
    mask = along_units(chosen, value, site, name="unit mask")
    if positions is None:
        return mask
    if value.ndim < 3 or axis == 1:
        raise InputError(f"{site!r}: positions are indices along dim 1, but dim 1 of a value of shape "
                         f"{tuple(value.shape)} is its unit axis; select positions only on (batch, seq, d) values.")
    n_pos = value.shape[1]
    bad = [p for p in positions if p >= n_pos]
    if bad:
        raise InputError(f"positions {bad} are out of range for {n_pos} positions at {site!r}.")
    at = torch.zeros(n_pos, dtype=torch.bool, device=value.device)
    at[list(positions)] = True
    return mask & at.view([1, -1] + [1] * (value.ndim - 2))


# -- the edits (each a patch callback) -------------------------------------------------------


def zero_ablation(units: Sequence[int] | None = None) -> Callback:
    """A callback that sets ``units`` (indices along the unit axis; None: every unit) to 0.

    Example:
        >>> zero_ablation([1])(torch.ones(2, 3), Site("fc")).tolist()
        [[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]
    """
    chosen = _as_indices("units", units)

    def edit(value: Tensor, site: Site) -> Tensor:
        return torch.where(_mask(value, site, chosen), torch.zeros((), dtype=value.dtype, device=value.device),
                           value)

    return edit


def mean_ablation(means: Tensor, units: Sequence[int] | None = None) -> Callback:
    """A callback that sets each of ``units`` to its entry of ``means`` (one per unit, see `unit_means`).

    Example:
        >>> mean_ablation(torch.tensor([5.0, 6.0, 7.0]), [0, 2])(torch.zeros(1, 3), Site("fc")).tolist()
        [[5.0, 0.0, 7.0]]
    """
    if not isinstance(means, Tensor) or means.ndim != 1:
        raise InputError(f"means must be a 1-D tensor with one entry per unit, got {getattr(means, 'shape', means)}.")
    chosen = _as_indices("units", units)
    fixed = means.detach()

    def edit(value: Tensor, site: Site) -> Tensor:
        return torch.where(_mask(value, site, chosen), along_units(fixed, value, site, name="means"), value)

    return edit


def replace_slice(source: Tensor, *, units: Sequence[int] | None = None,
                  positions: Sequence[int] | None = None) -> Callback:
    """A callback that copies ``source``'s values into the selected units (and positions) of the value.

    ``source`` broadcasts to the value (typically the same site's value on other inputs, one row
    per example: activation patching); units run along the unit axis and positions along dim 1,
    as in `Site`. None selects everything along that axis.

    Example:
        >>> replace_slice(torch.full((2, 3), 9.0), units=[2])(torch.zeros(2, 3), Site("fc")).tolist()
        [[0.0, 0.0, 9.0], [0.0, 0.0, 9.0]]
    """
    if not isinstance(source, Tensor):
        raise InputTypeError(f"source must be a Tensor, got {type(source).__name__}.")
    chosen, at = _as_indices("units", units), _as_indices("positions", positions)
    fixed = source.detach()

    def edit(value: Tensor, site: Site) -> Tensor:
        try:
            fill = fixed.to(value).broadcast_to(value.shape)
        except RuntimeError:
            raise SiteError(f"{site!r}: source of shape {tuple(fixed.shape)} does not broadcast to the value's "
                            f"shape {tuple(value.shape)}.") from None
        return torch.where(_mask(value, site, chosen, at), fill, value)

    return edit


def resample_ablation(reference: Tensor, units: Sequence[int] | None = None, *, seed: int = 0,
                      mask: Tensor | None = None) -> Callback:
    """A callback that gives each example the ``units`` of one reference row drawn with replacement.

    ``reference`` holds the site's values on reference inputs (rows = examples). Each call draws
    ``resample_indices(len(reference), batch, seed=seed)[0]`` afresh from ``seed``, so the callback
    is deterministic; every ablated unit of an example uses the same reference row. With ``mask``
    (``(n_reference, seq)`` bool, True at the reference's real positions) every position takes
    one real reference token instead, never padding (`resample_draws`).

    Example:
        >>> resample_ablation(torch.tensor([[4.0, 5.0]]), [1])(torch.zeros(2, 2), Site("fc")).tolist()
        [[0.0, 5.0], [0.0, 5.0]]
    """
    if not isinstance(reference, Tensor) or reference.ndim < 1 or reference.shape[0] == 0:
        raise InputError("reference must be a tensor of site values with at least one row.")
    chosen = _as_indices("units", units)
    fixed = reference.detach()
    keep = check_position_mask(mask)

    def edit(value: Tensor, site: Site) -> Tensor:
        source = resample_draws(fixed, value, site, seed=seed, mask=keep)[0]
        return torch.where(_mask(value, site, chosen), source.to(value), value)

    return edit


def _direction(direction: Tensor) -> Tensor:
    if not isinstance(direction, Tensor):
        raise InputTypeError(f"direction must be a 1-D Tensor, got {type(direction).__name__}.")
    if direction.ndim != 1 or len(direction) == 0 or direction.dtype == torch.bool or direction.is_complex():
        raise InputError(f"direction must be a non-empty 1-D real tensor (one entry per unit), got "
                         f"{direction.dtype} of shape {tuple(direction.shape)}.")
    if not bool(torch.isfinite(direction).all()):
        raise InputError("direction contains NaN/inf; pass a finite vector.")
    d = direction.detach()
    return d if d.is_floating_point() else d.to(torch.get_default_dtype())


def project_out(direction: Tensor) -> Callback:
    """A callback that removes the component along ``direction`` (normalised here) from every unit vector.

    ``value - (value · u) u`` along the unit axis, with ``u = direction / ‖direction‖``.

    Example:
        >>> project_out(torch.tensor([0.0, 2.0]))(torch.tensor([[3.0, 4.0]]), Site("fc")).tolist()
        [[3.0, 0.0]]
    """
    d = _direction(direction)
    norm = d.norm()
    if not float(norm) > 0:
        raise InputError("direction is zero; a direction to project out needs a non-zero norm.")
    u = d / norm

    def edit(value: Tensor, site: Site) -> Tensor:
        along = along_units(u, value, site, name="direction")
        return value - (value * along).sum(dim=site.unit_axis(value), keepdim=True) * along

    return edit


def add_direction(direction: Tensor, *, alpha: float) -> Callback:
    """A callback that adds ``alpha * direction`` (as given, not normalised) to every unit vector.

    Example:
        >>> add_direction(torch.tensor([1.0, 0.0]), alpha=2.0)(torch.zeros(1, 2), Site("fc")).tolist()
        [[2.0, 0.0]]
    """
    d = _direction(direction)
    delta = check_float("alpha", alpha) * d

    def edit(value: Tensor, site: Site) -> Tensor:
        return value + along_units(delta, value, site, name="direction")

    return edit


# -- the tiled engine: one edit per copy of the batch ------------------------------------------


def patch_each(model: nn.Module, inputs: Inputs, site: Site | str, edits: Sequence[Callback],
               metric: Callable[[Any], Tensor], *, max_rows: int = 4096) -> Tensor:
    """Score every edit: ``out[j, i]`` is ``metric`` on example ``i`` with ``edits[j]`` applied at ``site``.

    The batch is tiled, one copy per edit, and ``max(1, max_rows // batch)`` copies run in one
    forward pass. Copies are stacked **copy-major**: in a pass over ``c`` copies, rows
    ``j * batch ... (j + 1) * batch - 1`` are copy ``j`` (as `repeat_inputs` stacks them), and edit ``j``
    sees exactly that tile ``(batch, ...)`` of the site's value as ``fn(tile, site)``. The result
    equals running ``patch(model, inputs, {site: edits[j]})`` once per edit (a test shows it), for
    edits that treat examples independently. Think TransformerLens's ``generic_activation_patch``
    with the setters bound beforehand (any `Callback`, e.g. ``functools.partial(setter, units=[3])``).

    Args:
        model: any ``nn.Module`` (left unchanged).
        inputs: the batch.
        site: where the edits apply (a site selecting units/positions hands edits that slice).
        edits: callbacks ``fn(value, site) -> Tensor | None`` (None leaves the copy unedited).
        metric: maps the output of one pass over ``c`` copies to ``(c * batch, ...)`` scores.
        max_rows: rows per forward pass.

    Returns:
        ``(len(edits), batch, ...)``: the metric's scores, one block per edit.

    Raises:
        InputError: no edits, a bad ``max_rows``, or a metric that does not give one score per row.
        SiteError: an edit returned a tensor of another shape.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> scores = patch_each(model, torch.ones(4, 2), "1", [zero_ablation([u]) for u in range(3)],
        ...                     lambda out: out[:, 0])
        >>> scores.shape
        torch.Size([3, 4])
    """
    edits = list(edits)
    if not edits:
        raise InputError("patch_each needs at least one edit.")
    for edit in edits:
        if not callable(edit):
            raise InputTypeError(f"each edit must be a callable fn(value, site), got {type(edit).__name__}.")
    check_int("max_rows", max_rows, at_least=1)
    n = validate_inputs(model, inputs)
    per_pass = max(1, max_rows // n)
    out: list[Tensor] = []
    for start in range(0, len(edits), per_pass):
        chunk = edits[start:start + per_pass]
        c = len(chunk)

        def edit_each(value: Tensor, where: Site, chunk: list[Callback] = chunk, c: int = c) -> Tensor:
            tiles = value.reshape(c, n, *value.shape[1:])
            return torch.cat([_apply(edit, tile, where) for edit, tile in zip(chunk, tiles, strict=True)]
                             ).view_as(value)

        scores = metric(patch(model, repeat_inputs(inputs, c), {site: edit_each}))
        if not isinstance(scores, Tensor) or scores.ndim < 1 or scores.shape[0] != c * n:
            got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise InputError(f"metric must return one score per row, ({c * n}, ...) for {c} copies of {n} "
                             f"examples; got {got}.")
        out.append(scores.reshape(c, n, *scores.shape[1:]))
    return torch.cat(out)


def _apply(edit: Callback, tile: Tensor, site: Site) -> Tensor:
    new = edit(tile, site)
    if new is None:
        return tile
    if not isinstance(new, Tensor) or new.shape != tile.shape:
        got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
        raise SiteError(f"{site!r}: an edit returned {got} for a copy of shape {tuple(tile.shape)}; return a tensor "
                        "of the same shape (or None).", site=site)
    return new
