"""unit_importance against a one-unit-per-forward reference (issue #3; extended in #5)."""

from __future__ import annotations

import pytest
import torch
from models import TinyCNN, TinyMLP, TinyTransformer, images, tokens, vectors

import seethrough as st
from seethrough import Site
from seethrough.core import InputError
from seethrough.neurons import unit_importance
from seethrough.neurons.ablation import ablate
from seethrough.neurons.steering import steer


def reference(model, x, site: Site, metric, n_units: int, mean: torch.Tensor | None = None) -> torch.Tensor:
    """The slow oracle: one patched forward per unit."""
    clean = metric(model(**x) if isinstance(x, dict) else model(x)).double()
    out = []
    for u in range(n_units):
        fill = torch.zeros(1) if mean is None else mean[u].reshape(1)
        patched = st.patch(model, x, {Site(site.path, units=[u]): lambda v, s, f=fill: f.expand_as(v).to(v)})
        out.append((clean - metric(patched).double()).mean())
    return torch.stack(out).float()


def test_batched_equals_one_unit_per_forward_on_an_mlp() -> None:
    model, x = TinyMLP(), vectors(7)
    metric = lambda out: torch.log_softmax(out, -1)[:, 1]  # noqa: E731
    got = unit_importance(model, x, "act", metric, max_rows=14)  # 2 units per pass: exercises chunking
    torch.testing.assert_close(got.values, reference(model, x, Site("act"), metric, 8), rtol=1e-5, atol=1e-6)


def test_mean_ablation_uses_each_units_mean() -> None:
    model, x = TinyMLP(), vectors(6)
    metric = lambda out: out[:, 0]  # noqa: E731
    mean = model.act(model.fc1(x)).detach().mean(0)
    got = unit_importance(model, x, "act", metric, ablation="mean")
    torch.testing.assert_close(got.values, reference(model, x, Site("act"), metric, 8, mean), rtol=1e-5, atol=1e-6)


def test_conv_channels_and_keyword_inputs() -> None:
    cnn, x = TinyCNN(), images(4)
    metric = lambda out: out[:, 2]  # noqa: E731
    torch.testing.assert_close(unit_importance(cnn, x, "conv", metric).values,
                               reference(cnn, x, Site("conv"), metric, 4), rtol=1e-5, atol=1e-6)
    tr, t = TinyTransformer(), tokens()
    metric = lambda out: out[:, -1, 3]  # noqa: E731
    torch.testing.assert_close(unit_importance(tr, t, "blocks.0", metric).values,
                               reference(tr, t, Site("blocks.0"), metric, 8), rtol=1e-5, atol=1e-5)


def test_top_units_and_finding() -> None:
    model, x = TinyMLP(), vectors(7)
    imp = unit_importance(model, x, "act", lambda out: out[:, 0])
    top = imp.top(3)
    assert top == torch.argsort(imp.values, descending=True, stable=True)[:3].tolist()
    (finding,) = imp.to_findings(k=3, target=0)
    assert finding.units == tuple(top) and finding.site == Site("act")
    assert list(imp.to_frame().columns) == ["unit", "importance"] and imp.plot().axes


@pytest.mark.parametrize("kwargs, message", [
    ({"site": Site("act", units=[1])}, "selects units"),
    ({"ablation": "shuffle"}, "ablation"),
    ({"ablation": "resample", "n_samples": 0}, "n_samples"),
    ({"metric": lambda out: out}, "one score per example"),
])
def test_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"site": "act", "metric": lambda out: out[:, 0]} | kwargs
    with pytest.raises((InputError, TypeError), match=message):
        unit_importance(TinyMLP(), vectors(), **args)


