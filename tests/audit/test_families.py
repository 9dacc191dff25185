"""Blend-trigger search, early stopping and restarts, the AUROC of ranking metrics, internal evidence
and the designed attack (issue #4)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from seethrough.audit import design_attack, neural_cleanse, reverse_engineer_trigger, trigger_units
from seethrough.audit.families import Parametrisation, parametrisation
from seethrough.bench.games import outranks, pattern_correlation
from seethrough.bench.zoo import trojaned_classifier
from seethrough.bench.zoo.data import digits16
from seethrough.core import InputError
from seethrough.evidence import Trigger


@pytest.mark.parametrize("seed", range(5))
def test_outranks_mean_is_scikit_learns_auroc_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pos, neg = rng.integers(0, 5, 7).astype(float).tolist(), rng.integers(0, 4, 9).astype(float).tolist()
    expected = roc_auc_score([1] * len(pos) + [0] * len(neg), pos + neg)
    assert np.mean(outranks(pos, neg)) == pytest.approx(expected, abs=1e-12)
    assert outranks(pos, []) == []


@pytest.fixture(scope="module")
def clean_images() -> torch.Tensor:
    return digits16("test")[0][:200]


def test_blend_scan_finds_the_planted_blend_and_its_pattern(clean_images: torch.Tensor) -> None:
    model, meta = trojaned_classifier("mlp", "blend", 13)
    result = neural_cleanse(model, clean_images, n_classes=10, steps=200, family="blend", seed=0)
    planted = meta["trigger"]
    norms = sorted(result.norms.tolist())
    assert result.suspect == planted["target"] and norms[1] / norms[0] >= 2.0
    found = result.triggers[result.suspect].trigger
    assert found.family == "blend" and bool((found.mask == found.mask[0, 0]).all())  # one amplitude
    assert float(found.mask[0, 0]) < 0.2  # planted at 0.1; a clean class needs ~0.2-0.45
    assert pattern_correlation(found.pattern, torch.tensor(planted["pattern"])) > 0.2


def test_blend_scan_of_a_clean_model_shows_no_gap(clean_images: torch.Tensor) -> None:
    model, _ = trojaned_classifier("mlp", "none", 13)
    norms = sorted(neural_cleanse(model, clean_images, n_classes=10, steps=200, family="blend").norms.tolist())
    assert norms[1] / norms[0] < 2.0


def test_early_stopping_and_restarts(clean_images: torch.Tensor) -> None:
    model, meta = trojaned_classifier("mlp", "patch", 13)
    target = meta["trigger"]["target"]
    full = reverse_engineer_trigger(model, clean_images, target, steps=120, patience=None, seed=3)
    early = reverse_engineer_trigger(model, clean_images, target, steps=120, patience=5, seed=3)
    assert full.steps_run == 120 and early.steps_run < 120
    runs = [reverse_engineer_trigger(model, clean_images, target, steps=60, patience=None, seed=3 + 7919 * r)
            for r in range(2)]
    best = reverse_engineer_trigger(model, clean_images, target, steps=60, patience=None, restarts=2, seed=3)
    assert best.mask_l1 == min(r.mask_l1 for r in runs if r.attack_success >= 0.95)
    with pytest.raises(InputError, match="restarts"):
        reverse_engineer_trigger(model, clean_images, target, restarts=0)
    with pytest.raises(InputError, match="family"):
        reverse_engineer_trigger(model, clean_images, target, family="sparkle")


def test_planted_trigger_units_validate_and_drive_a_designed_attack(clean_images: torch.Tensor) -> None:
    model, meta = trojaned_classifier("mlp", "patch", 13)
    planted = Trigger.from_dict(meta["trigger"])
    held = digits16("test")[0][200:]
    units = trigger_units(model, held, planted, n_controls=30)
    assert units.site.path == "head" and units.validation.validated and len(units.units) == 8
    attack = design_attack(model, clean_images, held, units.site, units.units, planted, n_controls=30)
    assert attack.beats_controls and attack.attack_success > 0.5 > max(attack.control_success)
    # the oracle for "designed from the units": driving random units instead does far worse
    others = [u for u in range(32) if u not in units.units][:8]
    control = design_attack(model, clean_images, held, units.site, others, planted, n_controls=5)
    assert control.attack_success < attack.attack_success


# issue #11: trigger families as parametrisations of one search engine
@pytest.mark.parametrize("family, mask_shape", [("patch", (5, 6)), ("blend", ())])
def test_parametrisation_draws_neural_cleanses_start_and_builds_the_family(family: str, mask_shape: tuple) -> None:
    param = parametrisation(family)
    assert isinstance(param, Parametrisation) and param.family == family
    mask_logit, pattern_logit = param.init((2, 5, 6), torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)  # the oracle: the draws Neural Cleanse's search always made
    torch.testing.assert_close(mask_logit, torch.randn(mask_shape, generator=gen) * 0.1 - 2.0, rtol=0, atol=0)
    torch.testing.assert_close(pattern_logit, torch.randn(2, 5, 6, generator=gen) * 0.1, rtol=0, atol=0)
    low, high = torch.tensor([[[0.0]], [[10.0]]]), torch.tensor([[[1.0]], [[20.0]]])
    trigger = param.trigger([mask_logit, pattern_logit], 4, (low, high))
    assert trigger.family == family and trigger.target == 4 and trigger.mask.shape == (5, 6)
    assert bool((trigger.pattern[1] >= 10).all()) and bool((trigger.pattern[1] <= 20).all())
    assert float(param.size(trigger)) == pytest.approx(float(torch.sigmoid(mask_logit).expand(5, 6).sum()))


def test_parametrisation_refuses_unknown_families_and_finds_warp_when_present() -> None:
    with pytest.raises(InputError, match="sparkle"):
        parametrisation("sparkle")
    if importlib.util.find_spec("seethrough.audit.warp") is None:
        with pytest.raises(InputError, match="warp"):
            parametrisation("warp")
    else:
        assert parametrisation("warp").family == "warp"
