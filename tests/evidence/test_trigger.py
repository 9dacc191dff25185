"""One `Trigger` (issue #9): validation, equality, JSON (with the zoo's older keys), stamping, and the two rates;
the warp family (issue #11): its field, the bilinear resampling against closed forms, and the seeded WaNet field."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from seethrough.bench.zoo import random_warp_trigger
from seethrough.core import InputError
from seethrough.evidence import Trigger, accuracy, attack_success, displacement, stamp


def _patch() -> Trigger:
    mask = torch.zeros(4, 4)
    mask[1:3, 1:3] = 1.0
    return Trigger(mask, torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0)), 3, "patch")


@pytest.mark.parametrize("args, message", [
    ((torch.full((4, 4), 1.5), torch.zeros(1, 4, 4), 0), r"\[0, 1\]"),
    ((torch.full((4, 4), float("nan")), torch.zeros(1, 4, 4), 0), "NaN"),
    ((torch.zeros(4, 4), torch.full((1, 4, 4), float("inf")), 0), "finite"),
    ((torch.zeros(4, 4), torch.zeros(1, 5, 4), 0), "same H, W"),
    ((torch.zeros(4, 4), torch.zeros(1, 4, 4), -1), "target"),
    ((torch.zeros(4, 4), torch.zeros(1, 4, 4), True), "target"),
    ((torch.zeros(4, 4), torch.zeros(1, 4, 4), 0, "wave"), "family"),
    ((torch.ones(4, 4), torch.zeros(1, 4, 4), 0, "warp"), r"needs field=\(2, H, W\) = \(2, 4, 4\)"),
    ((torch.ones(4, 4), torch.zeros(1, 4, 4), 0, "warp", torch.zeros(2, 4, 5)), r"got \(2, 4, 5\)"),
    ((torch.ones(4, 4), torch.zeros(1, 4, 4), 0, "warp", torch.zeros(4, 4)), r"got \(4, 4\)"),
    ((torch.ones(4, 4), torch.zeros(1, 4, 4), 0, "warp", torch.full((2, 4, 4), float("nan"))), "field must be finite"),
    ((torch.ones(1, 4), torch.zeros(1, 1, 4), 0, "warp", torch.zeros(2, 1, 4)), "at least 2"),
    ((torch.ones(4, 4), torch.zeros(1, 4, 4), 0, "patch", torch.zeros(2, 4, 4)), "takes no field"),
    ((torch.ones(4, 4), torch.zeros(1, 4, 4), 0, "blend", torch.zeros(2, 4, 4)), "takes no field"),
])
def test_bad_triggers_are_refused(args: tuple, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Trigger(*args)


def test_equality_hash_and_json_round_trip() -> None:
    t = _patch()
    again = Trigger.from_dict(json.loads(json.dumps(t.to_dict())))
    assert again == t and hash(again) == hash(t) and again is not t
    assert set(t.to_dict()) == {"mask", "pattern", "target", "family"}
    assert Trigger(t.mask, t.pattern, 2, "patch") != t and Trigger(t.mask, t.pattern, 3, "blend") != t
    # the zoo's metadata before issue #9, alone or beside the new keys, reads the same
    legacy = {"kind": "patch", "mask": t.mask.tolist(), "pattern": t.pattern.tolist(), "target_class": 3}
    assert Trigger.from_dict(legacy) == t == Trigger.from_dict({**legacy, **t.to_dict()})
    with pytest.raises(InputError, match="exactly the keys"):
        Trigger.from_dict({"family": "patch"})


def test_stamp_is_the_closed_form_and_differentiable() -> None:
    t = _patch()
    x = torch.rand(5, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    expected = x.clone()
    expected[:, :, 1:3, 1:3] = t.pattern[:, 1:3, 1:3]
    assert torch.equal(stamp(x, t), expected)  # a 0/1 mask: (1 - 1) x + p = p and (1 - 0) x + 0 p = x exactly
    pattern = torch.zeros(2, 4, 4, requires_grad=True)
    stamp(x, Trigger(t.mask, pattern, 3)).sum().backward()
    assert pattern.grad is not None and float(pattern.grad.sum()) == 5 * 2 * 4  # d/dp = mask, summed
    with pytest.raises(InputError, match="do not fit"):
        stamp(torch.zeros(2, 1, 4, 4), t)


class _ReadsPixel(nn.Module):
    """Class 1 when pixel (1, 1) of channel 0 is above 0.5, else class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = (x[:, 0, 1, 1] > 0.5).float()
        return torch.stack([1 - bright, bright], dim=-1)


