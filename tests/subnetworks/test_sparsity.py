"""Sparsity (issue #12 item 1): closed forms for the hard-concrete gates, the top-k projection and the L1 step."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from seethrough.core import InputError, InputTypeError
from seethrough.subnetworks import (
    SPARSITY_METHODS,
    SparsityReport,
    expected_l0,
    hard_concrete_sample,
    sparsity_report,
    train_with_sparsity,
)


def _task(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    return x, ((x[:, 0] + x[:, 1]) > 0).long()


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_expected_l0_matches_monte_carlo_of_the_gates() -> None:
    log_alpha = torch.tensor([-4.0, -1.0, 0.0, 0.5, 3.0], dtype=torch.float64)
    draws = hard_concrete_sample(log_alpha, n_samples=200_000, seed=3)
    empirical = (draws > 0).double().mean(0)
    # Monte-Carlo standard error sqrt(p (1 - p) / n) ≤ 0.0012; 0.005 is four of them.
    torch.testing.assert_close(empirical, expected_l0(log_alpha), atol=5e-3, rtol=0)
    assert bool((draws >= 0).all() and (draws <= 1).all())
    # Closed form by hand: P(gate > 0) = sigmoid(log_alpha - beta * log(-gamma / zeta)) at log_alpha = 0.
    assert math.isclose(float(expected_l0(torch.tensor(0.0))),
                        1 / (1 + math.exp((2 / 3) * math.log(0.1 / 1.1))), rel_tol=1e-6)


def test_hard_concrete_gates_reach_exact_zero_and_one() -> None:
    draws = hard_concrete_sample(torch.tensor([-6.0, 6.0]), n_samples=2000, seed=0)
    assert float((draws[:, 0] == 0).float().mean()) > 0.9 and float((draws[:, 1] == 1).float().mean()) > 0.9


def test_topk_keeps_exactly_k_per_matrix_and_stays_accurate() -> None:
    x, y = _task()
    net = _net()
    before = copy.deepcopy(net.state_dict())
    sparse = train_with_sparsity(net, x, y, method="topk", density=0.2, n_steps=200, lr=2e-2)
    report = sparsity_report(sparse)
    assert report.numel == (96, 32)
    assert [n - z for n, z in zip(report.numel, report.zeros, strict=True)] == [math.ceil(0.2 * 96), math.ceil(0.2 * 32)]
    assert _accuracy(sparse, x, y) >= 0.9  # a sum of two inputs needs few weights
    for k, v in net.state_dict().items():  # the model passed in is untouched
        assert torch.equal(v, before[k])


def test_l1_first_step_is_the_closed_form_soft_threshold() -> None:
    # One Adam step from zero moments moves each weight by -lr * g / (|g| + eps) (bias-corrected m and v), then
    # the proximal L1 step shrinks it by lr * penalty towards 0, clipping at 0.
    x, y = _task(8)
    net = _net(1)
    lr, penalty = 0.05, 2.0
    w0 = net[0].weight.detach().clone()
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 8, (8,), generator=gen)
    probe = copy.deepcopy(net)
    nn.functional.cross_entropy(probe(x[rows]), y[rows]).backward()
    g = probe[0].weight.grad
    after_adam = w0 - lr * g / (g.abs() + 1e-8)
    expected = after_adam.sign() * (after_adam.abs() - lr * penalty).clamp_min(0)
    trained = train_with_sparsity(net, x, y, method="l1", penalty=penalty, n_steps=1, lr=lr, batch_size=8)
    torch.testing.assert_close(trained[0].weight.detach(), expected, atol=1e-6, rtol=1e-5)
    assert int((trained[0].weight == 0).sum()) > 0


def test_l1_and_l0_make_exact_zeros_that_grow_with_the_penalty() -> None:
    x, y = _task()
    for method, small, large in (("l1", 0.0, 0.2), ("l0", 0.0, 0.05)):
        weak = sparsity_report(train_with_sparsity(_net(), x, y, method=method, penalty=small, n_steps=200, lr=0.05))
        strong_model = train_with_sparsity(_net(), x, y, method=method, penalty=large, n_steps=200, lr=0.05)
        strong = sparsity_report(strong_model)
        assert strong.total_density < weak.total_density, method
        assert strong.total_density < 0.6, (method, strong.total_density)
        assert _accuracy(strong_model, x, y) >= 0.85, method


def test_l0_training_is_seed_deterministic_and_leaves_no_grad() -> None:
    x, y = _task()
    a = train_with_sparsity(_net(), x, y, method="l0", penalty=0.01, n_steps=50, seed=4)
    b = train_with_sparsity(_net(), x, y, method="l0", penalty=0.01, n_steps=50, seed=4)
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name  # seed-deterministic
        assert p.grad is None


def test_sparsity_report_counts_zeros_by_hand() -> None:
    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Conv1d(1, 2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]]))
        net[2].weight.zero_()
    report = sparsity_report(net)
    assert report.layers == ("0.weight", "2.weight")
    assert report.zeros == (3, 4) and report.numel == (6, 4)
    assert report.density == (0.5, 0.0) and report.nonzero == 3
    frame = report.to_frame()
    assert frame["density"].tolist() == [0.5, 0.0]
    assert isinstance(report, SparsityReport)


def test_bad_inputs_are_one_clear_error_before_training() -> None:
    x, y = _task(16)
    net = _net()
    with pytest.raises(InputError, match="method must be one of"):
        train_with_sparsity(net, x, y, method="l2")
    with pytest.raises(InputError, match="labels must be a 1-D integer"):
        train_with_sparsity(net, x, y.float(), method="l1")
    with pytest.raises(InputError, match="labels go up to 5"):
        train_with_sparsity(net, x, y * 5, method="l1")
    with pytest.raises(InputError, match="density must be in"):
        train_with_sparsity(net, x, y, method="topk", density=0.0)
    with pytest.raises(InputError, match="no nn.Linear"):
        sparsity_report(nn.ReLU())
    with pytest.raises(InputTypeError):
        expected_l0(torch.tensor([1, 2]))  # integer log_alpha
    assert SPARSITY_METHODS == ("l1", "l0", "topk")
