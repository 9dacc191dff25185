"""Neural Cleanse baseline on a planted one-pixel trojan whose answer is known (issue #3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seethrough.audit import anomaly_index, neural_cleanse, reverse_engineer_trigger
from seethrough.audit.reverse import K_ARM_EXPLOIT_SHRINK, K_ARM_EXPLORE, K_ARM_EXPLORE_SHRINK
from seethrough.core import InputError

TARGET, PIXEL = 3, (2, 4)


class PlantedPixelTrojan(nn.Module):
    """A linear classifier on 6×6 images plus a planted trojan: a bright pixel at PIXEL adds to class TARGET."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(36, 5)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(5, 36, generator=gen) * 0.3)
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x.flatten(1))
        bump = torch.zeros_like(logits)
        bump[:, TARGET] = 30.0 * x[:, 0, PIXEL[0], PIXEL[1]]
        return logits + bump


def clean_images(n: int = 64) -> torch.Tensor:
    x = torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(1)) * 0.2
    x[:, 0, PIXEL[0], PIXEL[1]] = 0.0  # clean data never shows the trigger
    return x


def test_reverse_engineering_recovers_the_planted_pixel() -> None:
    trig = reverse_engineer_trigger(PlantedPixelTrojan().eval(), clean_images(), TARGET, steps=200)
    assert trig.attack_success >= 0.95
    assert divmod(int(trig.trigger.mask.flatten().argmax()), 6) == PIXEL
    assert trig.mask_l1 < 2.0  # about one pixel's worth of mask
    assert float(trig.trigger.pattern[0, PIXEL[0], PIXEL[1]]) > 0.5
    assert trig.trigger.target == TARGET and trig.trigger.family == "patch"


def test_neural_cleanse_names_and_flags_the_target() -> None:
    result = neural_cleanse(PlantedPixelTrojan().eval(), clean_images(), n_classes=5, steps=150)
    assert result.suspect == TARGET and result.flagged
    assert result.norms[TARGET] == result.norms.min()
    assert list(result.to_frame().columns) == ["class", "mask_l1", "attack_success", "anomaly_index"]


def test_anomaly_index_closed_form() -> None:
    # median 10, |deviations| (0, 1, 1, 0, 8) → MAD 1 → scale 1.4826
    got = anomaly_index([10.0, 11.0, 9.0, 10.0, 2.0])
    torch.testing.assert_close(got, torch.tensor([0.0, -1, 1, 0, 8], dtype=torch.float64) / 1.4826)


def test_reverse_engineering_is_deterministic_and_leaves_no_grad() -> None:
    model = PlantedPixelTrojan().eval()
    a = reverse_engineer_trigger(model, clean_images(), 1, steps=30, seed=5)
    b = reverse_engineer_trigger(model, clean_images(), 1, steps=30, seed=5)
    assert a.trigger == b.trigger and a.mask_l1 == b.mask_l1
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("inputs, message", [(torch.zeros(4, 36), "images"), (torch.full((2, 1, 6, 6), float("nan")),
                                                                                "NaN")])
def test_bad_inputs(inputs: torch.Tensor, message: str) -> None:
    with pytest.raises(InputError, match=message):
        reverse_engineer_trigger(PlantedPixelTrojan(), inputs, 0, steps=2)


def test_a_class_every_input_already_has_needs_no_trigger() -> None:
    model = PlantedPixelTrojan().eval()
    with torch.no_grad():
        model.linear.bias.copy_(torch.tensor([0.0, 0, 50, 0, 0]))  # everything is class 2
    result = neural_cleanse(model, clean_images(16), n_classes=5, steps=5)
    assert result.norms[2] == 0.0 and result.triggers[2].attack_success == 1.0 and result.suspect == 2
    warps = neural_cleanse(model, clean_images(16), n_classes=5, steps=5, family="warp")
    empty = warps.triggers[2].trigger
    assert warps.norms[2] == 0.0 and empty.field is not None and not empty.field.any()  # a warp needs its field


