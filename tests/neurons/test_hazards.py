"""Neuron hazards: frivolous units and polysemanticity against weight surgery and closed forms (issue #5)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from models import TinyCNN, TinyMLP, TinyTransformer, images, tokens, vectors
from torch import nn

from seethrough import Site
from seethrough.core import InputError, InputTypeError, capture, patch
from seethrough.core.interventions import zero_ablation
from seethrough.evidence import validate
from seethrough.neurons.frivolous import FrivolousUnits, frivolous_units
from seethrough.neurons.polysemantic import Polysemanticity, polysemanticity


def hazard_mlp() -> TinyMLP:
    """TinyMLP (4 → 8 → 3) with unit 0 dead, unit 1 a copy of unit 2 (outgoing weight split 0.4 : 0.6) and
    unit 3 idle (zero outgoing weights); unit 2's outgoing weights are made large so the pair matters."""
    model = TinyMLP(seed=3)
    with torch.no_grad():
        model.fc1.weight[0] = 0.0
        model.fc1.bias[0] = -1.0
        model.fc1.weight[2] = torch.tensor([1.0, -0.5, 0.8, 0.3])
        model.fc1.bias[2] = 0.1
        model.fc1.weight[1] = model.fc1.weight[2]
        model.fc1.bias[1] = model.fc1.bias[2]
        out = model.fc2.weight[:, 2] * 4.0
        model.fc2.weight[:, 1] = 0.4 * out
        model.fc2.weight[:, 2] = 0.6 * out
        model.fc2.weight[:, 3] = 0.0
    return model


def surgery_damage(model: TinyMLP, x: torch.Tensor, units: list[int], metric=None) -> float:
    """Relative RMS change after zeroing ``units``' outgoing weights in a copy (no hooks): the oracle."""
    cut = copy.deepcopy(model)
    with torch.no_grad():
        cut.fc2.weight[:, units] = 0.0
        score = (lambda out: out) if metric is None else (lambda out: metric(out)[:, None])
        clean, after = score(model(x)).double(), score(cut(x)).double()
    spread = (clean - clean.mean(0)).pow(2).sum(1).mean().sqrt()
    return float((after - clean).pow(2).sum(1).mean().sqrt() / spread)


def test_planted_hazards_are_found_and_damages_match_weight_surgery() -> None:
    model, x = hazard_mlp(), vectors(64, seed=1)
    report = frivolous_units(model, x, "act", tolerance=0.02, max_rows=3 * 64)  # 3 edits per pass: chunking
    acts = model.act(model.fc1(x)).detach()
    assert report.dead.tolist() == (acts.abs().amax(0) <= 1e-6).tolist()
    assert report.dead.tolist()[:4] == [True, False, False, False]
    torch.testing.assert_close(report.active_fraction, (acts > 1e-6).float().mean(0))
    expected = torch.tensor([surgery_damage(model, x, [u]) for u in range(8)])
    torch.testing.assert_close(report.damage, expected, rtol=1e-5, atol=1e-6)
    assert report.redundant_pairs() == [(1, 2)]
    assert int(report.partner[1]) == 2 and int(report.partner[2]) == 1
    assert float(report.substitution_damage[1]) < 1e-5  # an exact copy stands in for the other exactly
    torch.testing.assert_close(float(report.pair_damage[1]), surgery_damage(model, x, [1, 2]), rtol=1e-5, atol=1e-6)
    assert report.prunable.tolist() == [d <= 0.02 for d in expected.tolist()]
    assert report.prunable[0] and report.prunable[3] and not report.prunable[1]


def test_a_metric_measures_damage_on_its_scores() -> None:
    model, x = hazard_mlp(), vectors(40, seed=2)
    metric = lambda out: out[:, 1]  # noqa: E731
    report = frivolous_units(model, x, "act", metric=metric)
    expected = torch.tensor([surgery_damage(model, x, [u], metric) for u in range(8)])
    torch.testing.assert_close(report.damage, expected, rtol=1e-5, atol=1e-6)


