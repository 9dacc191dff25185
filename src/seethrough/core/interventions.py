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

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .checks import check_float, check_int
from .errors import InputError, InputTypeError, SiteError
from .hooks import Callback, patch
from .inputs import repeat_inputs, validate_inputs
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


# -- placing vectors along the unit axis ---------------------------------------------------


def along_units(vector: Tensor, value: Tensor, site: Site, *, name: str = "vector") -> Tensor:
    """``vector`` (one entry per unit) shaped to broadcast along the unit axis of ``value``.

    The unit axis is `Site.unit_axis` (dim 1 of ``(batch, d)`` and ``(batch, C, H, W)``, the last
    dim of ``(batch, seq, d_model)``). The result is on ``value``'s device; a floating vector also
    takes ``value``'s floating dtype (a bool or integer vector keeps its own).

    Args:
        vector: ``(n_units,)``.
        value: the site's value, e.g. ``(batch, n_units)`` or ``(batch, seq, n_units)``.
        site: the site ``value`` came from (its ``unit_dim`` rule picks the axis).
        name: what the vector is, for the error message.

    Raises:
        InputError: ``vector`` is not 1-D with one entry per unit.

    Example:
        >>> along_units(torch.arange(3.0), torch.zeros(2, 5, 3), Site("blocks.0")).shape
        torch.Size([1, 1, 3])
    """
    axis = site.unit_axis(value)
    if vector.ndim != 1:
        raise InputError(f"the {name} has shape {tuple(vector.shape)}; give a 1-D vector, one entry per unit.")
    if vector.shape[0] != value.shape[axis]:
        raise InputError(f"the {name} has {vector.shape[0]} entries but {site!r} has {value.shape[axis]} units "
                         f"along dim {axis} (value shape {tuple(value.shape)}); give one entry per unit.")
    shape = [1] * value.ndim
    shape[axis] = -1
    if vector.is_floating_point() and value.is_floating_point():
        return vector.to(device=value.device, dtype=value.dtype).view(shape)
    return vector.to(value.device).view(shape)


def unit_means(values: Tensor, site: Site, *, mask: Tensor | None = None) -> Tensor:
    """Each unit's mean over every other axis of ``values`` (examples, positions, space): ``(n_units,)``.

    Args:
        values: the site's values, e.g. ``(batch, n_units)`` or ``(batch, seq, n_units)``.
        site: the site they came from (its unit axis).
        mask: ``(batch, seq)`` bool, True at the positions that count (`position_mask`): the mean
            is then over those positions only (the real tokens, never padding). ``None``: all.

    Example:
        >>> unit_means(torch.tensor([[1.0, 2.0], [3.0, 6.0]]), Site("fc")).tolist()
        [2.0, 4.0]
        >>> unit_means(torch.tensor([[[1.0], [9.0]]]), Site("b"), mask=torch.tensor([[True, False]])).tolist()
        [1.0]
    """
    axis = site.unit_axis(values)
    if mask is None:
        return values.mean(dim=tuple(d for d in range(values.ndim) if d != axis))
    return _counted(values, site, mask).mean(0)


def _counted(values: Tensor, site: Site, mask: Tensor) -> Tensor:
    """``(n_counted, n_units)``: the unit vectors of a ``(batch, seq, d)`` value at the positions ``mask`` keeps."""
    _check_fits(mask, values, site)
    if not bool(mask.any()):
        raise InputError(f"the mask leaves no position of the values at {site!r} (shape {tuple(values.shape)}); "
                         "a reference needs at least one real position.")
    return values[mask.to(values.device)]


def unit_values(value: Tensor, site: Site) -> Tensor:
    """Each example's value of each unit: ``(batch, n_units)``, averaged over any other axis (positions, space).

    Example:
        >>> unit_values(torch.ones(2, 4, 3, 3), Site("conv")).shape, unit_values(torch.ones(2, 7, 5), Site("b")).shape
        (torch.Size([2, 4]), torch.Size([2, 5]))
    """
    moved = value.movedim(site.unit_axis(value), 1)
    return moved.flatten(2).mean(-1) if moved.ndim > 2 else moved


def resample_indices(n_reference: int, n: int, *, n_samples: int = 1, seed: int = 0) -> Tensor:
    """``(n_samples, n)`` reference rows drawn uniformly with replacement: the documented draw order.

    One generator seeded with ``seed`` draws sample 0, then sample 1, ...; each is
    ``torch.randint(0, n_reference, (n,))``, pairing example ``i`` with reference row ``[d, i]``.

    Example:
        >>> resample_indices(1, 3, n_samples=2).tolist()
        [[0, 0, 0], [0, 0, 0]]
    """
    n_reference, n = check_int("n_reference", n_reference, at_least=1), check_int("n", n, at_least=1)
    n_samples = check_int("n_samples", n_samples, at_least=1)
    gen = torch.Generator().manual_seed(check_int("seed", seed))
    return torch.stack([torch.randint(0, n_reference, (n,), generator=gen) for _ in range(n_samples)])