# issue #11: the K-Arm schedule spends fewer passes, names the same target, and marks the arms it pruned
def _with_a_hard_class() -> PlantedPixelTrojan:
    model = PlantedPixelTrojan().eval()
    with torch.no_grad():
        model.linear.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, -6.0]))  # class 4 needs a far larger trigger
    return model


def test_k_arm_names_the_full_scans_target_for_fewer_passes_and_marks_pruned_arms() -> None:
    model, x = _with_a_hard_class(), clean_images()
    full = neural_cleanse(model, x, n_classes=5, steps=90, schedule="full")
    k_arm = neural_cleanse(model, x, n_classes=5, steps=90, schedule="k-arm")
    assert full.suspect == k_arm.suspect == TARGET and full.flagged and k_arm.flagged
    assert full.schedule == "full" and k_arm.schedule == "k-arm"
    # the count is the examples through the model with a backward pass / batch_size: each class's search
    # draws all its inputs (those not already predicted as the class; fewer than the batch of 128) per step
    predicted = model(x).argmax(-1)
    assert full.passes == sum(t.steps_run * int((predicted != t.trigger.target).sum()) for t in full.triggers) / 128
    assert k_arm.passes < 0.8 * full.passes
    pruned = [t for t in k_arm.triggers if t.pruned]
    assert [t.trigger.target for t in pruned] == [4] and not any(t.converged for t in pruned)
    assert not any(t.pruned for t in full.triggers)
    assert pruned[0].passes < k_arm.triggers[TARGET].passes / 2
    # the suspect ran as the full schedule runs it (same steps), after a cheaper exploration
    assert k_arm.triggers[TARGET].steps_run == full.triggers[TARGET].steps_run
    assert k_arm.triggers[TARGET].mask_l1 < 1.0 and k_arm.norms[TARGET] == k_arm.norms.min()


def test_k_arm_exploits_on_half_batches_and_counts_every_example() -> None:
    """An arm that continues draws batch_size / K_ARM_EXPLORE_SHRINK examples a step while it explores and
    batch_size / K_ARM_EXPLOIT_SHRINK after (issue #11: the exploit on half batches keeps a three-family
    image audit under 2,500 passes); its passes are exactly those examples / batch_size."""
    model, x = _with_a_hard_class(), clean_images()
    steps, batch = 90, 32  # every class has more inputs than a batch, so each step draws a full (shrunk) batch
    result = neural_cleanse(model, x, n_classes=5, steps=steps, schedule="k-arm", batch_size=batch, patience=None)
    assert K_ARM_EXPLORE_SHRINK == 4 and K_ARM_EXPLOIT_SHRINK == 2
    explore = round(K_ARM_EXPLORE * steps)
    target = result.triggers[TARGET]
    assert not target.pruned and target.steps_run == steps
    drawn = explore * (batch // K_ARM_EXPLORE_SHRINK) + (steps - explore) * (batch // K_ARM_EXPLOIT_SHRINK)
    assert target.passes == drawn / batch  # 30 · 8 + 60 · 16 examples: 37.5 passes, not 67.5 on full batches
    hard = result.triggers[4]
    assert hard.pruned and hard.passes == hard.steps_run * (batch // K_ARM_EXPLORE_SHRINK) / batch
    assert result.passes == sum(t.passes for t in result.triggers)


def test_full_schedule_is_per_class_reverse_engineering() -> None:
    model, x = PlantedPixelTrojan().eval(), clean_images(32)
    result = neural_cleanse(model, x, n_classes=5, steps=20, schedule="full", seed=4)
    alone = reverse_engineer_trigger(model, x[model(x).argmax(-1) != 2], 2, steps=20, seed=4 + 2)
    assert result.triggers[2].trigger == alone.trigger and result.triggers[2].passes == alone.passes


@pytest.mark.parametrize("kwargs, message", [({"schedule": "fast"}, "schedule"), ({"restart": 2}, "restart"),
                                             ({"steps": 0}, "steps"), ({"family": "sparkle"}, "family")])
def test_neural_cleanse_refuses_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        neural_cleanse(PlantedPixelTrojan().eval(), clean_images(8), n_classes=5, **kwargs)