def test_conv_channels_are_units() -> None:
    cnn, x = TinyCNN(), images(6)
    with torch.no_grad():
        cnn.conv.weight[2] = 0.0
        cnn.conv.bias[2] = -1.0  # channel 2 never fires
    report = frivolous_units(cnn, x, "act")
    assert report.dead.tolist() == [False, False, True, False]
    cut = copy.deepcopy(cnn)
    with torch.no_grad():
        cut.head.weight[:, 0] = 0.0
        clean, after = cnn(x).double(), cut(x).double()
    spread = (clean - clean.mean(0)).pow(2).sum(1).mean().sqrt()
    torch.testing.assert_close(float(report.damage[0]), float((after - clean).pow(2).sum(1).mean().sqrt() / spread),
                               rtol=1e-5, atol=1e-6)


def test_report_frame_plot_and_findings_validate_as_claimed() -> None:
    model, x = hazard_mlp(), vectors(64, seed=1)
    report = frivolous_units(model, x, "act", tolerance=0.02)
    frame = report.to_frame()
    assert len(frame) == 8 and {"dead", "redundant", "prunable", "damage", "partner"} <= set(frame.columns)
    assert report.plot().axes
    pair, prunable = report.to_findings()
    assert pair.units == (1, 2) and pair.evidence["expect"] == "validated"
    assert set(prunable.units) == set(torch.nonzero(report.prunable).flatten().tolist())
    metric = lambda out: out @ model.fc2.weight[:, 2].detach()  # noqa: E731 - the pair's own output direction
    with pytest.warns(UserWarning, match="held-out"):  # the findings remember their data: in-sample
        assert validate(pair, model, x, metric=metric, n_controls=20).validated
    with pytest.warns(UserWarning, match="held-out"):
        assert not validate(prunable, model, x, metric=metric, n_controls=20).validated
    held_out = vectors(64, seed=2)  # issue #10: and the claims hold on held-out data
    held = validate(pair, model, held_out, metric=metric, n_controls=20)
    assert held.validated and held.in_sample is False
    assert not validate(prunable, model, held_out, metric=metric, n_controls=20).validated


@pytest.mark.parametrize("kwargs, message", [
    ({"corr": 1.5}, "corr"),
    ({"tolerance": -0.1}, "tolerance"),
    ({"dead_eps": float("nan")}, "dead_eps"),
    ({"max_rows": 0}, "max_rows"),
    ({"site": Site("act", units=[1])}, "selects"),
    ({"metric": lambda out: out}, "one score per example"),
])
def test_frivolous_units_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"site": "act"} | kwargs
    with pytest.raises(InputError, match=message):
        frivolous_units(TinyMLP(), vectors(), args.pop("site"), **args)


def test_constant_output_is_refused() -> None:
    with pytest.raises(InputError, match="same for every example"):
        frivolous_units(TinyMLP(), torch.zeros(4, 4), "act")


# -- polysemanticity ----------------------------------------------------------------------------

def linear_units() -> nn.Module:
    """Two linear units over 4 features: unit 0 reads feature 0; unit 1 features 1, 2 and 3 (weights 1, 1, 2)."""
    model = nn.Sequential(nn.Linear(4, 2, bias=True))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.5, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 2.0]]))
        model[0].bias.copy_(torch.tensor([0.3, -0.2]))
    return model


