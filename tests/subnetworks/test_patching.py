"""Oracles for activation_patching: a loop of seethrough.patch calls, one per piece; batching invariance."""

from __future__ import annotations

import pytest
import torch
from models import TinyMLP, TinyTransformer

import seethrough as st
from seethrough import InputError, Site
from seethrough.subnetworks import activation_patching, attribution_patching


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


# -- heads, ablations, prefix reuse, attribution (issue #12 item 4) ---------------------------------


def _tokens(seed: int, batch: int = 3, seq: int = 5) -> torch.Tensor:
    return torch.randint(0, 16, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _last_logit(out: torch.Tensor) -> torch.Tensor:
    return out[:, -1, 3] - out[:, -1, 5]


def _by_hand(model, clean, corrupted, site: Site, fill, metric) -> float:
    """One `st.patch` with the selected slice set to ``fill`` (whole-site shaped), normalised by hand."""
    with torch.no_grad():
        base, corr = metric(model(clean)).double().mean(), metric(model(corrupted)).double().mean()
        got = metric(st.patch(model, clean, {Site(site.path, point=site.point): fill})).double().mean()
    return float((got - base) / (corr - base))


def test_heads_are_unit_groups_of_the_output_projection_input() -> None:
    model = TinyTransformer(d=8).eval()
    clean, corrupted = _tokens(4), _tokens(5)
    site = Site("blocks.1.attn.out", point="input", positions=[1, -1])
    res = activation_patching(model, clean, corrupted, [site], _last_logit, n_heads=2)
    assert res.effects[site].shape == (2, 2) and res.n_heads == 2
    value = st.capture(model, corrupted, [Site(site.path, point="input")])[Site(site.path, point="input")]
    own = st.capture(model, clean, [Site(site.path, point="input")])[Site(site.path, point="input")]
    for i, p in enumerate([1, 4]):
        for h in range(2):
            fill = own.clone()
            fill[:, p, 4 * h:4 * (h + 1)] = value[:, p, 4 * h:4 * (h + 1)]
            assert float(res.effects[site][i, h]) == pytest.approx(
                _by_hand(model, clean, corrupted, site, fill, _last_logit), abs=1e-5)
    with pytest.raises(InputError, match="does not divide"):
        activation_patching(model, clean, corrupted, [site], _last_logit, n_heads=3)
    with pytest.raises(InputError, match="selects units"):
        activation_patching(model, clean, corrupted, [Site(site.path, point="input", units=[0])], _last_logit,
                            n_heads=2)


@pytest.mark.parametrize("ablation", ["zero", "mean", "resample"])
def test_ablations_equal_a_patch_with_the_ablated_value(ablation: str) -> None:
    model = TinyMLP()
    gen = torch.Generator().manual_seed(6)
    clean, corrupted = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    site = Site("fc1", units=[1, 4])
    res = activation_patching(model, clean, corrupted, [site], _metric, ablation=ablation, seed=3)
    value = st.capture(model, corrupted, ["fc1"])["fc1"]
    own = st.capture(model, clean, ["fc1"])["fc1"]
    source = {"zero": torch.zeros_like(value), "mean": value.mean(0, keepdim=True).expand_as(value),
              "resample": value[torch.randint(0, 6, (6,), generator=torch.Generator().manual_seed(3))]}[ablation]
    for j, u in enumerate([1, 4]):
        fill = own.clone()
        fill[:, u] = source[:, u]
        assert float(res.effects[site][j]) == pytest.approx(_by_hand(model, clean, corrupted, Site("fc1"), fill,
                                                                     _metric), abs=1e-5)
    assert res.ablation == ablation


def test_sites_of_several_layers_share_passes_and_equal_one_call_each() -> None:
    model = TinyTransformer(n_layers=3).eval()
    clean, corrupted = _tokens(7, batch=2), _tokens(8, batch=2)
    sites = [Site(f"blocks.{i}", point="input", positions=[0, 2, 4]) for i in range(3)] + ["blocks.1.mlp"]
    together = activation_patching(model, clean, corrupted, sites, _last_logit)
    for site in sites:
        alone = activation_patching(model, clean, corrupted, [site], _last_logit, max_rows=2)  # one copy a pass
        torch.testing.assert_close(together.effects[site], alone.effects[site], rtol=1e-5, atol=1e-6)


def test_prefix_reuse_equals_the_plain_stacked_copies() -> None:
    model = TinyTransformer(n_layers=3).eval()
    clean, corrupted = _tokens(9), _tokens(10)
    chain = ["blocks.0", "blocks.1", "blocks.2", "unembed"]
    sites = [Site(f"blocks.{i}", point="input", positions=list(range(5))) for i in range(3)]
    sites += [Site("blocks.2", units=[0, 5]), "blocks.1.mlp"]  # a block's output; a site off the chain
    sites += [Site("unembed", positions=[-1])]  # the model's output: copies that run no block
    plain = activation_patching(model, clean, corrupted, sites, _last_logit)
    for max_rows in (4096, 7):  # all copies in one staircase; two copies per pass
        reused = activation_patching(model, clean, corrupted, sites, _last_logit, blocks=chain, max_rows=max_rows)
        assert reused.prefix and not plain.prefix
        for site in sites:
            torch.testing.assert_close(reused.effects[site], plain.effects[site], rtol=1e-4, atol=1e-5)
    late = activation_patching(model, clean, corrupted, sites[2:], _last_logit, blocks=chain)  # starts at block 2
    for site in sites[2:]:
        torch.testing.assert_close(late.effects[site], plain.effects[site], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(plain.effects[sites[-1]], torch.tensor([1.0]), rtol=0, atol=1e-6)


def test_prefix_reuse_refuses_blocks_that_are_not_a_chain() -> None:
    model = TinyTransformer().eval()
    clean, corrupted = _tokens(11), _tokens(12)
    site = Site("blocks.0", point="input", positions=[0])
    with pytest.raises(InputError, match="not the output of"):
        activation_patching(model, clean, corrupted, [site], _last_logit, blocks=["blocks.0", "unembed"])
    with pytest.raises(InputError, match="not the output of the last block"):
        activation_patching(model, clean, corrupted, [site], _last_logit, blocks=["blocks.0", "blocks.1"])
    mask = torch.ones(3, 5, dtype=torch.long)
    mask[:, 0] = 0  # the blocks get the mask as a keyword: calling one alone would drop it
    with pytest.raises(InputError, match="needs other arguments"):
        activation_patching(model, {"input_ids": clean, "attention_mask": mask},
                            {"input_ids": corrupted, "attention_mask": mask}, [site], _last_logit,
                            blocks=["blocks.0", "blocks.1", "unembed"])


def test_attribution_patching_is_gradient_times_difference() -> None:
    model = TinyTransformer().eval()
    clean, corrupted = _tokens(13), _tokens(14)
    site = Site("blocks.1.attn.out", point="input", positions=[2, 4])
    res = attribution_patching(model, clean, corrupted, [site, "blocks.0"], _last_logit, n_heads=2)
    assert res.method == "attribution" and res.effects[site].shape == (2, 2)
    # by hand: autograd on the value read with capture inside the graph
    at = Site(site.path, point="input")
    corr_value = st.capture(model, corrupted, [at])[at]
    own = st.capture(model, clean, [at])[at].detach().requires_grad_(True)
    out = st.patch(model, clean, {at: lambda value, s: own})
    grad, = torch.autograd.grad(_last_logit(out).sum(), [own])
    with torch.no_grad():
        gap = float(_last_logit(model(corrupted)).double().mean() - _last_logit(model(clean)).double().mean())
    for i, p in enumerate([2, 4]):
        for h in range(2):
            part = ((corr_value - own) * grad).detach()[:, p, 4 * h:4 * (h + 1)].double().sum() / 3
            assert float(res.effects[site][i, h]) == pytest.approx(float(part) / gap, abs=1e-5)


def test_attribution_is_exact_on_a_linear_model() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Linear(6, 2))
    gen = torch.Generator().manual_seed(15)
    clean, corrupted = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    site = Site("0", units=[0, 2, 5])
    exact = activation_patching(model, clean, corrupted, [site], lambda out: out[:, 1])
    estimate = attribution_patching(model, clean, corrupted, [site], lambda out: out[:, 1])
    torch.testing.assert_close(estimate.effects[site], exact.effects[site], rtol=1e-4, atol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_prefix_reuse_runs_each_block_only_on_the_copies_that_reach_it() -> None:
    """The cost claim itself: rows each block sees, counted with a user hook (n = 2, 5 positions, 3 layers)."""
    model = TinyTransformer(n_layers=3).eval()
    clean, corrupted = _tokens(16, batch=2), _tokens(17, batch=2)
    sites = [Site(f"blocks.{i}", point="input", positions=list(range(5))) for i in range(3)]
    for blocks, expected in ((None, [2 * (2 + 15)] * 3),  # corrupted run, clean run, 15 copies through every block
                             (["blocks.0", "blocks.1", "blocks.2", "unembed"],
                              [2 * (3 + 5 * (i + 1)) for i in range(3)])):  # + clean rows; copies join at their block
        rows = dict.fromkeys(range(3), 0)

        def count(value: torch.Tensor, site: Site, rows: dict[int, int] = rows) -> None:
            rows[int(site.path[-1])] += value.shape[0]

        with st.hooks(model, {Site(f"blocks.{i}", point="input", call=None): count for i in range(3)}):
            activation_patching(model, clean, corrupted, sites, _last_logit, blocks=blocks)
        assert [rows[i] for i in range(3)] == expected
