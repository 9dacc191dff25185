"""Objectives of feature synthesis: a per-example score read from one site (a unit, a channel, a direction, a logit).

Neurons / feature synthesis in the survey's taxonomy. The ``*_objective`` builders make an
`Objective`; `synthesize` (in ``synthesis``) maximises one or several of them over the inputs.
An objective only reads a captured value; it never touches the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.errors import InputError, InputTypeError
from ..core.sites import Site

__all__ = ["Objective", "unit_objective", "channel_objective", "direction_objective", "logit_objective"]

ObjectiveKind = Literal["unit", "channel", "direction", "logit", "log_prob"]


@dataclass(frozen=True, eq=False)
class Objective:
    """A per-example score read from one site's value; made by the ``*_objective`` builders.

    Attributes:
        kind: ``"unit"`` (one unit at one position), ``"channel"`` (a unit averaged over
            positions), ``"direction"`` (projection on a vector along the unit axis, averaged over
            positions), ``"logit"`` (one column of the model's ``(batch, n_classes)`` output) or
            ``"log_prob"`` (that class's log-softmax probability, which saturates at 0).
        site: where the value is read; ``Site("")`` is the model's output.
        index: the unit, channel or class.
        position: for ``"unit"``, indices into the value's other non-batch dims (``None``: centre).
        direction: for ``"direction"``, a vector with one entry per unit.
    """

    kind: ObjectiveKind
    site: Site
    index: int | None = None
    position: tuple[int, ...] | None = None
    direction: Tensor | None = None

    @property
    def label(self) -> str:
        """A short name such as ``conv2 channel 3`` or ``logit 7``."""
        where = self.site.path or "output"
        return {"unit": f"{where} unit {self.index}", "channel": f"{where} channel {self.index}",
                "direction": f"{where} direction", "logit": f"logit {self.index}",
                "log_prob": f"log p(class {self.index})"}[self.kind]

    def score(self, value: Tensor) -> Tensor:
        """One score per example from the site's whole value ``(batch, ...)``.

        Raises:
            InputError: the unit/class index or position does not fit the value's shape.
        """
        if self.kind in ("logit", "log_prob"):
            if value.ndim != 2:
                raise InputError(f"a {self.kind} objective needs a (batch, n_classes) output; got "
                                 f"{tuple(value.shape)}.")
            self._check_index(value.shape[1], "class")
            return value[:, self.index] if self.kind == "logit" else torch.log_softmax(value, 1)[:, self.index]
        if value.ndim < 2:
            raise InputError(f"{self.label}: the value at {self.site.path!r} has shape {tuple(value.shape)}; "
                             "an objective needs (batch, units, ...).")
        axis = self.site.unit_axis(value)
        moved = value.movedim(axis, 1)  # (batch, units, *rest)
        if self.kind == "direction":
            assert self.direction is not None  # set by direction_objective
            if self.direction.shape[0] != moved.shape[1]:
                raise InputError(f"the direction has {self.direction.shape[0]} entries but {self.site.path!r} has "
                                 f"{moved.shape[1]} units along dim {axis}.")
            d = self.direction.to(moved).view(1, -1, *[1] * (moved.ndim - 2))
            projected = (moved * d).sum(1)
            return projected.flatten(1).mean(1) if projected.ndim > 1 else projected
        self._check_index(moved.shape[1], "unit")
        chosen = moved[:, self.index]
        if self.kind == "channel" or chosen.ndim == 1:
            return chosen.flatten(1).mean(1) if chosen.ndim > 1 else chosen
        rest = tuple(chosen.shape[1:])
        position = self.position if self.position is not None else tuple(s // 2 for s in rest)
        if len(position) != len(rest) or any(not -s <= p < s for p, s in zip(position, rest, strict=True)):
            raise InputError(f"{self.label}: position {position} does not fit the value's other dims {rest}; "
                             f"give one index per dim.")
        return chosen[(slice(None), *position)]

    def _check_index(self, size: int, what: str) -> None:
        assert self.index is not None  # set by the builders
        if not 0 <= self.index < size:  # no negative indices: findings name units by their index
            raise InputError(f"{self.label}: {what} {self.index} is out of range 0..{size - 1} for {size} {what}s at "
                             f"{self.site.path or 'the output'!r}.")


def _plain_site(site: Site | str) -> Site:
    s = Site(site) if isinstance(site, str) else site
    if not isinstance(s, Site):
        raise InputTypeError(f"site must be a Site or a module path string, got {type(site).__name__}.")
    if s.selects:
        raise InputError(f"{s!r} selects units/positions; give the plain site and the unit as an argument, "
                         f"e.g. unit_objective({s.path!r}, 3).")
    return s


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputTypeError(f"{name} must be an int, got {value!r} ({type(value).__name__}).")
    return value


def unit_objective(site: Site | str, unit: int, *, position: Sequence[int] | None = None) -> Objective:
    """Maximise one unit: ``value[:, unit]`` at one position of conv/sequence values (centre by default).

    Example:
        >>> unit_objective("conv", 2).score(torch.arange(2 * 3 * 3 * 3.0).view(2, 3, 3, 3)).tolist()
        [22.0, 49.0]
    """
    pos = None if position is None else tuple(_int("position", p) for p in position)
    return Objective("unit", _plain_site(site), _int("unit", unit), pos)


def channel_objective(site: Site | str, channel: int) -> Objective:
    """Maximise a channel: the unit ``channel`` averaged over every position (spatial mean for convs).

    Example:
        >>> channel_objective("conv", 0).score(torch.ones(2, 3, 4, 4)).tolist()
        [1.0, 1.0]
    """
    return Objective("channel", _plain_site(site), _int("channel", channel))


def direction_objective(site: Site | str, direction: Float[Tensor, " n_units"]) -> Objective:
    """Maximise the projection of the value on ``direction`` (along the unit axis), averaged over positions.

    Raises:
        InputError: a direction that is not 1-d, finite and non-zero.
    """
    if not isinstance(direction, Tensor) or direction.ndim != 1 or not direction.is_floating_point():
        raise InputError("direction must be a 1-d floating tensor with one entry per unit.")
    if not bool(torch.isfinite(direction).all()) or float(direction.norm()) == 0.0:
        raise InputError("direction must be finite and non-zero.")
    return Objective("direction", _plain_site(site), direction=direction.detach().clone())


def logit_objective(target: int, *, log_prob: bool = False) -> Objective:
    """Maximise class ``target``'s logit in the model's ``(batch, n_classes)`` output.

    With ``log_prob=True`` the score is the class's log-softmax probability instead: it
    saturates at 0 once the class wins, so regularisers (L2, TV) then shrink the change, as
    trigger reverse-engineering needs.

    Example:
        >>> logit_objective(1).score(torch.tensor([[0.0, 5.0], [1.0, -1.0]])).tolist()
        [5.0, -1.0]
        >>> logit_objective(0, log_prob=True).score(torch.zeros(1, 2)).exp().tolist()
        [0.5]
    """
    return Objective("log_prob" if log_prob else "logit", Site(""), _int("target", target))
