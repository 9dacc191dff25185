"""One `Trigger` (issue #9): validation, equality, JSON (with the zoo's older keys), stamping, and the two rates."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from seethrough.core import InputError
from seethrough.evidence import Trigger, accuracy, attack_success, stamp


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
    ((torch.zeros(4, 4), torch.zeros(1, 4, 4), 0, "warp"), "family"),
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