def test_mean_ablation_over_a_reference_set() -> None:
    model, x, ref = TinyMLP(), vectors(5, seed=1), vectors(40, seed=2)
    metric = lambda out: out[:, 1]  # noqa: E731
    mean = model.act(model.fc1(ref)).detach().mean(0)
    got = unit_importance(model, x, "act", metric, ablation="mean", reference=ref)
    torch.testing.assert_close(got.values, reference(model, x, Site("act"), metric, 8, mean), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="reference"):
        unit_importance(model, x, "act", metric, ablation="mean", reference=torch.zeros(3, 4)[:, None])


def test_resample_ablation_equals_a_one_unit_per_forward_loop_over_the_same_draws() -> None:
    model, x, ref = TinyMLP(), vectors(6, seed=1), vectors(9, seed=2)
    metric = lambda out: torch.log_softmax(out, -1)[:, 2]  # noqa: E731
    got = unit_importance(model, x, "act", metric, ablation="resample", reference=ref, n_samples=3, seed=7,
                          max_rows=18)  # 3 units per pass: exercises chunking across draws
    ref_act = model.act(model.fc1(ref)).detach()
    gen = torch.Generator().manual_seed(7)
    draws = [torch.randint(0, 9, (6,), generator=gen) for _ in range(3)]  # the documented draw order
    clean = metric(model(x)).double()
    slow = torch.zeros(8, dtype=torch.float64)
    for idx in draws:
        for u in range(8):
            patched = st.patch(model, x, {Site("act", units=[u]): ref_act[idx][:, u:u + 1]})
            slow[u] += (clean - metric(patched).double()).mean() / 3
    torch.testing.assert_close(got.values, slow.float(), rtol=1e-5, atol=1e-6)
    assert got.ablation == "resample"
    again = unit_importance(model, x, "act", metric, ablation="resample", reference=ref, n_samples=3, seed=7)
    assert torch.equal(got.values, again.values)
    other = unit_importance(model, x, "act", metric, ablation="resample", reference=ref, n_samples=3, seed=8)
    assert not torch.equal(got.values, other.values)


def test_resample_from_a_single_reference_example_is_patching_in_its_values() -> None:
    model, x, one = TinyMLP(), vectors(5), vectors(1, seed=3)
    metric = lambda out: out[:, 0]  # noqa: E731
    value = model.act(model.fc1(one)).detach()[0]
    got = unit_importance(model, x, "act", metric, ablation="resample", reference=one, n_samples=2)
    torch.testing.assert_close(got.values, reference(model, x, Site("act"), metric, 8, value), rtol=1e-5, atol=1e-6)


def test_ablate_zero_mean_and_resample_against_a_hand_written_forward() -> None:
    model, x, ref = TinyMLP(), vectors(6), vectors(10, seed=4)
    with torch.no_grad():
        h = model.act(model.fc1(x))
        h_ref = model.act(model.fc1(ref))
        units = [1, 3, 6]
        zeroed = h.clone()
        zeroed[:, units] = 0
        torch.testing.assert_close(ablate(model, x, "act", units), model.fc2(zeroed))
        torch.testing.assert_close(ablate(model, x, "act"), model.fc2.bias.expand(6, 3))  # whole site: the bias
        meaned = h.clone()
        meaned[:, units] = h_ref.mean(0)[units]
        torch.testing.assert_close(ablate(model, x, "act", units, ablation="mean", reference=ref), model.fc2(meaned))
        idx = torch.randint(0, 10, (6,), generator=torch.Generator().manual_seed(5))
        resampled = h.clone()
        resampled[:, units] = h_ref[idx][:, units]
        torch.testing.assert_close(ablate(model, x, "act", units, ablation="resample", reference=ref, seed=5),
                                   model.fc2(resampled))


def test_ablate_selected_positions_of_a_transformer() -> None:
    tr, t = TinyTransformer(), tokens()
    site = Site("blocks.0", positions=[0, 2])

    def by_hand(v: torch.Tensor, s: Site) -> torch.Tensor:
        v = v.clone()
        v[..., 5] = 0
        return v

    torch.testing.assert_close(ablate(tr, t, site, [5]), st.patch(tr, t, {site: by_hand}))


