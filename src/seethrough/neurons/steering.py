"""Activation steering: add a direction to a site's activations and run the model on.

Neurons / perturbation & ablation in the survey's taxonomy (the additive counterpart of
ablation). `steer` adds ``alpha * direction`` along a site's unit axis at every example (and
every position, unless the site selects positions) and returns the output. A direction found by
another tool is tested the other way round by `seethrough.evidence.validate`, which projects a
``"direction"`` `Finding` out of the site. Both edits live in `seethrough.core.interventions`
(`add_direction`, `project_out`).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..core.errors import InputError
from ..core.hooks import capture, patch
from ..core.inputs import validate_inputs
from ..core.interventions import add_direction
from ..core.sites import Site, resolve_site
from ..core.types import Inputs

__all__ = ["steer"]


def steer(model: nn.Module, inputs: Inputs, site: Site | str, direction: Float[Tensor, " n_units"], *,
          alpha: float) -> Any:
    """Run the model with ``alpha * direction`` added to the activations at ``site``.

    Args:
        model: any ``nn.Module`` (left unchanged).
        inputs: the data.
        site: where to add the direction; may select positions (steer only those), not units.
        direction: a vector along the site's unit axis (`Site.unit_axis`), used as given (not
            normalised: ``alpha`` scales it).
        alpha: the steering strength; 0 leaves the output unchanged.

    Returns:
        The model's output with the site steered.

    Raises:
        InputError: a direction of the wrong length or with NaN/inf, a non-finite ``alpha``, or a
            site that selects units.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.Identity(), nn.Linear(2, 1))
        >>> x = torch.zeros(3, 2)
        >>> d = torch.tensor([1.0, 0.0])
        >>> torch.allclose(steer(model, x, "1", d, alpha=2.0) - model(x), 2.0 * model[2].weight[:, 0].detach())
        True

    References:
        Turner et al., "Activation addition: steering language models without optimization", 2023.
    """
    resolved, _ = resolve_site(model, site)
    if resolved.units is not None:
        raise InputError(f"{resolved!r} selects units; steer adds a direction over the whole unit axis. Pass the "
                         "site without units (use zeros in the direction for units to leave alone).")
    edit = add_direction(direction, alpha=alpha)  # checks the direction and alpha
    validate_inputs(model, inputs)
    with torch.no_grad():
        value = capture(model, inputs, [resolved], stop=True)[resolved]
    axis = resolved.unit_axis(value)
    if direction.shape[0] != value.shape[axis]:
        raise InputError(f"direction has {direction.shape[0]} entries but {resolved.path!r} has {value.shape[axis]} "
                         f"units along dim {axis} (value shape {tuple(value.shape)}).")
    return patch(model, inputs, {resolved: edit})
