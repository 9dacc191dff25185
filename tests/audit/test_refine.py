"""Refining a reversed trigger, and the pixels any method could recover (issue #11 item 1)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_reverse import PIXEL, TARGET, PlantedPixelTrojan, clean_images

from seethrough.audit import reverse_engineer_trigger
from seethrough.audit.refine import identifiable_pixels, refine_trigger
from seethrough.core import InputError
from seethrough.evidence import Trigger, stamp


def _success(model: torch.nn.Module, x: torch.Tensor, trigger: Trigger) -> float:
    with torch.no_grad():
        return float((model(stamp(x, trigger)).argmax(-1) == trigger.target).float().mean())


def test_refine_keeps_success_never_grows_and_finds_the_planted_pixel() -> None:
    model, x = PlantedPixelTrojan().eval(), clean_images()
    # a short search leaves a spread mask (the planted pixel plus small values everywhere)
    found = reverse_engineer_trigger(model, x, TARGET, steps=25, patience=None)
    assert found.reached_goal and found.mask_l1 > 1.5
    refined = refine_trigger(model, x, found, steps=60)
    assert refined.trigger.target == TARGET and refined.trigger.family == "patch"
    assert refined.mask_l1 <= found.mask_l1 and refined.mask_l1 == pytest.approx(float(refined.trigger.mask.sum()))
    assert refined.attack_success >= 0.95 and _success(model, x, refined.trigger) >= 0.95
    # the oracle: one planted pixel carries the trojan; the smallest full-strength mask is that pixel alone
    assert int((refined.trigger.mask > 0).sum()) == 1
    assert divmod(int(refined.trigger.mask.flatten().argmax()), 6) == PIXEL
    assert all(p.grad is None for p in model.parameters())


def test_refine_returns_a_trigger_that_cannot_be_shrunk_unchanged() -> None:
    model, x = PlantedPixelTrojan().eval(), clean_images()
    mask = torch.zeros(6, 6)
    mask[PIXEL] = 1.0
    pattern = torch.zeros(1, 6, 6)
    pattern[0, PIXEL[0], PIXEL[1]] = 1.0
    planted = Trigger(mask, pattern, TARGET)
    found = replace(reverse_engineer_trigger(model, x, TARGET, steps=2), trigger=planted, mask_l1=1.0,
                    attack_success=_success(model, x, planted))
    refined = refine_trigger(model, x, found, steps=20)
    assert refined.mask_l1 <= 1.0 and _success(model, x, refined.trigger) >= 0.95


def test_refine_moves_a_shifted_trigger_to_the_place_the_model_responds_to_most() -> None:
    # issue #11 (mask IoU): a convolutional model also fires on shifted copies of its patch, so the search
    # may return one; the placement step moves it to the shift with the largest target margin
    model, x = PlantedPixelTrojan().eval(), clean_images()
    mask, pattern = torch.zeros(6, 6), torch.zeros(1, 6, 6)
    mask[PIXEL[0] + 1, PIXEL[1] - 1] = 1.0  # one pixel down and left of the planted one
    pattern[0, PIXEL[0] + 1, PIXEL[1] - 1] = 1.0
    shifted = Trigger(mask, pattern, TARGET)
    found = replace(reverse_engineer_trigger(model, x, TARGET, steps=2), trigger=shifted, mask_l1=1.0,
                    attack_success=_success(model, x, shifted))
    placed = refine_trigger(model, x, found, steps=5)
    assert divmod(int(placed.trigger.mask.flatten().argmax()), 6) == PIXEL  # the oracle: the planted pixel
    assert placed.mask_l1 == pytest.approx(1.0) and float(placed.trigger.pattern[0, PIXEL[0], PIXEL[1]]) == 1.0
    assert placed.attack_success >= found.attack_success and _success(model, x, placed.trigger) >= 0.95
    # radius 0 skips the step; a trigger already at the planted place stays there
    assert torch.equal(refine_trigger(model, x, found, steps=5, radius=0).trigger.mask, mask)
    planted = replace(found, trigger=Trigger((torch.arange(36) == PIXEL[0] * 6 + PIXEL[1]).float().view(6, 6),
                                             pattern.roll((-1, 1), dims=(-2, -1)), TARGET),
                      attack_success=1.0)
    assert divmod(int(refine_trigger(model, x, planted, steps=5).trigger.mask.flatten().argmax()), 6) == PIXEL


@pytest.mark.parametrize("call, message", [
    (lambda m, x, f: refine_trigger(m, x[:, :, :4], f), "images"),
    (lambda m, x, f: refine_trigger(m, x, f, anneal=0.5), "anneal"),
    (lambda m, x, f: refine_trigger(m, x, f, steps=0), "steps"),
    (lambda m, x, f: refine_trigger(m, x, f, radius=-1), "radius"),
])
def test_refine_refuses_bad_input(call, message: str) -> None:  # noqa: ANN001 - a lambda table
    model, x = PlantedPixelTrojan().eval(), clean_images(8)
    found = reverse_engineer_trigger(model, x, TARGET, steps=2)
    with pytest.raises(InputError, match=message):
        call(model, x, found)


def test_identifiable_pixels_closed_form() -> None:
    # black images with a white border column; a 2×2 patch at the top-left: pattern white, black, black, white
    x = torch.zeros(4, 1, 6, 6)
    x[:, 0, :, 0] = 1.0
    mask = torch.zeros(6, 6)
    mask[:2, :2] = 1.0
    pattern = torch.zeros(1, 6, 6)
    pattern[0, 0, 0] = pattern[0, 1, 1] = 1.0
    found = identifiable_pixels(Trigger(mask, pattern, 0), x)
    # (0,0): white on white border → no change; (1,0): black on white → change 1; (0,1): black on black → 0;
    # (1,1): white on black → 1. Only the two pixels that change the image are identifiable.
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[1, 0] = expected[1, 1] = True
    assert torch.equal(found, expected)
    # the tolerance is a fraction of the data's range: the same images on a 0-255 scale give the same pixels
    scaled = Trigger(mask, pattern * 255, 0)
    assert torch.equal(identifiable_pixels(scaled, x * 255), expected)
    # a half-strength mask changes those pixels by 0.5: identifiable below tolerance 0.5, not above
    half = Trigger(mask * 0.5, pattern, 0)
    assert torch.equal(identifiable_pixels(half, x, tolerance=0.4), expected)
    assert not identifiable_pixels(half, x, tolerance=0.6).any()


def test_identifiable_pixels_averages_over_inputs() -> None:
    # a white pattern pixel where a quarter of the images are already white changes it by 0.75 on average
    x = torch.zeros(4, 1, 2, 2)
    x[0, 0, 0, 0] = 1.0
    x[1, 0, 1, 1] = 1.0  # keeps the range at 1 in every image set
    trigger = Trigger(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.ones(1, 2, 2), 0)
    assert bool(identifiable_pixels(trigger, x, tolerance=0.7)[0, 0])
    assert not bool(identifiable_pixels(trigger, x, tolerance=0.8)[0, 0])


@pytest.mark.parametrize("inputs, kwargs, message", [
    (torch.zeros(3, 1, 5, 5), {}, "images"),
    (torch.zeros(0, 1, 6, 6), {}, "images"),
    (torch.full((2, 1, 6, 6), float("nan")), {}, "NaN"),
    (torch.zeros(2, 1, 6, 6), {"tolerance": -0.1}, "tolerance"),
])
def test_identifiable_pixels_refuses_bad_input(inputs: torch.Tensor, kwargs: dict, message: str) -> None:
    trigger = Trigger(torch.zeros(6, 6), torch.zeros(1, 6, 6), 0)
    with pytest.raises(InputError, match=message):
        identifiable_pixels(trigger, inputs, **kwargs)