def test_accuracy_and_attack_success_against_hand_counts() -> None:
    x = torch.zeros(10, 1, 3, 3)
    x[:4, 0, 1, 1] = 1.0  # rows 0-3 are predicted 1, the rest 0
    labels = torch.tensor([1, 1, 0, 0, 0, 0, 0, 0, 1, 1])
    assert accuracy(_ReadsPixel(), x, labels) == 6 / 10  # rows 0, 1 and 4-7
    assert accuracy(_ReadsPixel(), x, labels, batch_size=3) == 6 / 10  # batching changes nothing
    mask = torch.zeros(3, 3)
    mask[1, 1] = 1.0
    trigger = Trigger(mask, torch.ones(1, 3, 3), 1)
    assert attack_success(_ReadsPixel(), x, labels, trigger) == 1.0  # every non-target row flips
    half = Trigger(mask * 0.5, torch.ones(1, 3, 3), 1)  # 0.5 * 0 + 0.5 * 1 = 0.5: not above 0.5
    assert attack_success(_ReadsPixel(), x, labels, half) == 2 / 6  # only rows 2, 3 (already bright)
    with pytest.raises(InputError, match="target class"):
        attack_success(_ReadsPixel(), x[:2], labels[:2], trigger)
    with pytest.raises(InputError, match="labels"):
        accuracy(_ReadsPixel(), x, labels[:3])


def _warp(field: torch.Tensor, mask: torch.Tensor | None = None, channels: int = 2) -> Trigger:
    h, w = field.shape[1:]
    return Trigger(torch.ones(h, w) if mask is None else mask, torch.zeros(channels, h, w), 4, "warp", field)


def test_warp_equality_hash_and_json_round_trip() -> None:
    field = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(2))
    t = _warp(field)
    data = json.loads(json.dumps(t.to_dict()))
    assert set(data) == {"mask", "pattern", "target", "family", "field"}
    again = Trigger.from_dict(data)
    assert again == t and hash(again) == hash(t) and torch.equal(again.field, field)
    assert _warp(field + 1e-3) != t and _warp(field, mask=torch.full((5, 6), 0.5)) != t
    assert t != Trigger(t.mask, t.pattern, 4, "blend")  # same mask and pattern, no field
    # patch and blend dicts keep their keys; one written with "field": null reads the same
    p = _patch()
    assert "field" not in p.to_dict() and Trigger.from_dict({**p.to_dict(), "field": None}) == p
    with pytest.raises(InputError, match="nested lists"):
        Trigger.from_dict({**data, "field": "north"})
    with pytest.raises(InputError, match="needs field"):
        Trigger.from_dict({**data, "field": None})


def test_a_zero_field_is_the_identity() -> None:
    x = torch.rand(3, 2, 5, 6, generator=torch.Generator().manual_seed(3))
    # atol: the pixel -> [-1, 1] -> pixel round trip of grid_sample's coordinates is exact only to float32 rounding
    torch.testing.assert_close(stamp(x, _warp(torch.zeros(2, 5, 6))), x, atol=1e-6, rtol=0)
    # a zero mask switches any field off
    torch.testing.assert_close(stamp(x, _warp(torch.randn(2, 5, 6), mask=torch.zeros(5, 6))), x, atol=1e-6, rtol=0)


def test_integer_and_half_pixel_shifts_are_the_closed_form() -> None:
    x = torch.rand(3, 2, 5, 6, generator=torch.Generator().manual_seed(4))
    right = torch.zeros(2, 5, 6)
    right[1] = 1.0  # dx = +1: pixel (i, j) reads (i, j + 1); the last column reads itself (border)
    expected = torch.cat([x[..., 1:], x[..., -1:]], dim=-1)
    torch.testing.assert_close(stamp(x, _warp(right)), expected, atol=1e-6, rtol=0)  # atol: as above
    up = torch.zeros(2, 5, 6)
    up[0] = -4.0  # dy = -2 through a mask of 0.5: pixel (i, j) reads (i - 2, j), rows 0 and 1 read row 0
    expected = torch.cat([x[:, :, :1], x[:, :, :1], x[:, :, :-2]], dim=2)
    torch.testing.assert_close(stamp(x, _warp(up, mask=torch.full((5, 6), 0.5))), expected, atol=1e-6, rtol=0)
    half = torch.zeros(2, 5, 6)
    half[1, :, :5] = 0.5  # bilinear: half-way between two columns is their mean
    out = stamp(x, _warp(half))
    torch.testing.assert_close(out[..., :5], (x[..., :5] + x[..., 1:]) / 2, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[..., 5], x[..., 5], atol=1e-6, rtol=0)


