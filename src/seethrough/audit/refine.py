"""Sharper reversed triggers: refine a flagged class's trigger, and the pixels any method could recover.

`refine_trigger` restarts a class's search from the mask the scan found, anneals the sparsity
weight upwards, then keeps the fewest mask pixels (largest first, at full strength) that still
reach the attack-success goal. `identifiable_pixels` names the pixels whose stamping changes the
inputs at all: a black pattern pixel on a black border changes nothing, and no method that
watches the model's outputs can tell it is part of the trigger.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.checks import check_float
from ..core.errors import InputError
from ..evidence.trigger import Trigger, stamp
from .reverse import _detached

__all__ = ["identifiable_pixels"]


def identifiable_pixels(trigger: Trigger, inputs: Tensor, *, tolerance: float = 0.1) -> Tensor:
    """The ``(H, W)`` pixels whose stamping changes ``inputs`` by more than ``tolerance`` of their range.

    A pixel is identifiable when the mean over ``inputs`` of ``|stamp(x) - x|``, summed over the
    channels, exceeds ``tolerance · (high - low)``, where ``high - low`` is the widest per-channel
    value range of ``inputs`` (`data_range`): the threshold is a fraction of the data's own scale,
    so images in [0, 1], 0-255 or standardised units are judged alike. The default 0.1 counts a
    pixel that moves by a tenth of the range on average (on digits in [0, 1]: a white pattern pixel
    where ≥ 10% of images are dark there), and leaves out pattern pixels that agree with the data
    where they sit (black on a black border).

    Args:
        trigger: any `Trigger` (its family's `stamp` is used).
        inputs: clean images ``(N, C, H, W)`` of the trigger's shape.
        tolerance: the fraction of the data's range a pixel must change by, on average; ≥ 0.

    Returns:
        A bool tensor ``(H, W)``.

    Raises:
        InputError: inputs that are not images of the trigger's shape, empty or non-finite inputs,
            a negative tolerance.

    Example:
        >>> mask = torch.zeros(2, 2); mask[0] = 1.0  # the top row, pattern 1 then 0
        >>> pattern = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
        >>> inputs = torch.zeros(3, 1, 2, 2); inputs[:, 0, 1, 1] = 1.0  # black except one corner
        >>> identifiable_pixels(Trigger(mask, pattern, 0), inputs).tolist()
        [[True, False], [False, False]]
    """
    if not isinstance(trigger, Trigger):
        raise InputError(f"identifiable_pixels needs a Trigger; got {type(trigger).__name__}.")
    shape = tuple(trigger.pattern.shape)
    if not isinstance(inputs, Tensor) or inputs.ndim != 4 or tuple(inputs.shape[1:]) != shape or not len(inputs):
        raise InputError(f"identifiable_pixels needs images (N, C, H, W) with (C, H, W) = {shape}, N ≥ 1; got "
                         f"{tuple(getattr(inputs, 'shape', ())) or type(inputs).__name__}.")
    if not inputs.dtype.is_floating_point or not bool(torch.isfinite(inputs).all()):
        raise InputError(f"identifiable_pixels needs finite floating-point images; got dtype {inputs.dtype}"
                         + ("" if not inputs.dtype.is_floating_point else " with NaN or inf values") + ".")
    tolerance = check_float("tolerance", tolerance, at_least=0.0)
    x = inputs.detach()
    values = x.transpose(0, 1).flatten(1)
    scale = float((values.amax(1) - values.amin(1)).max())
    with torch.no_grad():
        change = (stamp(x, _detached(trigger)) - x).abs().sum(1).mean(0)
    return change > tolerance * scale