def test_known_features_recover_the_weights_and_the_participation_ratio() -> None:
    model, x = linear_units(), vectors(200, seed=5).abs()
    poly = polysemanticity(model, x, "0", x, threshold=0.4)
    torch.testing.assert_close(poly.responses, model[0].weight.detach(), rtol=1e-4, atol=1e-4)
    energy = (model[0].weight.detach().double() * x.double().std(0)).pow(2)
    shares = energy / energy.sum(1, keepdim=True)
    torch.testing.assert_close(poly.shares, shares.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(poly.effective, (1 / shares.pow(2).sum(1)).float(), rtol=1e-4, atol=1e-5)
    magnitude = model[0].weight.detach().abs() * x.std(0)
    assert poly.count.tolist() == (magnitude >= 0.4 * magnitude.amax(1, keepdim=True)).sum(1).tolist()
    assert poly.effective[0] == pytest.approx(1.0, abs=1e-4) and 2.0 < poly.effective[1] < 3.0
    assert poly.top(1) == [1] and not poly.discovered


def test_exclusive_features_give_the_tuning_curve() -> None:
    model, x = TinyMLP(), vectors(60, seed=6)
    labels = torch.arange(60) % 3
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    poly = polysemanticity(model, x, "act", one_hot)
    acts = model.act(model.fc1(x)).detach()
    means = torch.stack([acts[labels == k].mean(0) for k in range(3)], 1)  # (units, classes)
    torch.testing.assert_close(poly.responses, means - means.amin(1, keepdim=True), rtol=1e-4, atol=1e-5)


def test_conv_units_are_averaged_over_positions() -> None:
    cnn, x = TinyCNN(), images(30, seed=2)
    feats = torch.rand(30, 3, generator=torch.Generator().manual_seed(0))
    poly = polysemanticity(cnn, x, "conv", feats)
    acts = cnn.conv(x).detach().mean(dim=(2, 3)).double().numpy()
    f = feats.double().numpy()
    design = np.c_[np.ones(30), f]
    coef = np.linalg.lstsq(design, acts, rcond=None)[0][1:].T  # an independent least-squares fit with intercept
    np.testing.assert_allclose(poly.responses.numpy(), coef, rtol=1e-3, atol=1e-4)


def test_discovered_features_are_seeded_clusters() -> None:
    model, x = TinyMLP(), vectors(40, seed=7)
    a = polysemanticity(model, x, "act", n_clusters=4, seed=1)
    b = polysemanticity(model, x, "act", n_clusters=4, seed=1)
    assert a.discovered and a.responses.shape[0] == 8 and a.responses.shape[1] <= 4
    assert torch.equal(a.effective, b.effective)
    assert bool((a.effective <= a.responses.shape[1] + 1e-4).all())
    assert list(a.to_frame().columns) == ["unit", "effective", "count"] and a.plot().axes
    (finding,) = a.to_findings(k=2)
    assert finding.units == tuple(a.top(2)) and isinstance(a, Polysemanticity)


@pytest.mark.parametrize("kwargs, message", [
    ({"features": torch.zeros(3, 2)}, "one row per example"),
    ({"features": torch.full((5, 2), float("nan"))}, "NaN"),
    ({"threshold": 0.0}, "threshold"),
    ({"n_clusters": 1}, "n_clusters"),
    ({"site": Site("act", units=[0])}, "selects"),
])
def test_polysemanticity_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"site": "act"} | kwargs
    with pytest.raises(InputError, match=message):
        polysemanticity(TinyMLP(), vectors(), args.pop("site"), args.pop("features", None), **args)


def test_result_types() -> None:
    assert isinstance(frivolous_units(hazard_mlp(), vectors(16), "act"), FrivolousUnits)


# -- padding (issue #10, item 2): a padded batch gives what the real positions of each sentence give alone --

PAD_SITE = "blocks.0.mlp.1"  # TinyTransformer's GELU: (batch, seq, 16)
LENGTHS = (5, 2, 4, 3, 5, 1, 4, 2, 3)


def _sentences() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(1, 16, (n,), generator=gen) for n in LENGTHS]