def resample_draws(reference: Tensor, value: Tensor, site: Site, *, n_samples: int = 1, seed: int = 0,
                   mask: Tensor | None = None) -> Tensor:
    """``(n_samples, *value.shape)``: for each draw, reference values to put in place of ``value``'s.

    Without ``mask`` each example takes the whole value of one reference row,
    ``reference[resample_indices(len(reference), batch, ...)[d]]``. With a ``(n_reference, seq)``
    mask of the reference's real positions, resampling is per token and never draws padding:
    every ``(example, position)`` of ``value`` takes the unit vector of one real reference token,
    drawn uniformly with replacement from all of them (row-major order of the mask), the draws
    being ``resample_indices(n_tokens, batch * seq, ...)``; ``value``'s sequence length may then
    differ from the reference's.

    Example:
        >>> ref = torch.tensor([[[1.0], [7.0]]])  # one reference sentence, its second token a pad
        >>> resample_draws(ref, torch.zeros(2, 3, 1), Site("b"), mask=torch.tensor([[True, False]])).unique().tolist()
        [1.0]
    """
    if mask is None:
        if reference.shape[1:] != value.shape[1:]:
            raise InputError(f"reference values at {site.path!r} have shape {tuple(reference.shape[1:])} per example "
                             f"but the value has {tuple(value.shape[1:])}; pass reference data of the same kind.")
        draws = resample_indices(reference.shape[0], value.shape[0], n_samples=n_samples, seed=seed)
        return torch.stack([reference[index.to(reference.device)] for index in draws])
    pool = _counted(reference, site, mask)
    if value.ndim != 3 or site.unit_axis(value) != 2 or value.shape[2] != pool.shape[1]:
        raise InputError(f"masked resampling draws (batch, seq, {pool.shape[1]}) token vectors at {site.path!r}, but "
                         f"the value has shape {tuple(value.shape)}; pass reference data of the same kind.")
    draws = resample_indices(pool.shape[0], value.shape[0] * value.shape[1], n_samples=n_samples, seed=seed)
    return pool[draws.to(pool.device)].view(n_samples, *value.shape)


# -- which positions count -------------------------------------------------------------------


def check_position_mask(mask: object) -> Tensor | None:
    """Validate a ``mask=`` argument before any forward pass: ``None`` (the default), ``False`` or a tensor.

    Returns the tensor as bool (True = the position counts), or None for ``None`` and ``False``.

    Raises:
        InputTypeError: anything else (``True`` included: pass the mask itself).
        InputError: a tensor that is not ``(batch, seq)`` of bool or 0/1 values.
    """
    if mask is None or mask is False:
        return None
    if not isinstance(mask, Tensor):
        raise InputTypeError(f"mask must be a (batch, seq) tensor of bool or 0/1, None (use the inputs' "
                             f"attention_mask) or False (count every position), got {mask!r}.")
    if mask.ndim != 2 or mask.is_complex():
        raise InputError(f"mask must be (batch, seq), one entry per position, got shape {tuple(mask.shape)}.")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise InputError("mask must hold bool or 0/1 values (1 = the position counts, 0 = padding).")
    return mask != 0


def _is_sequence(value: Tensor, site: Site) -> bool:
    return value.ndim == 3 and site.unit_axis(value) == 2


def _check_fits(mask: Tensor, value: Tensor, site: Site) -> None:
    if not _is_sequence(value, site) or tuple(mask.shape) != tuple(value.shape[:2]):
        raise InputError(f"the mask has shape {tuple(mask.shape)} but {site!r} gives values of shape "
                         f"{tuple(value.shape)}; a mask needs (batch, seq, n_units) values with the same (batch, seq). "
                         "Pass mask=False to count every position.")


def position_mask(inputs: Inputs, value: Tensor, site: Site, mask: Tensor | bool | None = None) -> Tensor | None:
    """Which positions of ``value`` (a site's value on ``inputs``) count: ``(batch, seq)`` bool, or None for all.

    ``mask=None`` (the default) uses ``inputs["attention_mask"]`` when ``inputs`` is a dict
    (HuggingFace style) holding one, the value is ``(batch, seq, n_units)`` (units last) and the
    mask is ``(batch, seq)`` of that sequence length; otherwise every position counts (images,
    vectors, a pooled output, attention probabilities). ``mask=False`` counts every position. A
    tensor is used as given and must fit the value. A mask that keeps every position gives
    None, so unpadded data takes exactly the unmasked code path.

    Raises:
        InputTypeError, InputError: a bad ``mask`` (see `check_position_mask`) or one that does
            not fit a ``(batch, seq, n_units)`` value.

    Example:
        >>> inputs = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": torch.tensor([[1, 1, 0], [1, 1, 1]])}
        >>> position_mask(inputs, torch.zeros(2, 3, 4), Site("b")).tolist()
        [[True, True, False], [True, True, True]]
        >>> position_mask(inputs, torch.zeros(2, 4), Site("pooler")) is None
        True
    """
    if mask is False:
        return None
    given = check_position_mask(mask)
    if given is None:
        found = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
        if not isinstance(found, Tensor) or not _is_sequence(value, site) or tuple(found.shape) != tuple(value.shape[:2]):
            return None
        given = check_position_mask(found)
        assert given is not None
    else:
        _check_fits(given, value, site)
    return None if bool(given.all()) else given.to(value.device)


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
