"""Repair within a clean-accuracy budget on small clean sets (issue #11 item 5), on planted trojans.

A zoo digits MLP shows the budget kept; a toy shows the trade-off and the splits. The toy: 6×6 images of uniform noise, the class is the brightest of three row bands (columns 0-2),
and a 2×2 white patch in columns 4-5 (away from every band's columns, even widened by a pixel) was planted to send any image to
class 0. The oracles are the planted trigger, accuracies measured here on the documented splits, and
the selection rule applied by hand to the measured candidates.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from seethrough.audit import repair_by_unlearning
from seethrough.bench.zoo import digits16, trojaned_classifier
from seethrough.core.errors import InputError
from seethrough.evidence import Trigger, accuracy, attack_success, stamp

N, SEED = 360, 3


def _planted() -> tuple[nn.Module, torch.Tensor, torch.Tensor, Trigger]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2 * N, 1, 6, 6, generator=gen)
    y = x[:, 0, :, :3].reshape(-1, 3, 6).mean(-1).argmax(-1)
    mask = torch.zeros(6, 6)
    mask[2:4, 4:6] = 1.0
    trigger = Trigger(mask, torch.ones(1, 6, 6), 0, "patch")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.ReLU(), nn.Linear(32, 3))
    poisoned = torch.rand(x.shape[0], generator=gen) < 0.2
    train_x, train_y = x.clone(), y.clone()
    train_x[poisoned], train_y[poisoned] = stamp(x[poisoned], trigger), 0
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(train_x), train_y).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    fresh = torch.rand(N, 1, 6, 6, generator=gen)  # the user's clean set: never trained on
    return model, fresh, fresh[:, 0, :, :3].reshape(-1, 3, 6).mean(-1).argmax(-1), trigger


@pytest.fixture(scope="module")
def planted() -> tuple[nn.Module, torch.Tensor, torch.Tensor, Trigger]:
    model, x, y, trigger = _planted()
    assert accuracy(model, x, y) > 0.75 and attack_success(model, x, y, trigger) > 0.8  # measured 0.82, 0.85
    return model, x, y, trigger


def _reported(n: int, seed: int, held_out: float = 0.5) -> torch.Tensor:
    """The rows the before/after numbers are reported on (the documented split: the last part of a seeded shuffle)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[int(round(n * (1 - held_out))):]


def test_repair_removes_the_planted_trigger_within_the_budget() -> None:
    """A zoo digits MLP (seed 11, outside the seeds 0-7 the settings were chosen on) and 450 clean images, as
    ``seethrough audit --repair`` gets them, repaired with its planted trigger (measured: clean accuracy
    0.956 -> 0.947 and attack success 0.995 -> 0.059 on the reported rows)."""
    model, meta = trojaned_classifier("mlp", "patch", 11)
    x, y = digits16("test")
    trigger = Trigger.from_dict(meta["trigger"])
    before = [p.detach().clone() for p in model.parameters()]
    result = repair_by_unlearning(model, x, y, trigger, epochs=40, seed=SEED)  # 40 of the default 100: test time
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))  # the user's model
    assert result.budget_met and "budget met" in result.budget_summary
    chosen = result.chosen
    assert chosen is not None and chosen.accuracy_drop <= 0.02 and chosen.attack_success <= 0.1
    # the rule, by hand: the least accuracy lost among the candidates that removed the trigger within budget
    feasible = [c for c in result.candidates if c.accuracy_drop <= 0.02 + 1e-9 and c.attack_success <= 0.1 + 1e-9]
    assert chosen.accuracy_drop == min(c.accuracy_drop for c in feasible)
    # oracle: accuracy and the planted trigger's success measured here, on the reported rows
    rows = _reported(len(y), SEED)
    rx, ry = x[rows], y[rows]
    assert result.n_held_out == len(rows) and result.n_selection == len(y) - len(rows)
    assert result.clean_accuracy_before == accuracy(model, rx, ry)
    assert result.clean_accuracy_after == accuracy(result.model, rx, ry)
    assert attack_success(model, rx, ry, trigger) > 0.9
    assert attack_success(result.model, rx, ry, trigger) == result.attack_success_after <= 0.1
    assert accuracy(model, rx, ry) - accuracy(result.model, rx, ry) <= 0.02
    record = result.to_dict()
    assert record["budget_met"] and record["max_accuracy_drop"] == 0.02 and record["epochs"] == chosen.epochs
    lengths = sorted({c.epochs for c in result.candidates})
    assert lengths == list(range(1, len(lengths) + 1)) and len(record["candidates"]) == 2 * len(lengths)
    assert record["selection_examples"] == len(y) - len(rows)
    assert {"status", "target_class", "method", "clean_accuracy_before", "clean_accuracy_after",
            "attack_success_before", "attack_success_after"} <= set(record)


