"""Audit verdicts with their limits (issue #10, items 6 and 7): "inconclusive" when the scan could not
search, triggers searched in the data's own range, labels and data checked before any work, non-finite
outputs never scored, failing forwards as one line, and a clean verdict that says what it is worth."""

from __future__ import annotations

import inspect
import json

import pytest
import torch
from torch import nn

from seethrough.audit import MEASURED_DETECTION, NEAR, repair, scan
from seethrough.bench.zoo import digits16, trojaned_classifier
from seethrough.core import ForwardError, InputError
from seethrough.evidence import Trigger, attack_success

SEED = 11  # outside the seeds 0-7 on which the gap rule was calibrated


def strict_json(record: dict) -> dict:
    """findings.json as the CLI writes it: strict JSON (a NaN or inf raises)."""
    return json.loads(json.dumps(record, allow_nan=False))


class Scaled(nn.Module):
    """A model that takes its inputs on a 0-255 scale (divides by 255 first)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x / 255.0)


class CountingMLP(nn.Module):
    """A digits MLP that counts its forward calls and can fail on a given call."""

    def __init__(self, fail_on: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
        self.calls = 0
        self.fail_on = fail_on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("CUDA error: device-side assert triggered\nsecond line of the model's own error")
        return self.net(x)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return digits16("test")


@pytest.fixture(scope="module")
def clean_scan(digits: tuple[torch.Tensor, torch.Tensor]):
    model, _ = trojaned_classifier("mlp", "none", SEED)
    return scan(model, digits[0], n_controls=20)


# --- "inconclusive" when the scan could not search -------------------------------------------------------

def test_too_few_steps_on_a_trojaned_model_is_inconclusive_not_clean(digits) -> None:
    """Regression (issue #10): a trojaned model audited with --steps 10 was called clean."""
    model, meta = trojaned_classifier("mlp", "patch", SEED)
    result = scan(model, digits[0], steps=10, n_controls=20)
    assert result.verdict == "inconclusive"
    assert any("No class's patch trigger reached the success goal in 10 steps" in r for r in result.reasons)
    record = strict_json(result.to_dict())
    assert record["verdict"] == "inconclusive" and record["reasons"] == list(result.reasons)
    assert record["summary"].startswith("inconclusive:") and "more steps" in record["summary"]
    # every DESIGN section 6 key is still there
    assert {"verdict", "anomaly_score", "findings"} <= set(record) and isinstance(record["anomaly_score"], float)


def test_searches_still_shrinking_at_the_end_are_inconclusive(digits) -> None:
    """100 steps: every class reaches the goal, but the smallest masks are still shrinking (measured 16-60%
    over the last quarter of the steps); with 300 steps the same model is found (the oracle: its planted target)."""
    model, meta = trojaned_classifier("mlp", "patch", SEED)
    short = scan(model, digits[0], steps=100, n_controls=20)
    assert short.verdict == "inconclusive"
    assert any("had not converged in 100 steps" in r and "still shrinking" in r for r in short.reasons)
    assert not all(t.converged for t in short.scans["patch"].triggers)
    assert all(t.reached_goal for t in short.scans["patch"].triggers)
    full = scan(model, digits[0], n_controls=20)
    assert full.verdict == "trojaned" and full.suspect == meta["trigger"]["target"] and full.reasons == ()


def test_only_classes_that_can_decide_the_flags_make_a_scan_inconclusive() -> None:
    """The full schedule's unconverged searches of classes far above the smallest (which K-Arm stops as
    hopeless) leave the verdict alone; an unconverged class among the deciding ones does not."""
    from seethrough.audit.reverse import NeuralCleanse, ReversedTrigger
    from seethrough.audit.verdict import _reasons

    def arms(sizes: list[float], unconverged: int = -1, failed: tuple[int, ...] = ()) -> dict[str, NeuralCleanse]:
        triggers = tuple(ReversedTrigger(Trigger(torch.zeros(2, 2), torch.zeros(1, 2, 2), k), size, 1.0,
                                         converged=k != unconverged, recent_shrink=0.4 if k == unconverged else 0.0,
                                         reached_goal=k not in failed)
                         for k, size in enumerate(sizes))
        return {"warp": NeuralCleanse(triggers, torch.zeros(len(sizes)), 2.0, schedule="full")}

    names = [str(k) for k in range(6)]
    sizes = [1.0, 1.1, 1.2, 3.0, 3.5, 4.0]
    assert _reasons(arms(sizes, unconverged=4), names, 300) == ()  # 3× the third smallest: hopeless
    assert _reasons(arms(sizes, failed=(5,)), names, 300) == ()  # no success while the deciding classes had one
    for these, k in ((sizes, 2), ([1.0, 1.1, 1.2, 1.3, 3.5, 4.0], 3)):  # deciding classes
        (reason,) = _reasons(arms(these, unconverged=k), names, 300)
        assert "had not converged" in reason and f"class(es) {k}" in reason
    # two successes only: the unsuccessful classes ranked next (by class) are kept, as K-Arm keeps them
    (reason,) = _reasons(arms([1.0, 9.0, 3.0, 9.0, 9.0, 9.0], failed=(1, 3, 4, 5)), names, 300)
    assert "never reached the success goal" in reason and "class(es) 1 ('1'), 3 ('3')" in reason


def test_a_clean_model_converges_and_says_what_clean_is_worth(clean_scan) -> None:
    result = clean_scan
    assert result.verdict == "clean" and result.reasons == ()
    # every class converged, or was stopped early by the K-Arm schedule as hopeless (issue #11): never both,
    # and the classes that decide the verdict (the smallest three of each family) always ran to convergence
    for s in result.scans.values():
        assert all(t.converged != t.pruned for t in s.triggers)
        assert all(s.triggers[c].converged for c in s.norms.argsort()[:3].tolist())
    record = strict_json(result.to_dict())
    assert record["searched"]["families"] == ["patch", "blend", "warp"] and record["searched"]["n_classes"] == 10
    assert record["searched"]["max_targets"] == 2
    assert record["measured_detection"] == MEASURED_DETECTION
    patch_found, patch_models = MEASURED_DETECTION["detected"]["patch"]
    assert f"missed {patch_models - patch_found} of {patch_models} patch" in record["summary"]
    assert "patch or blend or warp" in record["summary"] and "Not searched: input-dependent" in record["summary"]


def test_suspects_near_the_threshold_are_listed(clean_scan) -> None:
    """The clean seed-11 MLP's patch gap is 1.86 (of 2): listed; the blend gap (1.28) is not."""
    result = clean_scan
    min_gap = result.settings["min_gap"]
    expected = [{"family": f, "class": result.scans[f].suspect, "class_name": str(result.scans[f].suspect),
                 "gap": g, "min_gap": min_gap} for f, g in result.gaps.items() if NEAR * min_gap <= g < min_gap]
    assert result.near_threshold == expected and [n["family"] for n in expected] == ["patch"]
    assert strict_json(result.to_dict())["near_threshold"] == expected
    assert "Near the threshold: class 4" in result.summary


# --- inputs outside the [0, 1] trigger box ---------------------------------------------------------------

@pytest.mark.parametrize("family", ["patch", "none"])
def test_inputs_scaled_by_255_are_searched_on_their_own_scale(digits, family: str) -> None:
    """Regression (issue #10): inputs x 255 gave every class a failed search and a "clean" verdict. The
    box is now the data's range; the x255 model on x255 data is the same function as the original on [0, 1]."""
    model, meta = trojaned_classifier("mlp", family, SEED)
    x, y = digits
    result = scan(Scaled(model).eval(), x * 255, n_controls=20)
    assert result.settings["pattern_range"] == [[0.0], [255.0]]
    if meta["trigger"] is None:
        assert result.verdict == "clean" and result.findings == ()
        return
    target = meta["trigger"]["target"]
    assert result.verdict == "trojaned" and result.suspect == target
    (finding,) = [f for f in strict_json(result.to_dict())["findings"] if f["trigger_family"] == "patch"]
    pattern = torch.tensor(finding["trigger_pattern"])
    assert float(pattern.min()) >= 0.0 and float(pattern.max()) <= 255.0 and float(pattern.max()) > 1.0
    # the found trigger, taken back to [0, 1], works on the original model (the model's own outputs)
    t = result.findings[0].trigger
    back = Trigger(t.mask, t.pattern / 255.0, t.target, t.family)
    assert attack_success(model, x, y, back) > 0.8


# --- labels, data and outputs checked before any work ----------------------------------------------------

@pytest.mark.parametrize("bad, row", [(10, 37), (-1, 5)])
def test_labels_outside_the_models_classes_are_refused_before_the_scan(digits, bad: int, row: int) -> None:
    x, y = digits
    labels = y.clone()
    labels[row] = bad
    model = CountingMLP()
    with pytest.raises(InputError, match=rf"label {bad} \(row {row}\) is not a class of the model, which has 10"):
        scan(model, x, labels=labels)
    assert model.calls == 1  # the one checking pass, no search
    assert inspect.signature(scan).parameters["labels"].default is None  # optional: the scan does not use them


@pytest.mark.parametrize("n_controls", [1, 10, 19])
def test_too_few_controls_to_ever_validate_are_refused_before_any_work(digits, n_controls: int) -> None:
    """Found by this issue's tests: with 10 controls a flagged trigger (gap 5.1 on the seed-11 patch MLP) read
    "clean", since a p-value of at least 1/11 never falls below 0.05. Now one line, before any forward pass."""
    model = CountingMLP()
    with pytest.raises(InputError, match=rf"n_controls={n_controls} can never validate a trigger: .* pass "
                                         r"n_controls ≥ 20"):
        scan(model, digits[0], n_controls=n_controls)
    assert model.calls == 0
    model, _ = trojaned_classifier("mlp", "patch", SEED)
    assert scan(model, digits[0], families=("patch",), n_controls=20).verdict == "trojaned"  # 1/21 < 0.05


def test_repair_checks_labels_before_any_work(digits) -> None:
    model, _ = trojaned_classifier("mlp", "patch", SEED)
    x, y = digits
    result = scan(model, x, steps=10, n_controls=20)
    with pytest.raises(InputError, match="label 12 .* 10 outputs"):
        repair(result, model, x, torch.where(y == 3, 12, y))
    with pytest.raises(InputError, match="integer class indices"):
        repair(result, model, x, y.float())


@pytest.mark.parametrize("case", ["nan weights", "weights of 1e30", "inputs of 1e38"])
def test_non_finite_outputs_are_refused_before_any_score(digits, case: str) -> None:
    """Regression (issue #10): NaN outputs gave verdict clean and a findings.json with NaN literals."""
    model, _ = trojaned_classifier("mlp", "none", SEED)
    x = digits[0][:40]
    with torch.no_grad():
        if case == "nan weights":
            next(model.parameters()).fill_(float("nan"))
        elif case == "weights of 1e30":
            for p in model.parameters():
                p.mul_(1e30)
        else:
            x = x * 1e38
    with pytest.raises(InputError, match="NaN or infinite on .* clean inputs") as err:
        scan(model, x, steps=10)
    assert "\n" not in str(err.value)


class NaNWhenBright(nn.Module):
    """Finite on clean digits (mean brightness 0.24-0.40); NaN once an input's mean brightness passes 0.42,
    which some classes' trigger searches reach (measured: 3 of 10 blend searches in 60 steps)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(256, 10)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(10, 256, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x.flatten(1))
        bright = x.flatten(1).mean(1, keepdim=True) > 0.42
        return torch.where(bright, torch.full_like(out, float("nan")), out)


def test_outputs_that_turn_non_finite_during_the_search_make_it_inconclusive(digits) -> None:
    x = digits[0]
    assert bool(torch.isfinite(NaNWhenBright()(x)).all())  # the precondition: finite on the data
    result = scan(NaNWhenBright().eval(), x, steps=60, n_controls=20)
    assert result.verdict == "inconclusive" and result.findings == ()
    assert any("NaN or infinite on stamped inputs" in r for r in result.reasons)
    assert not all(t.finite for s in result.scans.values() for t in s.triggers)
    strict_json(result.to_dict())  # never a NaN literal


# --- failing forwards are one line -----------------------------------------------------------------------

def test_data_that_does_not_fit_the_model_is_one_forward_error(digits) -> None:
    """Regression (issue #10): a 59-line traceback from an unwrapped forward."""
    model = CountingMLP()
    x = digits[0][:, :, :8, :8]
    with pytest.raises(ForwardError, match=r"float32 \(450, 1, 8, 8\).*check that the data fits the model") as err:
        scan(model, x)
    assert "\n" not in str(err.value) and model.calls == 1
    assert isinstance(err.value.__cause__, RuntimeError)  # the model's own error is chained


def test_a_forward_failing_mid_search_is_one_forward_error(digits) -> None:
    model = CountingMLP(fail_on=6)
    with pytest.raises(ForwardError, match="during the audit's trigger search.*device-side assert") as err:
        scan(model, digits[0], steps=20)
    assert "\n" not in str(err.value) and model.calls == 6
