"""FGSM, PGD, robust accuracy, adversarial training and the twin comparison (issue #14 item 4).

Oracles: the closed-form input gradient of a linear softmax classifier (FGSM's sign), the optimal
L∞ attack on a two-class linear model (PGD must reach ``x + ε · sign(w_other − w_true)``), the
ε-ball and bounds, robust accuracy at ε 0 equal to clean accuracy, and a hand bootstrap.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from seethrough.core import InputError
from seethrough.representations import (
    TwinComparison,
    adversarial_training,
    compare_twins,
    fgsm,
    pgd,
    robust_accuracy,
)


def _linear(seed: int = 0, n_classes: int = 3, d: int = 5) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d, n_classes)


def test_fgsm_steps_along_the_sign_of_the_closed_form_input_gradient() -> None:
    model = _linear()
    x = torch.rand(8, 5, generator=torch.Generator().manual_seed(1)) * 0.6 + 0.2  # far from the bounds
    y = torch.arange(8) % 3
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
        grad = (p - nn.functional.one_hot(y, 3).float()) @ model.weight  # ∂CE/∂x of a linear softmax model
    assert torch.allclose(fgsm(model, x, y, epsilon=0.05), x + 0.05 * grad.sign(), atol=1e-6)


def test_pgd_reaches_the_optimal_linf_attack_of_a_two_class_linear_model() -> None:
    model = _linear(n_classes=2, d=6)
    x = torch.full((4, 6), 0.5)
    y = torch.tensor([0, 1, 0, 1])
    w = model.weight.detach()
    best = x + 0.1 * torch.where(y[:, None] == 0, (w[1] - w[0]).sign(), (w[0] - w[1]).sign())
    assert torch.allclose(pgd(model, x, y, epsilon=0.1, n_steps=20, seed=3), best, atol=1e-6)


def test_pgd_stays_in_the_ball_and_the_bounds_and_beats_fgsm() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.rand(64, 10, generator=torch.Generator().manual_seed(2))
    y = model(x).argmax(1).detach()
    adv = pgd(model, x, y, epsilon=0.2, n_steps=20)
    assert (adv - x).abs().max() <= 0.2 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    ce = nn.functional.cross_entropy
    with torch.no_grad():
        assert ce(model(adv), y) >= ce(model(fgsm(model, x, y, epsilon=0.2)), y) - 1e-6 > ce(model(x), y)
    assert robust_accuracy(model, x, y, epsilon=0.0) == 1.0  # ε 0: the clean accuracy (labels are its answers)
    assert robust_accuracy(model, x, y, epsilon=0.2) < 1.0


def test_adversarial_training_returns_a_more_robust_copy_and_leaves_the_model_alone() -> None:
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (400,), generator=gen)
    # one strong narrow feature (margin 0.1: ε = 0.15 flips it) and five weak wide ones that survive ε
    x = torch.rand(400, 6, generator=gen) * 0.1 + 0.45
    x[:, 0] = 0.45 + 0.1 * y
    x[:, 1:] += (y[:, None] * 2 - 1) * 0.2 * torch.rand(400, 5, generator=gen)
    x = x.clamp(0, 1)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    standard = adversarial_training(model, x, y, epsilon=0.0, epochs=15, n_steps=3, lr=2e-2, seed=0)  # ε 0: plain
    robust = adversarial_training(model, x, y, epsilon=0.15, epochs=15, n_steps=3, lr=2e-2, seed=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert robust is not model and not robust.training and all(p.grad is None for p in robust.parameters())
    assert robust_accuracy(robust, x, y, epsilon=0.15) > robust_accuracy(standard, x, y, epsilon=0.15) + 0.2


def test_compare_twins_pairs_the_measurements_and_bootstraps_the_difference() -> None:
    a, b = nn.Linear(1, 1), nn.Linear(1, 1)
    values = {id(a): [0.2, 0.4, 0.1, 0.3], id(b): [0.5, 0.5, 0.6, 0.4]}
    result = compare_twins([(a, b)] * 4, lambda m, i: {"auroc": values[id(m)][i]}, n_boot=500, seed=0)
    diff = np.array([0.3, 0.1, 0.5, 0.1])
    assert isinstance(result, TwinComparison) and result.mean_difference["auroc"] == pytest.approx(diff.mean())
    picks = np.random.default_rng(0).integers(0, 4, (500, 4))  # the same resamples, by hand
    assert result.ci_low["auroc"] == pytest.approx(np.quantile(diff[picks].mean(1), 0.025))
    frame = result.to_frame()
    assert list(frame["measurement"]) == ["auroc"] and frame["n_cases"][0] == 4 and result.plot().axes
    with pytest.raises(InputError, match="same names"):
        compare_twins([(a, b)], lambda m, i: {"x": 1.0} if m is a else {"y": 1.0})


def test_bad_input_is_refused_in_one_line() -> None:
    model = _linear()
    x, y = torch.rand(4, 5), torch.zeros(4, dtype=torch.long)
    with pytest.raises(InputError, match="bounds"):
        fgsm(model, x + 2, y, epsilon=0.1)
    with pytest.raises(InputError, match="int64"):
        pgd(model, x, y.float(), epsilon=0.1)
    with pytest.raises(InputError, match="low < high"):
        pgd(model, x, y, epsilon=0.1, bounds=(1.0, 0.0))


def test_adversarial_training_seeds_dropout_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))
    x, y = torch.rand(64, 4), torch.randint(0, 2, (64,))
    state = torch.random.get_rng_state()
    a = adversarial_training(model, x, y, epsilon=0.05, epochs=2, n_steps=2, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(99)  # a different global state: the result must not depend on it
    b = adversarial_training(model, x, y, epsilon=0.05, epochs=2, n_steps=2, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    with pytest.raises(InputError, match="n_steps"):
        robust_accuracy(model, x, y, epsilon=0.1, n_steps=0)
