"""unit_importance against a one-unit-per-forward reference (issue #3; extended in #5)."""

from __future__ import annotations

import pytest
import torch
from models import TinyCNN, TinyMLP, TinyTransformer, images, tokens, vectors

import seethrough as st
from seethrough import Site
from seethrough.core import InputError
from seethrough.neurons import unit_importance


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
    finding = imp.to_finding(3, target=0)
    assert finding.units == tuple(top) and finding.site == Site("act")
    assert list(imp.to_frame().columns) == ["unit", "importance"] and imp.plot().axes


@pytest.mark.parametrize("kwargs, message", [
    ({"site": Site("act", units=[1])}, "selects units"),
    ({"ablation": "resample"}, "ablation"),
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
