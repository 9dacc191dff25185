"""Oracles for activation_patching: a loop of seethrough.patch calls, one per piece; batching invariance."""

from __future__ import annotations

import pytest
import torch
from models import TinyMLP, TinyTransformer

import seethrough as st
from seethrough import InputError, Site
from seethrough.subnetworks import activation_patching


def _metric(out: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(out, -1)[:, 0]


def _loop(model, clean, corrupted, site: Site, metric) -> torch.Tensor:
    """The slow reference: one `st.patch` per unit, normalised by hand."""
    base, corr = metric(model(clean)).double().mean(), metric(model(corrupted)).double().mean()
    value = st.capture(model, corrupted, [Site(site.path)])[Site(site.path)]
    out = []
    for u in site.units:
        patched = metric(st.patch(model, clean, {Site(site.path, units=[u]): value[:, [u]]})).double().mean()
        out.append((patched - base) / (corr - base))
    return torch.stack(out).float()


def test_equals_a_loop_of_patch_calls() -> None:
    model = TinyMLP()
    gen = torch.Generator().manual_seed(1)
    clean, corrupted = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    site = Site("fc1", units=[0, 3, 5, 7])
    with torch.no_grad():
        res = activation_patching(model, clean, corrupted, ["act", site], _metric)
        expected = _loop(model, clean, corrupted, site, _metric)
    torch.testing.assert_close(res.effects[site], expected, rtol=1e-5, atol=1e-6)
    assert list(res.effects) == ["act", site]
    # patching the whole last hidden site carries the whole change
    torch.testing.assert_close(res.effects["act"], torch.tensor(1.0), rtol=0, atol=1e-6)
    assert res.effects["act"].ndim == 0


def test_batching_does_not_change_effects() -> None:
    model = TinyMLP()
    gen = torch.Generator().manual_seed(2)
    clean, corrupted = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    site = Site("fc1", units=list(range(8)))
    a = activation_patching(model, clean, corrupted, [site], _metric)
    b = activation_patching(model, clean, corrupted, [site], _metric, max_rows=5)  # one copy per pass
    torch.testing.assert_close(a.effects[site], b.effects[site], rtol=1e-6, atol=1e-7)


def test_positions_and_units_of_a_sequence_site() -> None:
    model = TinyTransformer().eval()
    gen = torch.Generator().manual_seed(3)
    clean = torch.randint(0, 10, (4, 5), generator=gen)
    corrupted = torch.randint(0, 10, (4, 5), generator=gen)

    def metric(out):
        return out[:, -1, 0]

    site = Site("blocks.0", positions=[0, -1], units=[1, 2, 6])
    res = activation_patching(model, clean, corrupted, [site, Site("blocks.0", positions=[1, 3])], metric)
    assert res.effects[site].shape == (2, 3)
    torch.set_grad_enabled(False)  # the reference needs no graph (restored below)
    base, corr = metric(model(clean)).double().mean(), metric(model(corrupted)).double().mean()
    value = st.capture(model, corrupted, ["blocks.0"])["blocks.0"]
    torch.set_grad_enabled(True)
    for i, p in enumerate([0, 4]):
        for j, u in enumerate([1, 2, 6]):
            piece = Site("blocks.0", positions=[p], units=[u])
            with torch.no_grad():
                got = metric(st.patch(model, clean, {piece: value[:, [p]][..., [u]]})).double().mean()
            assert float(res.effects[site][i, j]) == pytest.approx(float((got - base) / (corr - base)), abs=1e-5)


def test_refusals() -> None:
    model = TinyMLP()
    x = torch.randn(4, 4)
    with pytest.raises(InputError, match="same size"):
        activation_patching(model, x, torch.randn(3, 4), ["act"], _metric)
    with pytest.raises(InputError, match="clean-to-corrupted change"):
        activation_patching(model, x, x.clone(), ["act"], _metric)
    with pytest.raises(InputError, match="at least one site"):
        activation_patching(model, x, -x, [], _metric)
    with pytest.raises(st.SiteNotFoundError):
        activation_patching(model, x, -x, ["fc9"], _metric)