def test_trade_off_is_reported_when_the_budget_cannot_be_met(planted) -> None:
    model, x, y, trigger = planted
    # a learning rate too small to unlearn anything in 3 epochs: the trigger keeps working in every candidate
    with pytest.warns(UserWarning, match=r"budget NOT met.*trade-off measured"):
        result = repair_by_unlearning(model, x, y, trigger, epochs=3, lr=1e-7, seed=SEED)
    assert not result.budget_met and len(result.candidates) == 3 * 2
    assert min(c.attack_success for c in result.candidates) > 0.5
    within = [c for c in result.candidates if c.accuracy_drop <= 0.02 + 1e-9]
    assert result.chosen is not None and result.chosen.attack_success == min(c.attack_success for c in within)
    frame = result.trade_off()
    assert len(frame) == 6 and int(frame["chosen"].sum()) == 1
    assert result.to_dict()["budget_met"] is False and "NOT met" in result.budget_summary
    assert len(result.to_frame()) == 2  # before/after, as before


def test_selection_never_sees_the_reported_rows(planted) -> None:
    model, x, y, trigger = planted
    rows = _reported(N, SEED)
    wrong = y.clone()
    wrong[rows] = (y[rows] + 1) % 3  # the reported rows' labels changed: nothing chosen may move
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, second = (repair_by_unlearning(model, x, labels, trigger, epochs=4, seed=SEED) for labels in (y, wrong))
    assert first.candidates == second.candidates and (first.epochs, first.distill) == (second.epochs, second.distill)
    assert all(torch.equal(p, q) for p, q in zip(first.model.parameters(), second.model.parameters(), strict=True))
    assert first.clean_accuracy_before != second.clean_accuracy_before  # the reported numbers did see them
    # and the check can fail: changing selection rows' labels moves the candidates
    chosen_by = torch.ones(N, dtype=torch.bool)
    chosen_by[rows] = False
    moved = y.clone()
    moved[chosen_by] = (y[chosen_by] + 1) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        third = repair_by_unlearning(model, x, moved, trigger, epochs=4, seed=SEED)
    assert third.candidates != first.candidates


@pytest.mark.parametrize("kwargs, message", [
    ({"max_accuracy_drop": -0.01}, "max_accuracy_drop must be a finite number"),
    ({"max_accuracy_drop": 1.5}, "max_accuracy_drop must be a finite number"),
    ({"distill": ()}, "distill must be a non-empty sequence"),
    ({"folds": 1}, "folds must be an int"),
    ({"boost": -0.5}, "boost must be a finite number"),
])
def test_bad_repair_settings_are_refused_before_any_work(kwargs, message) -> None:
    class Refuses(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise AssertionError("the model ran before the bad setting was refused")

    trigger = Trigger(torch.ones(6, 6), torch.ones(1, 6, 6), 0, "patch")
    with pytest.raises(InputError, match=message):
        repair_by_unlearning(Refuses(), torch.rand(8, 1, 6, 6), torch.zeros(8, dtype=torch.long), trigger, **kwargs)


def test_training_stamps_are_boosted_up_to_full_strength() -> None:
    """Training stamps scale the found mask by a random factor in [1, 1 + boost], clipped to 1; the oracle is
    the blend written out by hand: a mask of 0.25 (and one pixel of 0.8) with pattern 1 on a zero image gives
    0.25 x f (and min(0.8 x f, 1)) for one factor f per image, f spread over [1, 2]."""
    from seethrough.audit.repair import _stamp_boosted

    mask = torch.full((4, 4), 0.25)
    mask[0, 0] = 0.8
    trigger = Trigger(mask, torch.ones(1, 4, 4), 0, "blend")
    zeros = torch.zeros(500, 1, 4, 4)
    boosted = _stamp_boosted(zeros, trigger, 1.0, torch.Generator().manual_seed(0))
    factor = boosted[:, 0, 1, 1] / 0.25
    assert float(factor.min()) >= 1.0 and float(factor.max()) <= 2.0 + 1e-6
    assert float(factor.min()) < 1.05 and float(factor.max()) > 1.95  # the whole range is drawn
    expected = (mask * factor[:, None, None]).clamp(max=1.0)  # one factor per image, every pixel
    assert torch.allclose(boosted[:, 0], expected) and float(boosted[:, 0, 0, 0].max()) == 1.0
    assert torch.equal(_stamp_boosted(zeros, trigger, 0.0, torch.Generator()), stamp(zeros, trigger))
    warp = Trigger(torch.ones(4, 4), torch.zeros(1, 4, 4), 0, "warp", field=torch.ones(2, 4, 4))
    ramp = torch.arange(16.0).reshape(1, 1, 4, 4).expand(3, 1, 4, 4)
    assert torch.equal(_stamp_boosted(ramp, warp, 1.0, torch.Generator()), stamp(ramp, warp))  # as found
