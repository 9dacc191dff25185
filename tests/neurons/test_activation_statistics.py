"""Activation statistics and class selectivity against numpy and closed forms (issue #5).

The exact quantile search itself is tested in tests/test_quantiles.py; sharded passes in
tests/neurons/test_exemplars.py. Padding (issue #10, item 2): a padded batch gives the statistics
of each sentence's real positions run alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import TinyCNN, TinyMLP, TinyTransformer, images, vectors
from torch import nn

import seethrough as st
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


# -- padding never counts (issue #10, item 2) -----------------------------------------------------

LENGTHS = (5, 2, 4, 3, 5, 1, 4, 2, 3)


def _padded_and_alone(model: nn.Module, site: str) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """A right-padded batch (pad id 0, with its attention mask) and each sentence's values run alone, unpadded."""
    gen = torch.Generator().manual_seed(1)
    sentences = [torch.randint(1, 16, (n,), generator=gen) for n in LENGTHS]
    ids = torch.zeros(len(LENGTHS), max(LENGTHS), dtype=torch.long)
    mask = torch.zeros_like(ids)
    alone = []
    for i, s in enumerate(sentences):
        ids[i, :len(s)], mask[i, :len(s)] = s, 1
        inputs = {"input_ids": s[None], "attention_mask": torch.ones(1, len(s), dtype=torch.long)}
        alone.append(st.capture(model, inputs, [site])[site][0].detach().double())
    return {"input_ids": ids, "attention_mask": mask}, alone


def test_a_padded_batch_gives_the_statistics_of_the_real_positions() -> None:
    model, site = TinyTransformer(), "blocks.0.mlp.1"
    padded, alone = _padded_and_alone(model, site)
    qs = (0.0, 0.1, 0.5, 0.9, 1.0)
    tokens_alone = torch.cat(alone).numpy()  # every real position of every sentence, run alone
    per_sentence = {"mean": torch.stack([v.mean(0) for v in alone]).numpy(),
                    "max": torch.stack([v.amax(0) for v in alone]).numpy(),
                    "none": tokens_alone}
    for reduce, h in per_sentence.items():
        for kwargs in ({}, {"batch_size": 2}, {"batch_size": 4, "n_shards": 3},
                       {"mask": padded["attention_mask"].bool()}):
            s = activation_stats(model, padded, site, quantiles=qs, eps=0.05, reduce=reduce, **kwargs)  # type: ignore[arg-type]
            assert s.count == len(h), (reduce, kwargs)
            # padding changes the attention's float32 sums slightly: 1e-5 absolute covers it
            np.testing.assert_allclose(s.quantile_values.double().numpy(), np.quantile(h, qs, axis=0), atol=1e-5)
            np.testing.assert_allclose(s.mean.double().numpy(), h.mean(0), atol=1e-5)
            np.testing.assert_allclose(s.std.double().numpy(), h.std(0), atol=1e-5)
            np.testing.assert_allclose(s.sparsity.double().numpy(), (h <= 0.05).mean(0))
    unmasked = activation_stats(model, padded, site, reduce="none", mask=False)
    assert unmasked.count == padded["input_ids"].numel() and not torch.allclose(
        unmasked.mean.double(), torch.from_numpy(tokens_alone.mean(0)), atol=1e-3)


def test_class_means_over_a_padded_batch_and_examples_without_positions() -> None:
    model, site = TinyTransformer(), "blocks.1"
    padded, alone = _padded_and_alone(model, site)
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1, 0])
    s = activation_stats(model, padded, site, labels=labels, batch_size=4)
    means = torch.stack([v.mean(0) for v in alone])
    expected = torch.stack([means[labels == c].mean(0) for c in (0, 1)]).float()
    torch.testing.assert_close(s.class_means, expected, rtol=0.0, atol=1e-5)  # padding: float32 sums, as above
    # an example whose every position is masked is left out of every statistic, labels still align
    mask = padded["attention_mask"].clone()
    mask[2] = 0
    dropped = activation_stats(model, padded, site, labels=labels, mask=mask)
    keep = torch.arange(9) != 2
    assert dropped.count == 8
    torch.testing.assert_close(dropped.mean, means[keep].mean(0).float(), rtol=0.0, atol=1e-5)
    torch.testing.assert_close(dropped.class_means[0], means[keep & (labels == 0)].mean(0).float(), rtol=0.0,
                               atol=1e-5)
    with pytest.raises(InputError, match="reduce='none'"):
        activation_stats(model, padded, site, labels=labels, reduce="none")
    with pytest.raises(InputError, match="no position"):
        activation_stats(model, padded, site, mask=torch.zeros(9, 5))
