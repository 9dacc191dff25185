"""Activation statistics and class selectivity against numpy and closed forms (issue #5).

The exact quantile search itself is tested in tests/test_quantiles.py; sharded passes in
tests/neurons/test_exemplars.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import TinyCNN, TinyMLP, images, vectors
from torch import nn

from seethrough.core import InputError
from seethrough.neurons import activation_stats


def test_bad_arguments_fail_before_any_forward() -> None:
    model = TinyMLP()
    calls: list[int] = []
    model.fc1.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(InputError, match="one-shot iterator"):
        activation_stats(model, iter([vectors()]), "act")
    with pytest.raises(InputError, match="labels has 3"):
        activation_stats(model, vectors(5), "act", labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(InputError, match="quantiles"):
        activation_stats(model, vectors(), "act", quantiles=(1.5,))
    with pytest.raises(InputError, match="in memory"):
        activation_stats(model, [vectors()], "act", n_shards=2)
    assert not calls


def test_activation_stats_match_numpy_and_count_sparsity() -> None:
    model, x = TinyMLP(), vectors(301, seed=3)
    with torch.no_grad():
        h = model.act(model.fc1(x)).double().numpy()
    qs = (0.0, 0.1, 0.5, 0.93, 1.0)
    s = activation_stats(model, x, "act", quantiles=qs, batch_size=16, eps=0.05)
    np.testing.assert_allclose(s.quantile_values.double().numpy(), np.quantile(h, qs, axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(s.mean.double().numpy(), h.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.std.double().numpy(), h.std(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(s.sparsity.double().numpy(), (h <= 0.05).mean(0), rtol=1e-6)
    assert s.count == 301 and list(s.to_frame().columns)[:4] == ["unit", "mean", "std", "sparsity"]
    assert s.plot().axes


def test_conv_units_are_reduced_over_positions() -> None:
    model, x = TinyCNN(), images(9)
    with torch.no_grad():
        maps = model.conv(x)
    mean = activation_stats(model, x, "conv", quantiles=(0.5,), reduce="mean")
    top = activation_stats(model, x, "conv", quantiles=(0.5,), reduce="max")
    torch.testing.assert_close(mean.quantile_values[0], maps.mean((2, 3)).median(0).values)
    torch.testing.assert_close(top.quantile_values[0], maps.amax((2, 3)).median(0).values)


class _ClassUnits(nn.Module):
    """Unit u outputs ``x[:, u]``: one-hot rows give hand-computed class means."""

    def __init__(self) -> None:
        super().__init__()
        self.units = nn.Identity()
        self.head = nn.Linear(3, 3)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(3) * 4.0)
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.units(x))


def test_class_selectivity_is_the_morcos_formula() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    x = torch.zeros(6, 3)
    x[labels == 0, 0] = 2.0  # unit 0: only class 0 → selectivity 1
    x[:, 1] = 1.0  # unit 1: every class alike → 0
    x[labels == 1, 2], x[labels == 2, 2] = 3.0, 1.0  # unit 2: means (0, 3, 1) → (3 - 0.5) / (3 + 0.5)
    s = activation_stats(_ClassUnits(), x, "units", labels=labels, batch_size=4)
    torch.testing.assert_close(s.selectivity, torch.tensor([1.0, 0.0, 2.5 / 3.5]))
    assert s.preferred_class.tolist() == [0, 0, 1]
    findings = s.to_findings(min_selectivity=0.6)
    assert [(f.units, f.target) for f in findings] == [((0,), 0), ((2,), 1)]


def test_selectivity_is_nan_for_units_with_a_negative_class_mean() -> None:
    # unit 0 copies the input (negative for class 0), unit 1 is its ReLU: only unit 1 has a selectivity
    model = nn.Sequential(nn.Identity())
    x = torch.tensor([[-2.0, 0.0], [-1.0, 0.0], [1.0, 1.0], [3.0, 3.0]])
    stats = activation_stats(model, x, "0", labels=torch.tensor([0, 0, 1, 1]))
    assert torch.isnan(stats.selectivity[0])
    assert float(stats.selectivity[1]) == pytest.approx((2.0 - 0.0) / (2.0 + 0.0))
    # fdr=1: four examples cannot make unit 1 significant (p = 0.18); the point here is the NaN unit
    assert [tuple(f.units) for f in stats.to_findings(min_selectivity=0.5, fdr=1.0)] == [(1,)]
