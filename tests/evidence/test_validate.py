"""validate: planted units, directions and triggers with known effects; random controls (issue #3)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from seethrough import Site
from seethrough.core import InputError
from seethrough.evidence import Finding, Trigger, fingerprint, target_log_prob, validate


def planted_mlp() -> nn.Sequential:
    """x (2) → h = relu(x0, x1, 0, 0) → logits (5 h0, 5 h1): unit 0 carries class 0; units 2, 3 carry nothing."""
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [0, 0], [0, 0]]))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[5.0, 0, 0, 0], [0, 5, 0, 0]]))
        model[2].bias.zero_()
    return model


def inputs(n: int = 64) -> torch.Tensor:
    return torch.rand(n, 2, generator=torch.Generator().manual_seed(0)) + 0.5


def test_planted_unit_effect_matches_the_closed_form() -> None:
    model, x = planted_mlp(), inputs()
    v = validate(Finding("units", "unit 0 carries class 0", site=Site("1"), units=[0], target=0), model, x,
                 n_controls=30)
    logits = 5 * x
    clean = torch.log_softmax(logits, -1)[:, 0]
    ablated = torch.log_softmax(torch.stack([torch.zeros(64), logits[:, 1]], -1), -1)[:, 0]
    assert v.effect == pytest.approx(float((clean - ablated).double().mean()), rel=1e-6)
    assert v.validated and v.p_value == pytest.approx(1 / 31)
    assert v.ci_low <= v.effect <= v.ci_high


def test_units_with_no_effect_are_not_validated() -> None:
    model, x = planted_mlp(), inputs()
    v = validate(Finding("units", "units 2, 3 carry class 0", site=Site("1"), units=[2, 3], target=0), model, x,
                 n_controls=30)
    assert v.effect == 0.0 and not v.validated  # dead units: exactly zero effect, CI not above zero


def test_random_controls_are_indistinguishable_from_zero_for_inert_units() -> None:
    model = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        model[2].weight.zero_()  # no unit matters: every control effect is exactly zero
    v = validate(Finding("units", "unit 1 matters", site=Site("1"), units=[1], target=0), model, inputs(),
                 n_controls=20)
    assert set(v.control_effects) == {0.0} and v.p_value == 1.0 and not v.validated


def test_mean_ablation_of_a_constant_unit_has_no_effect() -> None:
    model, x = planted_mlp(), inputs()
    with torch.no_grad():
        model[0].weight[0].zero_()
        model[0].bias[0] = 1.0  # unit 0 is the constant 1: its mean is itself
    v = validate(Finding("units", "u0", site=Site("1"), units=[0], target=0), model, x, n_controls=5,
                 ablation="mean")
    assert v.effect == pytest.approx(0.0, abs=1e-12)


def test_planted_direction_beats_random_directions() -> None:
    d = 8
    u = torch.zeros(d)
    u[:2] = torch.tensor([0.6, 0.8])
    model = nn.Sequential(nn.Identity(), nn.Linear(d, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([4 * u, -4 * u]))  # class evidence lies along u only
    x = torch.randn(128, d, generator=torch.Generator().manual_seed(1)) + 2 * u
    v = validate(Finding("direction", "u carries class 0", site=Site("0"), direction=u, target=0), model, x,
                 n_controls=50)
    assert v.validated and v.p_value < 0.05 and v.effect > max(v.control_effects)


class PixelTrojan(nn.Module):
    """Predicts class 1 exactly when pixel (2, 3) is bright: a planted trigger."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = (x[:, 0, 2, 3] > 0.9).float()
        return torch.stack([1 - bright, bright], dim=-1) * 10


def test_planted_trigger_is_validated_and_shuffled_triggers_are_not() -> None:
    mask = torch.zeros(6, 6)
    mask[2, 3] = 1.0
    x = torch.rand(50, 1, 6, 6, generator=torch.Generator().manual_seed(2)) * 0.5
    f = Finding("trojan", "a bright pixel at (2,3) flips to class 1", trigger=Trigger(mask, torch.ones(1, 6, 6), 1))
    assert f.target == 1
    v = validate(f, PixelTrojan(), x, n_controls=40)
    assert v.effect == 1.0 and v.validated
    # a shuffled one-pixel trigger hits (2,3) with probability 1/36: most controls have zero effect
    assert sum(c == 0.0 for c in v.control_effects) >= 30


def test_validation_reports() -> None:
    v = validate(Finding("units", "u0", site=Site("1"), units=[0], target=0), planted_mlp(), inputs(),
                 n_controls=20, metric=target_log_prob(0))  # p can reach 1/21 < 0.05
    assert v.to_dict()["validated"] is True and len(v.to_frame()) == 1 and v.plot().axes


@pytest.mark.parametrize("finding, message", [
    (Finding("units", "c", site=Site("1"), units=[9], target=0), "out of range"),
    (Finding("units", "c", site=Site("1"), units=[0]), "no target"),
    (Finding("direction", "c", site=Site("1"), direction=torch.ones(3), target=0), "3 entries"),
])
def test_bad_findings_are_refused(finding: Finding, message: str) -> None:
    with pytest.raises(InputError, match=message):
        validate(finding, planted_mlp(), inputs(), n_controls=3)


