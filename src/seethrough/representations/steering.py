"""Steering along a direction: does pushing a site along a probe's (or a CAV's) direction change the model?

Representations / probes, the second causal follow-up (survey §5.6) beside erasure. `steer` adds
``strength`` standard deviations of the site's values along a direction (every example's
flattened value, or every position of a ``(batch, seq, d)`` site) and measures the behaviour
change against steps of the same length along random directions. A probe direction that is
decodable but unused moves the model no more than a random direction: "decodable" (`probe`)
and "used" (`erase`, `steer`) stay separate verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..core.batching import batches
from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError
from ..core.hooks import capture
from ..core.inputs import validate_inputs
from ..core.results import Result, new_figure
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from ._examples import behaviour_changes, is_batch_stream

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["steer", "Steering"]


@dataclass(frozen=True)
class Steering(Result):
    """How much a step along a direction changes the model, against steps along random directions.

    Attributes:
        site: where the step was added.
        strength: the step in standard deviations of the site's values along the direction.
        step: the step's length (``strength × sd``), the same for the direction and every control.
        change: the behaviour change (the fraction of predictions that change, or mean |Δ metric|).
        control_changes: the same for each random direction.
        p_value: ``(1 + #{controls ≥ change}) / (1 + n_controls)``.
        used: ``p_value ≤ alpha``.
    """

    site: Site
    strength: float
    step: float
    change: float
    control_changes: Tensor
    p_value: float
    used: bool

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame({"site": [self.site.path], "strength": [self.strength], "step": [self.step],
                             "change": [self.change], "control_mean": [float(self.control_changes.mean())],
                             "p_value": [self.p_value], "used": [self.used]})

    def plot(self) -> Figure:
        fig = new_figure(4, 2.5)
        ax = fig.add_subplot()
        ax.hist(self.control_changes.tolist(), bins=10, color="C7", label="random directions")
        ax.axvline(self.change, color="C3", label="direction")
        ax.set_xlabel(f"behaviour change after a step of {self.strength:g} sd")
        ax.set_title(f"steering at {self.site.path}: p = {self.p_value:.3f}", fontsize=9)
        ax.legend(fontsize=7)
        return fig


def _rows(value: Tensor, d: int, site: Site) -> Tensor:
    """The value as ``(rows, d)``: each position of a ``(batch, seq, d)`` value, else each example flattened."""
    flat = value.reshape(-1, d) if value.ndim == 3 and value.shape[-1] == d else value.reshape(value.shape[0], -1)
    if flat.shape[1] != d:
        raise InputError(f"{site.path!r}: the direction has {d} entries but the site's value has shape "
                         f"{tuple(value.shape)}; give a direction over the flattened value or the last dim.")
    return flat


def _add(delta: Tensor) -> Callable[[Tensor, Site], Tensor]:
    def edit(value: Tensor, site: Site) -> Tensor:
        flat = _rows(value, delta.shape[0], site)
        return (flat + delta.to(flat)).reshape(value.shape)

    return edit


def steer(model: nn.Module, inputs: Inputs | Iterable[Inputs], direction: Any, site: Site | str, *, strength: float = 2.0,
          metric: Callable[[Any], Tensor] | None = None, n_controls: int = 20, alpha: float = 0.05, seed: int = 0,
          batch_size: int = 256) -> Steering:
    """Add ``strength`` standard deviations along ``direction`` at ``site``; compare with random directions.

    The step's length is ``strength`` times the standard deviation of the site's values projected
    on the unit direction (measured on ``inputs``); each control adds a step of the same length
    along a random (Gaussian) unit direction. The behaviour change is the fraction of predictions
    (argmax of the output's last dim, every row and position) that differ from the unedited model,
    or ``mean |metric_after - metric_before|`` with ``metric``.

    Args:
        model: any ``nn.Module`` (left as found).
        inputs: as for `capture`, or a list of such batches.
        direction: ``(d,)``: over each example's flattened value, or over the last dim of a
            ``(batch, seq, d)`` value (every position), e.g. ``probe(...).coef[0]`` or a TCAV ``cav``.
        site: where to step.
        strength: the step in standard deviations along the direction (negative steps backwards).
        metric: output → one score per row; default: the prediction flip rate.
        n_controls: random directions.
        alpha: level of the "used" verdict.
        seed: the random directions' seed.
        batch_size: rows per forward pass (in-memory inputs).

    Returns:
        A `Steering` with ``change``, ``control_changes``, ``p_value`` and ``used``.

    Raises:
        InputError: a zero or non-finite direction, or one whose length fits neither the flattened
            value nor its last dim.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        >>> x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
        >>> r = steer(model, x, torch.tensor([1.0, 0.0]), "0", n_controls=4)
        >>> len(r.control_changes), 0.0 <= r.change <= 1.0
        (4, True)

    References:
        Li et al., "Inference-Time Intervention: Eliciting Truthful Answers from a Language Model", NeurIPS 2023.
    """
    step_sd = check_float("strength", strength)
    check_int("n_controls", n_controls, at_least=1)
    level = check_float("alpha", alpha, at_least=0.0, at_most=1.0)
    check_int("seed", seed)
    check_int("batch_size", batch_size, at_least=1)
    if metric is not None and not callable(metric):
        raise InputTypeError(f"metric must be callable (output -> one score per row), got {type(metric).__name__}.")
    u = torch.as_tensor(direction).detach().cpu().double().flatten()
    if u.numel() == 0 or not bool(torch.isfinite(u).all()) or float(u.norm()) == 0.0:
        raise InputError("direction must be a non-empty, finite, non-zero vector.")
    u = u / u.norm()
    resolved = resolve_site(model, site)[0]
    if is_batch_stream(inputs):
        if iter(inputs) is inputs:
            raise InputTypeError("steer reads the data twice (the spread, then the edits): give a list of batches, "
                                 "not a one-shot iterator.")
        chunks: Any = inputs
    else:
        validate_inputs(model, inputs)
        chunks = list(batches(inputs, batch_size))
    total = total_sq = 0.0
    count = 0
    for chunk in chunks:  # the spread along u, streamed
        with torch.no_grad():
            along = _rows(capture(model, chunk, [resolved])[resolved], u.shape[0], resolved).double() @ u
        total, total_sq, count = total + float(along.sum()), total_sq + float((along * along).sum()), count + len(along)
    mean = total / count
    sd = max(total_sq / count - mean * mean, 0.0) ** 0.5
    step = step_sd * sd
    gen = torch.Generator().manual_seed(int(seed))
    randoms = torch.randn(n_controls, u.shape[0], generator=gen, dtype=torch.float64)
    randoms = randoms / randoms.norm(dim=1, keepdim=True)
    edits = [_add(step * u)] + [_add(step * r) for r in randoms]
    changes = behaviour_changes(model, chunks, resolved, edits, metric)
    control_changes = torch.tensor(changes[1:], dtype=torch.float64)
    p_value = (1 + int((control_changes >= changes[0]).sum())) / (1 + n_controls)
    return Steering(resolved, step_sd, abs(step), changes[0], control_changes, p_value, bool(p_value <= level))
