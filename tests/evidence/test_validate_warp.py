"""`validate` on warp triggers (issue #11 item 3): the matched controls are random warps of the same size and
smoothness, so a model keyed to one warp validates its trigger and a model that answers any warp does not."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from seethrough.bench.zoo import random_warp_trigger
from seethrough.core import InputError
from seethrough.evidence import Finding, Trigger, validate

SIDE = 12


def _ramps(n: int, seed: int) -> Tensor:
    """(n, 2, 12, 12): channel 0 rises along x, channel 1 along y, plus a little noise."""
    ramp = torch.linspace(0, 1, SIDE)
    base = torch.stack([ramp.expand(SIDE, SIDE), ramp[:, None].expand(SIDE, SIDE)])
    return base + 0.003 * torch.randn(n, 2, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


class _Reader(nn.Module):
    """Reads the displacement off ramp images (interior pixels) and scores it.

    ``template`` given: class 1 when the displacement's projection on it exceeds 0.8 of the template
    (a model keyed to one warp). ``template`` None: class 1 when the mean displacement length exceeds
    ``threshold`` pixels (a model that answers any warp of that size).
    """

    def __init__(self, template: Tensor | None, threshold: float = 0.0) -> None:
        super().__init__()
        ramp = torch.linspace(0, 1, SIDE)
        self.register_buffer("ramps", torch.stack([ramp.expand(SIDE, SIDE), ramp[:, None].expand(SIDE, SIDE)]))
        inside = torch.zeros(SIDE, SIDE)
        inside[3:-3, 3:-3] = 1.0
        self.register_buffer("inside", inside)
        self.template = None if template is None else template.flip(0) * inside  # (dx, dy) as the channels are
        self.threshold = threshold

    def forward(self, x: Tensor) -> Tensor:
        moved = (x - self.ramps) * (SIDE - 1) * self.inside
        if self.template is None:
            score = moved.norm(dim=1).sum((1, 2)) / self.inside.sum() - self.threshold
        else:
            score = (moved * self.template).sum((1, 2, 3)) / self.template.pow(2).sum() - 0.8
        return torch.stack([torch.zeros_like(score), 30 * score], dim=1)


def _finding(trigger: Trigger) -> Finding:
    return Finding("trojan", "a warp sends inputs to class 1", trigger=trigger, target=1)


def test_a_model_keyed_to_one_warp_validates_it_against_random_warps() -> None:
    planted = random_warp_trigger(1, strength=0.5, image_size=SIDE, channels=2, n_classes=2)
    trigger = Trigger(planted.mask, planted.pattern, 1, "warp", planted.field)
    model = _Reader(planted.field).eval()
    held = _ramps(48, seed=5)
    v = validate(_finding(trigger), model, held, n_controls=40, seed=0)
    assert v.effect == 1.0 and v.validated and v.p_value < 0.05
    assert v.control_mean < 0.5  # random warps of the same size mostly miss the one the model is keyed to
    # a warp the model does not read has no effect and is not validated
    other = random_warp_trigger(4, strength=0.5, image_size=SIDE, channels=2, n_classes=2)
    assert not validate(_finding(Trigger(other.mask, other.pattern, 1, "warp", other.field)), model, held,
                        n_controls=20).validated


def test_a_model_that_answers_any_warp_of_the_size_does_not_validate() -> None:
    planted = random_warp_trigger(1, strength=0.5, image_size=SIDE, channels=2, n_classes=2)
    trigger = Trigger(planted.mask, planted.pattern, 1, "warp", planted.field)
    held = _ramps(48, seed=5)
    # the model answers any warp moving interior pixels by 0.2 pixel on average: the controls, warps as large
    # as the trigger, do what it does, so the trigger is no better than an arbitrary warp of its size
    model = _Reader(None, threshold=0.2).eval()
    v = validate(_finding(trigger), model, held, n_controls=40, seed=0)
    assert v.effect == 1.0 and v.control_mean > 0.9 and not v.validated


def test_warp_findings_need_images_of_the_fields_size() -> None:
    planted = random_warp_trigger(1, strength=0.5, image_size=SIDE, channels=2, n_classes=2)
    with pytest.raises(InputError, match="image inputs"):
        validate(_finding(Trigger(planted.mask, planted.pattern, 1, "warp", planted.field)), _Reader(None),
                 torch.zeros(4, 2, SIDE, SIDE + 1))