@pytest.mark.parametrize("kwargs, message", [
    ({"units": [8]}, "distinct indices"),
    ({"units": [1, 1]}, "distinct indices"),
    ({"units": []}, "distinct indices"),
    ({"site": Site("act", units=[1])}, "selects units"),
    ({"ablation": "shuffle"}, "ablation"),
    ({"ablation": "mean", "reference": torch.full((3, 4), float("nan"))}, "NaN"),
])
def test_ablate_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"site": "act", "units": [0]} | kwargs
    with pytest.raises((InputError, TypeError, ValueError), match=message):
        ablate(TinyMLP(), vectors(), args.pop("site"), args.pop("units"), **args)


def test_steer_adds_the_direction_at_the_site() -> None:
    model, x = TinyMLP(), vectors(5)
    d = torch.linspace(-1, 1, 8)
    with torch.no_grad():
        expected = model.fc2(model.act(model.fc1(x)) + 0.7 * d)
        torch.testing.assert_close(steer(model, x, "act", d, alpha=0.7), expected)
        torch.testing.assert_close(steer(model, x, "act", d, alpha=0.0), model(x))
        # after the site the network is linear (fc2), so the output moves linearly in alpha
        step = steer(model, x, "act", d, alpha=1.0) - model(x)
        torch.testing.assert_close(steer(model, x, "act", d, alpha=3.0) - model(x), 3 * step, rtol=1e-5, atol=1e-5)


def test_steer_selected_positions_and_conv_channels() -> None:
    tr, t = TinyTransformer(), tokens()
    d = torch.arange(8.0)
    site = Site("blocks.1", positions=[1])

    def by_hand(v: torch.Tensor, s: Site) -> torch.Tensor:
        return v + 0.5 * d

    torch.testing.assert_close(steer(tr, t, site, d, alpha=0.5), st.patch(tr, t, {site: by_hand}))
    cnn, x = TinyCNN(), images()
    c = torch.tensor([1.0, 0.0, -1.0, 2.0])
    torch.testing.assert_close(steer(cnn, x, "conv", c, alpha=2.0),
                               st.patch(cnn, x, {"conv": lambda v, s: v + 2.0 * c.view(1, 4, 1, 1)}))


@pytest.mark.parametrize("direction, alpha, site, message", [
    (torch.ones(7), 1.0, "act", "8 units"),
    (torch.full((8,), float("nan")), 1.0, "act", "NaN"),
    (torch.ones(8), float("inf"), "act", "alpha"),
    (torch.ones(1), 1.0, Site("act", units=[1]), "selects units"),
])
def test_steer_refuses_bad_arguments(direction: torch.Tensor, alpha: float, site: Site | str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        steer(TinyMLP(), vectors(), site, direction, alpha=alpha)


def test_top_units_validated_on_their_own_examples_are_flagged_in_sample() -> None:
    """Issue #10, item 5: the top-5 units of unit_importance on a few examples, validated on the same
    examples, were reported as validated evidence; they are flagged in-sample, held-out examples are not."""
    model, discovery, held_out = TinyTransformer(), tokens(6, seed=0), tokens(6, seed=1)
    metric = lambda out: out[:, -1, 3]  # noqa: E731 - one score per sentence
    imp = unit_importance(model, discovery, "blocks.0", metric)
    (finding,) = imp.to_findings(k=5, target=None)
    assert finding.data_fingerprint == st.evidence.fingerprint(discovery) and finding.evidence["n_tested"] == 8
    with pytest.warns(UserWarning, match="validate on held-out data"):
        same = st.evidence.validate(finding, model, discovery, metric=metric, n_controls=10)
    held = st.evidence.validate(finding, model, held_out, metric=metric, n_controls=10)
    assert same.in_sample is True and same.n_in_sample == 6 and bool(same.to_frame()["in_sample"].iloc[0])
    assert held.in_sample is False and held.n_in_sample == 0
