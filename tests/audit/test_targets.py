"""Several trojans in one model (issue #11 item 4): the multi-target rule, every validated trigger reported,
refined triggers with their identifiable pixels, and warp findings in findings.json."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from seethrough.audit import MAX_TARGETS, flag_targets, scan
from seethrough.core import InputError
from seethrough.evidence import Finding, Trigger

SIDE = 10


class TwoDoors(nn.Module):
    """A 4-class linear toy on 10x10 images with the answer key in its weights.

    Clean inputs are dim (values in [0, 0.2], one pixel at 1) with the left or the right half raised by
    0.2: class 0 or class 3 by the halves' mean difference. Each planted class (1 and/or 2) fires when one corner
    pixel ((0, 0) for class 1, (9, 9) for class 2) is bright: a one-pixel trigger. A class that is not
    planted reads the halves like 0 and 3 but more weakly (its smallest trigger is several pixels), so
    natural triggers need several pixels and planted ones one (a mask of about 0.7 there). 10x10: 40 shuffled
    controls of a one-pixel mask rarely land on the planted pixel, so the validation's p-value can resolve it.
    """

    def __init__(self, planted: tuple[int, ...]) -> None:
        super().__init__()
        self.linear = nn.Linear(SIDE * SIDE, 4)
        halves = torch.zeros(SIDE, SIDE)
        halves[:, : SIDE // 2] = 1.0 / (SIDE * SIDE // 2)
        halves[:, SIDE // 2:] = -1.0 / (SIDE * SIDE // 2)
        weight = torch.zeros(4, SIDE, SIDE)
        weight[0], weight[3] = 40 * halves, -40 * halves
        bias = torch.zeros(4)
        for cls, corner in ((1, (0, 0)), (2, (SIDE - 1, SIDE - 1))):
            if cls in planted:
                weight[cls][corner] = 40.0
                bias[cls] = -20.0
            else:
                weight[cls] = 20 * halves * (1 if cls == 1 else -1)
                bias[cls] = -4.0
        with torch.no_grad():
            self.linear.weight.copy_(weight.flatten(1))
            self.linear.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def clean_inputs(n: int = 96) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, SIDE, SIDE, generator=gen) * 0.2
    left = torch.arange(n) % 2 == 0
    x[left, :, :, : SIDE // 2] += 0.2
    x[~left, :, :, SIDE // 2:] += 0.2
    x[:, :, 2, 2] = 1.0  # one bright pixel in every image: the data's range (the pattern's box) is [0, 1]
    return x


# --- the rule -------------------------------------------------------------------------------------------

def test_two_small_triggers_below_one_jump_are_both_flagged() -> None:
    assert flag_targets([30.0, 4.0, 40.0, 9.0, 35.0], min_gap=2.0) == ([1, 3], 30.0 / 9.0)
    # equal planted triggers: no jump between them, one jump above both
    assert flag_targets([30.0, 4.0, 40.0, 4.0, 35.0], min_gap=2.0)[0] == [1, 3]
    # the first target standing apart from the second does not hide the second
    assert flag_targets([30.0, 2.0, 40.0, 7.0, 35.0], min_gap=2.0)[0] == [1, 3]
    assert flag_targets([30.0, 20.0, 40.0, 25.0], min_gap=2.0) == ([], 1.25)


@pytest.mark.parametrize("seed", range(20))
def test_with_one_target_the_rule_is_the_runner_up_rule(seed: int) -> None:
    """Oracle: the runner-up rule as the scan had it before issue #11 (flag the smallest class when
    ``s[1] / s[0] >= min_gap``); ``max_targets=1`` is exactly it, and so is the default whenever the
    second jump is small."""
    gen = torch.Generator().manual_seed(seed)
    sizes = (torch.rand(10, generator=gen) * 30 + 1).tolist()
    sizes[seed % 10] /= float(torch.rand(1, generator=gen) * 8 + 0.5)
    ranked = sorted(sizes)
    old_gap = ranked[1] / max(ranked[0], 1e-6)
    old = [sizes.index(ranked[0])] if old_gap >= 2.0 else []
    assert flag_targets(sizes, min_gap=2.0, max_targets=1) == (old, old_gap)
    if ranked[2] / ranked[1] < 2.0:
        assert flag_targets(sizes, min_gap=2.0)[0] == old


def test_the_rule_refuses_too_few_classes_or_targets() -> None:
    with pytest.raises(InputError, match="at least 2 classes"):
        flag_targets([1.0], min_gap=2.0)
    with pytest.raises(InputError, match="max_targets"):
        flag_targets([1.0, 2.0], min_gap=2.0, max_targets=0)
    assert MAX_TARGETS == 2


# --- the scan on a toy with its answer key ----------------------------------------------------------------

@pytest.fixture(scope="module")
def two_doors() -> dict:
    x = clean_inputs()
    results = {}
    for planted in ((1, 2), (1,)):
        model = TwoDoors(planted).eval()
        assert set(model(x).argmax(-1).tolist()) == {0, 3}  # the precondition: clean inputs are classes 0 and 3
        results[planted] = scan(model, x, families=("patch",), n_scan=64, n_controls=40)
    return results


def test_two_planted_targets_give_two_validated_findings(two_doors) -> None:
    result = two_doors[(1, 2)]
    assert result.verdict == "trojaned" and result.reasons == ()
    assert sorted(f.target for f in result.findings) == [1, 2]
    assert all(v.validated for v in result.validations)
    record = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert sorted(f["target_class"] for f in record["findings"]) == [1, 2]  # findings.json lists both
    corners = {1: (0, 0), 2: (SIDE - 1, SIDE - 1)}
    for finding in record["findings"]:
        mask = torch.tensor(finding["trigger_mask"])
        assert tuple(divmod(int(mask.argmax()), SIDE)) == corners[finding["target_class"]]  # the planted pixel
        assert finding["refined"] and finding["rank"] in (0, 1)
        assert finding["identifiable_pixels"] == sum(map(sum, finding["identifiable_mask"])) >= 1
        assert finding["gap_to_runner_up"] >= 2.0
    assert "class 1" in result.summary and "class 2" in result.summary


def test_one_planted_target_gives_one_finding_as_the_runner_up_rule(two_doors) -> None:
    result = two_doors[(1,)]
    assert result.verdict == "trojaned" and result.reasons == ()
    assert [f.target for f in result.findings] == [1]
    assert flag_targets(result.scans["patch"].norms.tolist(), min_gap=2.0, max_targets=1)[0] == [1]  # the old rule
    assert all(t.converged or t.pruned for t in result.scans["patch"].triggers)


# --- warp findings in findings.json -----------------------------------------------------------------------

def test_a_warp_finding_round_trips_through_findings_json(two_doors) -> None:
    result = two_doors[(1,)]
    field = torch.zeros(2, SIDE, SIDE)
    field[1] = 0.75
    warp = Trigger(torch.ones(SIDE, SIDE), torch.zeros(1, SIDE, SIDE), 1, "warp", field)
    finding = Finding("trojan", "a planted warp", trigger=warp, score=1.0,
                      evidence={"trigger_family": "warp", "gap_to_runner_up": 3.0})
    spliced = dataclasses.replace(result, findings=(finding,), identifiable=(None,))
    (record,) = json.loads(json.dumps(spliced.to_dict(), allow_nan=False))["findings"]
    assert record["trigger_family"] == "warp" and record["mean_displacement"] == pytest.approx(0.75)
    rebuilt = Trigger.from_dict({"mask": record["trigger_mask"], "pattern": record["trigger_pattern"],
                                 "target": record["target_class"], "family": record["trigger_family"],
                                 "field": record["trigger_field"]})
    assert rebuilt == warp
    assert record["identifiable_mask"] is None
