"""Oracles for lesion_test: a loop of patch calls, planted modules, and the permutation p-value under a null."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from seethrough import InputError, patch
from seethrough.core import mean_ablation, zero_ablation
from seethrough.subnetworks import NOT_SPECIALISED, SPECIALISED, lesion_test


def _two_task_net(cross: float, seed: int = 0) -> nn.Sequential:
    """Inputs 0-3 → hidden 0-7 → output 0, inputs 4-7 → hidden 8-15 → output 1 (cross weights scaled by ``cross``)."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    with torch.no_grad():
        w1 = torch.rand(16, 8, generator=gen) + 0.5
        w1[:8, 4:] *= cross
        w1[8:, :4] *= cross
        w2 = torch.rand(2, 16, generator=gen) + 0.5
        w2[0, 8:] *= cross
        w2[1, :8] *= cross
        net[0].weight.copy_(w1)
        net[0].bias.zero_()
        net[2].weight.copy_(w2)
        net[2].bias.zero_()
    return net


METRICS = {"task a": lambda out: out[:, 0], "task b": lambda out: out[:, 1]}
HALVES = {"0": np.repeat([0, 1], 8)}


def _x(n: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 8, generator=torch.Generator().manual_seed(seed))


def test_damage_equals_a_loop_of_patch_calls() -> None:
    net, x = _two_task_net(0.3), _x()
    result = lesion_test(net, HALVES, x, METRICS, n_controls=10)
    intact = net(x).detach()
    for i, units in enumerate([list(range(8)), list(range(8, 16))]):
        lesioned = patch(net, x, {"0": zero_ablation(units)}).detach()
        torch.testing.assert_close(torch.as_tensor(result.damage[i]), (intact - lesioned).double().mean(0),
                                   atol=1e-6, rtol=1e-6)  # float32 forward, float64 means
    torch.testing.assert_close(torch.as_tensor(result.intact), intact.double().mean(0), atol=1e-6, rtol=1e-6)


def test_mean_ablation_equals_a_loop() -> None:
    net, x = _two_task_net(0.3), _x()
    result = lesion_test(net, HALVES, x, METRICS, ablation="mean", n_controls=5)
    means = net[0](x).detach().mean(0)
    lesioned = patch(net, x, {"0": mean_ablation(means, list(range(8)))}).detach()
    torch.testing.assert_close(torch.as_tensor(result.damage[0]), (net(x).detach() - lesioned).double().mean(0),
                               atol=1e-6, rtol=1e-6)


def test_planted_modules_dissociate_and_dense_does_not() -> None:
    planted = lesion_test(_two_task_net(0.0), HALVES, _x(), METRICS, n_controls=50)
    assert planted.verdict == SPECIALISED and planted.owner == (0, 1)
    assert planted.ratio > 10 and (planted.selectivity_p <= 1 / 51 + 1e-12).all()
    dense = lesion_test(_two_task_net(1.0), HALVES, _x(), METRICS, n_controls=50)
    assert dense.verdict == NOT_SPECIALISED and dense.ratio < 3


def test_controls_keep_the_layer_sizes() -> None:
    net, x = _two_task_net(0.2), _x()
    labels = {"0": np.array([0] * 3 + [1] * 13)}
    result = lesion_test(net, labels, x, METRICS, n_controls=200, seed=3)
    assert result.sizes == (3, 13)
    # a control of 3 random units can never hurt as much as all 13 of module 1 together
    assert (result.control_damage[0].sum(1) < result.damage[1].sum()).all()


def test_p_value_is_uniform_under_the_null() -> None:
    """A module drawn exactly as the controls are is exchangeable with them: its p-value is uniform."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 12), nn.ReLU(), nn.Linear(12, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.randn(32, 4, generator=gen)
    rng = np.random.default_rng(0)
    p_values = []
    for seed in range(150):
        labels = np.full(12, -1)
        labels[rng.permutation(12)[:4]] = 0
        labels[labels < 0] = 1
        r = lesion_test(net, {"0": labels}, x, METRICS, n_controls=19, seed=seed)
        p_values.append(r.p_values[0, 0])
    p = np.array(p_values)
    assert set(np.round(p * 20).astype(int)) <= set(range(1, 21))  # p ∈ {1/20, ..., 20/20}
    # uniform on {1/20 .. 1}: mean 0.525, P(p ≤ 0.25) = 0.25; 150 draws: over 3 standard errors of slack
    assert abs(p.mean() - 0.525) < 0.08 and abs((p <= 0.25).mean() - 0.25) < 0.11


def test_bad_labels_are_refused() -> None:
    net, x = _two_task_net(0.3), _x()
    with pytest.raises(InputError, match="entries"):
        lesion_test(net, {"0": np.zeros(5, dtype=int)}, x, METRICS)
    with pytest.raises(KeyError):
        lesion_test(net, {"nope": np.zeros(16, dtype=int)}, x, METRICS)
    with pytest.raises(InputError, match="module id"):
        lesion_test(net, {"0": np.full(16, -1)}, x, METRICS)
    with pytest.raises(InputError, match="ablation"):
        lesion_test(net, HALVES, x, METRICS, ablation="resample")