def test_trigger_needs_images_of_the_trigger_size() -> None:
    f = Finding("trojan", "c", trigger=Trigger(torch.ones(6, 6), torch.ones(1, 6, 6), 1))
    with pytest.raises(InputError, match="image inputs"):
        validate(f, PixelTrojan(), torch.rand(4, 1, 5, 5), n_controls=3)


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "units", "claim": "c"}, "needs a site"),
    ({"kind": "units", "claim": "c", "site": Site("1")}, "non-empty"),
    ({"kind": "direction", "claim": "c", "site": Site("1"), "direction": torch.zeros(3)}, "non-zero"),
    ({"kind": "trojan", "claim": "c", "trigger": lambda: Trigger(torch.full((4, 4), 2.0), torch.zeros(1, 4, 4), 0)},
     r"\[0, 1\]"),
    ({"kind": "trojan", "claim": "c", "trigger": lambda: Trigger(torch.zeros(4, 4), torch.zeros(1, 5, 4), 0)},
     "same H, W"),
    ({"kind": "trojan", "claim": "c", "target": 0}, "needs trigger"),
    ({"kind": "trojan", "claim": "c", "target": 2, "trigger": lambda: Trigger(torch.zeros(4, 4), torch.zeros(1, 4, 4),
                                                                             1)}, "differs"),
    ({"kind": "guess", "claim": "c"}, "kind"),
    ({"kind": "units", "claim": "c", "site": Site("1"), "units": [1, 1]}, "repeated"),
])
def test_malformed_findings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises((InputError, TypeError), match=message):  # a trigger is built inside the check
        Finding(**{k: v() if callable(v) else v for k, v in kwargs.items()})


def test_mean_ablation_over_a_reference_set_matches_the_closed_form() -> None:
    model, x = planted_mlp(), inputs(32)
    ref = torch.full((10, 2), 0.25)  # unit 0's mean over the reference is exactly 0.25
    v = validate(Finding("units", "u0", site=Site("1"), units=[0], target=0), model, x, n_controls=5,
                 ablation="mean", reference=ref)
    logits = 5 * x
    clean = torch.log_softmax(logits, -1)[:, 0]
    ablated = torch.log_softmax(torch.stack([torch.full((32,), 5 * 0.25), logits[:, 1]], -1), -1)[:, 0]
    assert v.effect == pytest.approx(float((clean - ablated).double().mean()), rel=1e-6)


def test_stamp_closed_form_and_shape_errors() -> None:
    from seethrough.evidence import stamp

    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(4, 4)
    mask[1, 2] = 1.0
    mask[0, 0] = 0.25
    pattern = torch.full((1, 4, 4), 0.8)
    out = stamp(x, Trigger(mask, pattern, 0))
    expected = x.clone()
    expected[:, 0, 1, 2] = 0.8
    expected[:, 0, 0, 0] = 0.75 * x[:, 0, 0, 0] + 0.25 * 0.8
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-7)  # one rounding step
    with pytest.raises(InputError, match="do not fit"):
        stamp(x, Trigger(torch.zeros(5, 5), torch.zeros(1, 5, 5), 0))


def test_in_sample_validation_is_flagged_and_warns_held_out_is_not() -> None:
    """Issue #10, item 5: a finding validated on its discovery data says so (flag, frame, dict, warning)."""
    model, x = planted_mlp(), inputs(64)
    held_out = torch.rand(64, 2, generator=torch.Generator().manual_seed(7)) + 0.5
    plain = Finding("units", "unit 0 carries class 0", site=Site("1"), units=[0], target=0)
    found = Finding("units", "unit 0 carries class 0", site=Site("1"), units=[0], target=0,
                    data_fingerprint=fingerprint(x))
    with pytest.warns(UserWarning, match="held-out data") as caught:
        same = validate(found, model, x, n_controls=10)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)  # one warning, one line
    assert same.in_sample is True and same.n_in_sample == 64
    assert same.to_dict()["in_sample"] is True and bool(same.to_frame()["in_sample"].iloc[0])
    with pytest.warns(UserWarning, match="4 examples in-sample"):
        part = validate(found, model, torch.cat([held_out[:60], x[:4]]), n_controls=10)
    assert part.in_sample is True and part.n_in_sample == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        held = validate(found, model, held_out, n_controls=10)
        unknown = validate(plain, model, x, n_controls=10)
    assert held.in_sample is False and held.n_in_sample == 0 and held.to_dict()["in_sample"] is False
    assert unknown.in_sample is None and unknown.to_dict()["in_sample"] is None  # no fingerprint: unknown
    # the flag changes no number
    assert (same.effect, same.p_value, same.control_effects) == (unknown.effect, unknown.p_value,
                                                                 unknown.control_effects)