def _padded(sentences: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Right-padded token ids (pad id 0) with their attention mask, as a tokenizer gives them."""
    ids = torch.zeros(len(sentences), max(map(len, sentences)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(sentences):
        ids[i, :len(s)], mask[i, :len(s)] = s, 1
    return {"input_ids": ids, "attention_mask": mask}


def _alone(s: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"input_ids": s[None], "attention_mask": torch.ones(1, len(s), dtype=torch.long)}


def _alone_values(model: nn.Module, sentences: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each sentence run by itself, unpadded: ``(length, n_units)`` float64 values at PAD_SITE."""
    return [capture(model, _alone(s), [PAD_SITE])[PAD_SITE][0].detach().double() for s in sentences]


def _alone_damage(model: nn.Module, sentences: list[torch.Tensor], edit, metric=None) -> float:
    """The damage of ``edit`` by its definition, each sentence run alone: without a metric every real output
    element counts, centred on its mean over the sentences that reach that position (the slow reference)."""
    with torch.no_grad():
        clean = [model(**_alone(s))[0].double() for s in sentences]  # (length, vocab) each
        after = [patch(model, _alone(s), {PAD_SITE: edit})[0].double() for s in sentences]
    if metric is not None:
        c = torch.stack([metric(o[None])[0] for o in clean])
        a = torch.stack([metric(o[None])[0] for o in after])
        return float((a - c).pow(2).mean().sqrt() / (c - c.mean()).pow(2).mean().sqrt())
    longest = max(map(len, clean))
    centre = torch.stack([torch.stack([o[t] for o in clean if len(o) > t]).mean(0) for t in range(longest)])
    spread = torch.stack([(o - centre[:len(o)]).pow(2).sum() for o in clean]).mean().sqrt()
    change = torch.stack([(a - c).pow(2).sum() for a, c in zip(after, clean, strict=True)]).mean().sqrt()
    return float(change / spread)


def _affine_fit(rows: torch.Tensor, src: int, dst: int):
    """Edit replacing unit ``dst`` by its least-squares fit from ``src`` (numpy's polyfit on ``rows``)."""
    scale, shift = np.polyfit(rows[:, src].numpy(), rows[:, dst].numpy(), 1)

    def edit(value: torch.Tensor, site: Site) -> torch.Tensor:
        value = value.clone()
        value[..., dst] = float(scale) * value[..., src] + float(shift)
        return value

    return edit


def test_frivolous_units_of_a_padded_batch_are_those_of_the_real_positions() -> None:
    model, sentences = TinyTransformer(), _sentences()
    padded = _padded(sentences)
    rows = torch.cat(_alone_values(model, sentences))  # every real position of every sentence, run alone
    eps = 0.05
    reports = [frivolous_units(model, padded, PAD_SITE, dead_eps=eps, corr=0.0, max_rows=40, **kwargs)
               for kwargs in ({}, {"mask": padded["attention_mask"].bool()}, {"mask": padded["attention_mask"]})]
    report = reports[0]
    torch.testing.assert_close(report.max_abs.double(), rows.abs().amax(0), rtol=0, atol=1e-5)
    torch.testing.assert_close(report.active_fraction.double(), (rows.abs() > eps).double().mean(0), rtol=0,
                               atol=1e-6)  # float32 counts of 30 positions
    corr = torch.from_numpy(np.corrcoef(rows.T.numpy()))
    corr.fill_diagonal_(0.0)
    partner = corr.abs().argmax(1)
    assert report.partner.tolist() == partner.tolist()
    torch.testing.assert_close(report.partner_corr.double(), corr.gather(1, partner[:, None])[:, 0], rtol=0,
                               atol=1e-5)
    zero = torch.tensor([_alone_damage(model, sentences, zero_ablation([u])) for u in range(16)])
    torch.testing.assert_close(report.damage.double(), zero.double(), rtol=1e-4, atol=1e-5)
    for u in range(16):  # corr=0: every unit's pair is tested
        p = int(partner[u])
        sub = max(_alone_damage(model, sentences, _affine_fit(rows, p, u)),
                  _alone_damage(model, sentences, _affine_fit(rows, u, p)))
        if int(partner[p]) == u:  # a unit's pair damages are those of its own pair
            assert float(report.substitution_damage[u]) == pytest.approx(sub, rel=1e-4, abs=1e-5)
            assert float(report.pair_damage[u]) == pytest.approx(
                _alone_damage(model, sentences, zero_ablation([u, p])), rel=1e-4, abs=1e-5)
    for other in reports[1:]:  # an explicit mask (bool or 0/1) says the same as the attention mask
        for name in ("max_abs", "active_fraction", "damage", "partner", "partner_corr", "substitution_damage",
                     "pair_damage", "redundant", "prunable"):
            torch.testing.assert_close(getattr(other, name), getattr(report, name), equal_nan=True)
    unmasked = frivolous_units(model, padded, PAD_SITE, dead_eps=eps, corr=0.0, max_rows=40, mask=False)
    assert not torch.allclose(unmasked.active_fraction, report.active_fraction)  # pads were counted


def test_frivolous_damage_with_a_metric_over_a_padded_batch() -> None:
    model, sentences = TinyTransformer(), _sentences()
    metric = lambda out: out[:, 0, 3]  # noqa: E731  (position 0 is real in every right-padded row)
    report = frivolous_units(model, _padded(sentences), PAD_SITE, metric=metric)
    expected = torch.tensor([_alone_damage(model, sentences, zero_ablation([u]), metric) for u in range(16)])
    torch.testing.assert_close(report.damage.double(), expected.double(), rtol=1e-4, atol=1e-5)


def test_polysemanticity_of_a_padded_batch_averages_the_real_positions() -> None:
    model, sentences = TinyTransformer(), _sentences()
    padded = _padded(sentences)
    acts = torch.stack([v.mean(0) for v in _alone_values(model, sentences)])  # (9, 16) per-sentence means
    feats = torch.rand(9, 3, generator=torch.Generator().manual_seed(0)).double()
    design = np.c_[np.ones(9), feats.numpy()]
    coef = np.linalg.lstsq(design, acts.numpy(), rcond=None)[0][1:].T  # a least-squares fit with intercept
    for kwargs in ({}, {"mask": padded["attention_mask"].bool()}):
        poly = polysemanticity(model, padded, PAD_SITE, feats, **kwargs)
        np.testing.assert_allclose(poly.responses.double().numpy(), coef, rtol=1e-3, atol=1e-4)
    groups = torch.arange(9) % 3
    poly = polysemanticity(model, padded, PAD_SITE, torch.nn.functional.one_hot(groups).double())
    means = torch.stack([acts[groups == k].mean(0) for k in range(3)], 1)  # (units, groups): the tuning curve
    torch.testing.assert_close(poly.responses.double(), means - means.amin(1, keepdim=True), rtol=0, atol=1e-5)
    unmasked = polysemanticity(model, padded, PAD_SITE, feats, mask=False)
    assert not np.allclose(unmasked.responses.double().numpy(), coef, atol=1e-3)  # pads were averaged in
    # an example with no counted position is left out, with its row of features
    mask = padded["attention_mask"].clone()
    mask[4] = 0
    rest = [i for i in range(9) if i != 4]
    poly = polysemanticity(model, padded, PAD_SITE, feats, mask=mask)
    design = np.c_[np.ones(8), feats[rest].numpy()]
    coef = np.linalg.lstsq(design, acts[rest].numpy(), rcond=None)[0][1:].T
    np.testing.assert_allclose(poly.responses.double().numpy(), coef, rtol=1e-3, atol=1e-4)


def test_unpadded_inputs_take_the_unmasked_path_exactly() -> None:
    model, inputs = TinyTransformer(), tokens(6, 5, seed=2)
    feats = torch.rand(6, 2, generator=torch.Generator().manual_seed(3))
    for kwargs in ({}, {"mask": torch.ones(6, 5, dtype=torch.bool)}):
        a = frivolous_units(model, inputs, PAD_SITE, corr=0.5, **kwargs)
        b = frivolous_units(model, inputs, PAD_SITE, corr=0.5, mask=False)
        for name in ("max_abs", "active_fraction", "damage", "partner_corr", "substitution_damage", "pair_damage"):
            assert torch.equal(getattr(a, name).nan_to_num(-1.0), getattr(b, name).nan_to_num(-1.0)), name
        assert torch.equal(polysemanticity(model, inputs, PAD_SITE, feats, **kwargs).responses,
                           polysemanticity(model, inputs, PAD_SITE, feats, mask=False).responses)


@pytest.mark.parametrize("mask, error, message", [
    (True, InputTypeError, "mask must be"),
    (torch.ones(9, 4), InputError, "mask has shape"),
    (torch.full((9, 5), 2), InputError, "0/1"),
    (torch.zeros(9, 5), InputError, "leaves no position"),
])
def test_bad_masks_are_refused(mask, error, message) -> None:
    model, padded = TinyTransformer(), _padded(_sentences())
    with pytest.raises(error, match=message):
        frivolous_units(model, padded, PAD_SITE, mask=mask)
    with pytest.raises(error, match=message if message != "leaves no position" else "leaves 0 examples"):
        polysemanticity(model, padded, PAD_SITE, torch.rand(9, 2), mask=mask)
