"""Top-k exemplars, receptive fields and activation statistics against independent oracles (issue #5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import TinyCNN, TinyMLP, images, vectors
from torch import nn

from seethrough import Site
from seethrough.core import InputError, SiteNotFoundError
from seethrough.evidence import validate
from seethrough.neurons.exemplars import _order_statistics, activation_stats, receptive_fields, top_exemplars


def test_top_exemplars_match_a_full_sort_and_do_not_depend_on_chunking() -> None:
    model, x = TinyCNN(), images(37, seed=1)
    with torch.no_grad():
        full = model.conv(x).flatten(2)  # (N, C, H*W): the slow oracle sees every value at once
    best, where = full.max(2)
    order = torch.sort(best, dim=0, descending=True, stable=True).indices[:5]
    for batch_size in (1, 4, 37):
        ex = top_exemplars(model, x, "conv", k=5, batch_size=batch_size)
        assert torch.equal(ex.indices, order)
        assert torch.equal(ex.values, best.gather(0, order))
        flat = where.gather(0, order)
        assert torch.equal(ex.positions, torch.stack([flat // 6, flat % 6], -1))


def test_ties_keep_the_earlier_index_and_iterables_of_batches_work() -> None:
    model = nn.Sequential(nn.Identity())
    x = torch.tensor([[1.0], [3.0], [3.0], [2.0], [3.0]])
    ex = top_exemplars(model, [x[:2], x[2:3], x[3:]], "0", k=3)  # a list of batches
    assert ex.indices[:, 0].tolist() == [1, 2, 4] and ex.positions is None
    gen = (b for b in (x[:2], x[2:]))  # a one-shot generator is fine for one pass
    assert top_exemplars(model, gen, "0", k=2).indices[:, 0].tolist() == [1, 2]


def test_receptive_fields_are_the_analytic_boxes_of_a_conv_pool_conv_stack() -> None:
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 2, 3, padding=1))
    h = 12
    units = torch.tensor([0, 1, 1, 0])
    positions = torch.tensor([[0, 0], [2, 3], [5, 5], [3, 0]])
    boxes = receptive_fields(model, torch.zeros(1, 1, h, h), "3", units, positions)
    for (i, j), box in zip(positions.tolist(), boxes.tolist(), strict=True):
        # conv2 at (i, j) reads pool cells i-1..i+1, each reading input rows 2p..2p+1, each reading
        # conv1 taps ±1: input rows 2(i-1)-1 .. 2(i+1)+1+1, clipped by the zero padding
        expect = [max(0, 2 * (i - 1) - 1), max(0, 2 * (j - 1) - 1), min(h, 2 * (i + 1) + 3), min(h, 2 * (j + 1) + 3)]
        assert box == expect


def test_crop_gives_each_exemplar_the_box_of_its_position() -> None:
    model, x = TinyCNN(), images(10, seed=2)
    ex = top_exemplars(model, x, "conv", k=3, crop=True)
    assert ex.boxes is not None and ex.positions is not None
    for r in range(3):
        for u in range(4):
            i, j = ex.positions[r, u].tolist()
            assert ex.boxes[r, u].tolist() == [max(0, i - 1), max(0, j - 1), min(6, i + 2), min(6, j + 2)]
    frame = ex.to_frame()
    assert len(frame) == 12 and {"index", "value", "pos0", "top"} <= set(frame.columns)
    assert ex.plot(x).axes and ex.plot().axes


def test_bad_arguments_fail_before_any_forward() -> None:
    model = TinyMLP()
    calls: list[int] = []
    model.fc1.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(InputError, match="k must be"):
        top_exemplars(model, vectors(), "act", k=0)
    with pytest.raises(SiteNotFoundError):
        top_exemplars(model, vectors(), "acts")
    with pytest.raises(InputError, match="selects units"):
        top_exemplars(model, vectors(), Site("act", units=[1]))
    with pytest.raises(InputError, match="crop"):
        top_exemplars(model, vectors(), "act", crop=True)
    with pytest.raises(InputError, match="one-shot iterator"):
        activation_stats(model, iter([vectors()]), "act")
    with pytest.raises(InputError, match="labels has 3"):
        activation_stats(model, vectors(5), "act", labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(InputError, match="quantiles"):
        activation_stats(model, vectors(), "act", quantiles=(1.5,))
    assert not calls


@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_order_statistics_are_exact(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    values = torch.cat([torch.randn(3, n, generator=gen, dtype=torch.float64),
                        torch.randint(0, 3, (1, n), generator=gen).double()])  # last unit: heavy ties
    ranks = torch.tensor([[0, n // 3, n // 2, n - 1]]).T.expand(4, 4)
    got = _order_statistics(lambda: iter(values.split(3, dim=1)), ranks.contiguous(), values.min(1).values,
                            values.max(1).values, n_bins=8)  # few bins: forces several refinement passes
    expect = values.sort(1).values.T[ranks[:, 0]]
    assert torch.equal(got, expect)


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


def test_exemplar_findings_name_the_majority_class_and_validate_by_ablation() -> None:
    model = _ClassUnits()
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (90,), generator=gen)
    x = torch.nn.functional.one_hot(labels, 3).float() + 0.05 * torch.rand(90, 3, generator=gen)
    ex = top_exemplars(model, x, "units", k=10)
    findings = ex.to_findings(labels)
    assert [(f.units, f.target) for f in findings] == [((0,), 0), ((1,), 1), ((2,), 2)]
    result = validate(findings[0], model, x[labels == 0], n_controls=2)
    assert result.effect > 1.0  # ablating the class-0 unit removes its logit of 4


def test_selectivity_is_nan_for_units_with_a_negative_class_mean() -> None:
    # unit 0 copies the input (negative for class 0), unit 1 is its ReLU: only unit 1 has a selectivity
    model = nn.Sequential(nn.Identity())
    x = torch.tensor([[-2.0, 0.0], [-1.0, 0.0], [1.0, 1.0], [3.0, 3.0]])
    stats = activation_stats(model, x, "0", labels=torch.tensor([0, 0, 1, 1]))
    assert torch.isnan(stats.selectivity[0])
    assert float(stats.selectivity[1]) == pytest.approx((2.0 - 0.0) / (2.0 + 0.0))
    assert [tuple(f.units) for f in stats.to_findings(min_selectivity=0.5)] == [(1,)]