def test_warp_stamp_is_differentiable_in_field_mask_and_inputs() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(2, 1, 4, 5, generator=gen, dtype=torch.float64)
    # displacements strictly inside pixel cells: bilinear resampling is smooth there (kinks at whole pixels)
    field = (0.1 + 0.3 * torch.rand(2, 4, 5, generator=gen, dtype=torch.float64)).requires_grad_(True)
    mask = (0.5 + 0.4 * torch.rand(4, 5, generator=gen, dtype=torch.float64)).requires_grad_(True)
    inputs = x.clone().requires_grad_(True)

    def stamped(i: torch.Tensor, f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return stamp(i, Trigger(m, torch.zeros(1, 4, 5, dtype=torch.float64), 0, "warp", f))

    assert torch.autograd.gradcheck(stamped, (inputs, field, mask))  # analytic vs finite differences
    stamped(inputs, field, mask).sum().backward()
    assert field.grad is not None and float(field.grad.abs().sum()) > 0 and mask.grad is not None
    size = displacement(Trigger(mask, torch.zeros(1, 4, 5), 0, "warp", field)).mean()
    assert torch.autograd.grad(size, field)[0].abs().sum() > 0
    zero = torch.zeros(2, 4, 5, requires_grad=True)  # |0|: subgradient 0, never NaN
    (grad,) = torch.autograd.grad(displacement(_warp(zero, channels=1)).sum(), zero)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_displacement_frame_and_plot() -> None:
    field = torch.zeros(2, 4, 4)
    field[0], field[1] = 3.0, 4.0  # |(3, 4)| = 5 pixels everywhere
    mask = torch.zeros(4, 4)
    mask[:2] = 1.0
    t = _warp(field, mask=mask)
    assert t.mean_displacement == 2.5 and _patch().mean_displacement == 0.0
    assert torch.equal(displacement(t), 5.0 * mask)
    row = t.to_frame().iloc[0]
    assert row["family"] == "warp" and row["mean_displacement"] == 2.5 and row["mask_l1"] == 8.0
    fig = t.plot()
    assert len(fig.axes) >= 2 and "2.50 px" in fig.axes[0].get_title()
    with pytest.raises(InputError, match="do not fit"):
        stamp(torch.zeros(1, 2, 4, 5), t)


def test_random_warp_trigger_is_seeded_and_normalised_as_wanet() -> None:
    t = random_warp_trigger(3, strength=0.75, grid=4, image_size=16, channels=2)
    assert t == random_warp_trigger(3, strength=0.75, grid=4, image_size=16, channels=2)
    assert t != random_warp_trigger(4, strength=0.75, grid=4, image_size=16, channels=2)
    assert t.family == "warp" and torch.equal(t.mask, torch.ones(16, 16)) and torch.equal(t.pattern, torch.zeros(2, 16, 16))
    # align_corners=True puts the 4 control points on pixels 0, 5, 10, 15, where bicubic upsampling returns them
    # exactly: their mean |value| is the normalisation (1) times the strength
    control = t.field[:, ::5, ::5]
    assert control.shape == (2, 4, 4)
    torch.testing.assert_close(control.abs().mean(), torch.tensor(0.75), atol=1e-6, rtol=0)  # float32 upsampling
    assert 0 <= t.target < 10
    smooth = random_warp_trigger(3, strength=0.75, grid=2)
    assert float((smooth.field[:, 1:] - smooth.field[:, :-1]).abs().max()) < 0.75  # k=2: one gentle slope
    for bad in ({"strength": 0.0}, {"strength": float("inf")}, {"grid": 1}, {"grid": 17}):
        with pytest.raises(InputError, match="strength|grid"):
            random_warp_trigger(0, **bad)
