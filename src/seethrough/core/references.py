"""References for interventions: vectors along a site's unit axis, unit means and resample draws,
over the positions that count.

What an edit in `core.interventions` is made from. `position_mask` says which positions of a
``(batch, seq, d)`` value count (an HF-style ``attention_mask`` by default, so padding never
enters a mean or a draw); `unit_means` and `resample_draws` summarise reference values over those
positions; `along_units` places a per-unit vector along a value's unit axis.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .checks import check_int
from .errors import InputError, InputTypeError
from .sites import Site
from .types import Inputs

__all__ = ["along_units", "unit_means", "unit_values", "resample_indices", "resample_draws", "position_mask",
           "check_position_mask"]


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
