"""core.interventions: each edit against the value edited by hand, and the tiled engine against a loop (issue #9).

Masks (issue #10, item 2): reference means and resample draws over a padded batch see real tokens only.
"""

from __future__ import annotations

import functools

import pytest
import torch
from models import TinyCNN, TinyMLP, TinyTransformer, images, tokens, vectors
from torch import Tensor

import seethrough as st
from seethrough import Site
from seethrough.core import (
    InputError,
    InputTypeError,
    SiteError,
    add_direction,
    along_units,
    check_ablation,
    mean_ablation,
    patch_each,
    project_out,
    replace_slice,
    resample_ablation,
    resample_indices,
    unit_means,
    unit_values,
    zero_ablation,
)
from seethrough.core.interventions import check_position_mask, position_mask, resample_draws
from seethrough.neurons import ablate, unit_importance


def run_on(model: torch.nn.Module, inputs, site: Site | str, edited: Tensor):
    """The oracle: the model run on a hand-edited value (patched in as a constant tensor)."""
    return st.patch(model, inputs, {site: edited})


def hidden(model: TinyMLP, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model.act(model.fc1(x))


# -- along_units and unit_means -------------------------------------------------------------


@pytest.mark.parametrize("shape, site, axis", [
    ((2, 5), Site("fc"), 1),
    ((2, 4, 3, 3), Site("conv"), 1),
    ((2, 7, 6), Site("blocks.0"), 2),
    ((2, 6, 7), Site("blocks.0", unit_dim=1), 1),
])
def test_along_units_broadcasts_along_the_sites_unit_axis(shape: tuple[int, ...], site: Site, axis: int) -> None:
    value = torch.randn(shape, dtype=torch.float64)
    vector = torch.arange(float(shape[axis]))  # float32: takes the value's dtype
    placed = along_units(vector, value, site)
    assert placed.dtype == torch.float64 and placed.ndim == len(shape)
    expected = value.movedim(axis, -1) * torch.arange(float(shape[axis]), dtype=torch.float64)
    torch.testing.assert_close(value * placed, expected.movedim(-1, axis), rtol=0, atol=0)
    mask = along_units(torch.ones(shape[axis], dtype=torch.bool), value, site)
    assert mask.dtype == torch.bool  # a bool vector keeps its dtype


def test_along_units_refuses_a_vector_of_the_wrong_length() -> None:
    with pytest.raises(InputError, match="3 entries but .* 5 units along dim 1"):
        along_units(torch.ones(3), torch.zeros(2, 5), Site("fc"))
    with pytest.raises(InputError, match="1-D"):
        along_units(torch.ones(5, 1), torch.zeros(2, 5), Site("fc"))


def test_unit_means_average_every_other_axis() -> None:
    value = torch.randn(3, 5, 4)  # (batch, seq, d): units are the last dim
    torch.testing.assert_close(unit_means(value, Site("b")), value.reshape(-1, 4).mean(0))
    conv = torch.randn(3, 4, 2, 2)
    torch.testing.assert_close(unit_means(conv, Site("c")), conv.transpose(0, 1).reshape(4, -1).mean(1))


def test_unit_values_average_positions_and_space_per_example() -> None:
    conv = torch.randn(3, 4, 2, 5)
    torch.testing.assert_close(unit_values(conv, Site("c")), conv.mean(dim=(2, 3)))
    seq = torch.randn(3, 6, 4)  # units on the last axis
    torch.testing.assert_close(unit_values(seq, Site("b")), seq.mean(dim=1))
    flat = torch.randn(3, 4)
    assert torch.equal(unit_values(flat, Site("f")), flat)


def test_resample_indices_follow_the_documented_draw_order() -> None:
    gen = torch.Generator().manual_seed(11)
    expected = torch.stack([torch.randint(0, 9, (6,), generator=gen) for _ in range(3)])
    assert torch.equal(resample_indices(9, 6, n_samples=3, seed=11), expected)
    assert torch.equal(resample_indices(9, 6, n_samples=3, seed=11)[0], resample_indices(9, 6, seed=11)[0])
    with pytest.raises(InputError, match="n_samples"):
        resample_indices(9, 6, n_samples=0)


def test_check_ablation_names_the_choices() -> None:
    assert check_ablation("resample") == "resample"
    with pytest.raises(InputError, match="'zero' or 'mean'"):
        check_ablation("resample", ("zero", "mean"))


# -- each edit against the value edited by hand ---------------------------------------------


def test_zero_and_mean_ablation_of_mlp_units() -> None:
    model, x, ref = TinyMLP(), vectors(6), vectors(10, seed=4)
    h, h_ref = hidden(model, x), hidden(model, ref)
    edited = h.clone()
    edited[:, [1, 3]] = 0
    torch.testing.assert_close(st.patch(model, x, {"act": zero_ablation([1, 3])}), run_on(model, x, "act", edited))
    torch.testing.assert_close(st.patch(model, x, {"act": zero_ablation()}), run_on(model, x, "act", h * 0))
    edited = h.clone()
    edited[:, [0, 7]] = h_ref.mean(0)[[0, 7]]
    torch.testing.assert_close(st.patch(model, x, {"act": mean_ablation(unit_means(h_ref, Site("act")), [0, 7])}),
                               run_on(model, x, "act", edited))


def test_zero_ablation_of_conv_channels() -> None:
    cnn, x = TinyCNN(), images(4)
    with torch.no_grad():
        v = cnn.conv(x)
    edited = v.clone()
    edited[:, [0, 2]] = 0
    torch.testing.assert_close(st.patch(cnn, x, {"conv": zero_ablation([0, 2])}), run_on(cnn, x, "conv", edited))


def test_resample_ablation_draws_reference_rows_with_the_seed() -> None:
    model, x, ref = TinyMLP(), vectors(6), vectors(10, seed=4)
    h, h_ref = hidden(model, x), hidden(model, ref)
    idx = torch.randint(0, 10, (6,), generator=torch.Generator().manual_seed(5))
    edited = h.clone()
    edited[:, [2, 4]] = h_ref[idx][:, [2, 4]]
    edit = resample_ablation(h_ref, [2, 4], seed=5)
    torch.testing.assert_close(st.patch(model, x, {"act": edit}), run_on(model, x, "act", edited))
    torch.testing.assert_close(st.patch(model, x, {"act": edit}), run_on(model, x, "act", edited))  # stateless
    with pytest.raises(InputError, match="per example"):
        st.patch(model, x, {"act": resample_ablation(torch.zeros(3, 5), [1])})


def test_replace_slice_of_units_and_positions_of_a_transformer() -> None:
    tr, t = TinyTransformer(), tokens()
    source_run = tokens(seed=3)
    site = Site("blocks.0")
    with torch.no_grad():
        v = st.capture(tr, t, [site])[site]
        source = st.capture(tr, source_run, [site])[site]
    edited = v.clone()
    for p in (1, 3):
        edited[:, p, [2, 5]] = source[:, p, [2, 5]]
    torch.testing.assert_close(st.patch(tr, t, {site: replace_slice(source, units=[2, 5], positions=[1, 3])}),
                               run_on(tr, t, site, edited))
    # patching a site with its own value is a no-op
    torch.testing.assert_close(st.patch(tr, t, {site: replace_slice(v)}), tr(**t))
    with pytest.raises(InputError, match="positions"):
        st.patch(TinyMLP(), vectors(), {"act": replace_slice(torch.zeros(8), positions=[0])})


def test_project_out_matches_the_closed_form_and_is_idempotent() -> None:
    model, x = TinyMLP(), vectors(6)
    h = hidden(model, x)
    d = torch.linspace(-1, 2, 8)
    u = d / d.norm()
    edited = h - (h @ u)[:, None] * u
    torch.testing.assert_close(st.patch(model, x, {"act": project_out(3 * d)}), run_on(model, x, "act", edited))
    once = project_out(d)(h, Site("act"))
    torch.testing.assert_close(once @ u, torch.zeros(6), rtol=0, atol=1e-6)
    torch.testing.assert_close(project_out(d)(once, Site("act")), once, rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="non-zero"):
        project_out(torch.zeros(8))


def test_project_out_along_the_last_axis_of_a_sequence() -> None:
    tr, t = TinyTransformer(), tokens()
    site = Site("blocks.1")
    with torch.no_grad():
        v = st.capture(tr, t, [site])[site]
    d = torch.arange(8.0) - 3
    u = d / d.norm()
    edited = v - (v @ u)[..., None] * u
    torch.testing.assert_close(st.patch(tr, t, {site: project_out(d)}), run_on(tr, t, site, edited))


def test_add_direction_adds_alpha_times_the_direction() -> None:
    cnn, x = TinyCNN(), images()
    with torch.no_grad():
        v = cnn.conv(x)
    c = torch.tensor([1.0, 0.0, -1.0, 2.0])
    torch.testing.assert_close(st.patch(cnn, x, {"conv": add_direction(c, alpha=-1.5)}),
                               run_on(cnn, x, "conv", v - 1.5 * c.view(1, 4, 1, 1)))
    with pytest.raises(InputError, match="alpha"):
        add_direction(c, alpha=float("nan"))
    with pytest.raises(InputError, match="NaN"):
        add_direction(torch.full((4,), float("inf")), alpha=1.0)


def test_unit_indices_are_checked() -> None:
    with pytest.raises(InputError, match="distinct"):
        zero_ablation([1, 1])
    with pytest.raises(InputError, match="distinct"):
        zero_ablation([])
    with pytest.raises(TypeError):  # beartype (in tests) or our own check
        zero_ablation([1.5])
    with pytest.raises(InputError, match="out of range"):
        st.patch(TinyMLP(), vectors(), {"act": zero_ablation([8])})


# -- the tiled engine ---------------------------------------------------------------------------


def _mixed_edits(h_ref: Tensor) -> list:
    means = unit_means(h_ref, Site("act"))
    return [zero_ablation([0]), mean_ablation(means, [1, 2]), replace_slice(h_ref[:1], units=[5]),
            project_out(torch.linspace(-1, 1, 8)), add_direction(torch.ones(8), alpha=0.3),
            lambda v, s: None, functools.partial(lambda v, s, k: v * k, k=2.0)]


@pytest.mark.parametrize("max_rows", [4096, 14, 7, 1])
def test_patch_each_equals_one_patch_per_edit(max_rows: int) -> None:
    model, x = TinyMLP(), vectors(7)
    edits = _mixed_edits(hidden(model, vectors(9, seed=2)))
    metric = lambda out: torch.log_softmax(out, -1)[:, 1]  # noqa: E731
    got = patch_each(model, x, "act", edits, metric, max_rows=max_rows)
    loop = torch.stack([metric(st.patch(model, x, {"act": edit})) for edit in edits])
    assert got.shape == (len(edits), 7)
    torch.testing.assert_close(got, loop, rtol=0, atol=1e-6)


def test_patch_each_on_a_transformer_with_keyword_inputs_and_selected_positions() -> None:
    tr, t = TinyTransformer(), tokens()
    site = Site("blocks.0", positions=[0, 2])
    edits = [zero_ablation([u]) for u in range(8)] + [project_out(torch.arange(8.0))]
    metric = lambda out: out[:, -1, :4]  # noqa: E731 - several scores per row
    got = patch_each(tr, t, site, edits, metric, max_rows=7)
    loop = torch.stack([metric(st.patch(tr, t, {site: edit})) for edit in edits])
    assert got.shape == (9, 3, 4)
    torch.testing.assert_close(got, loop, rtol=0, atol=1e-6)


def test_patch_each_stacks_copies_copy_major() -> None:
    """In one pass over c copies of n examples, row j * n + i is example i under edit j."""
    model, x = TinyMLP(), vectors(5)
    seen: list[Tensor] = []

    def metric(out: Tensor) -> Tensor:
        seen.append(out)
        return out[:, 0]

    shifts = [add_direction(torch.ones(8), alpha=float(j)) for j in range(3)]
    got = patch_each(model, x, "act", shifts, metric)
    (rows,) = seen  # one pass
    assert rows.shape == (15, 3)
    for j in range(3):
        alone = st.patch(model, x, {"act": shifts[j]})
        torch.testing.assert_close(rows[j * 5:(j + 1) * 5], alone, rtol=0, atol=1e-6)
        for i in range(5):  # per example: the same as patching example i alone
            torch.testing.assert_close(got[j, i], st.patch(model, x[i:i + 1], {"act": shifts[j]})[0, 0],
                                       rtol=0, atol=1e-6)


def test_patch_each_refuses_bad_edits_and_metrics() -> None:
    model, x = TinyMLP(), vectors(4)
    with pytest.raises(InputError, match="at least one edit"):
        patch_each(model, x, "act", [], lambda out: out[:, 0])
    with pytest.raises(InputError, match="max_rows"):
        patch_each(model, x, "act", [zero_ablation()], lambda out: out[:, 0], max_rows=0)
    with pytest.raises(InputError, match="one score per row"):
        patch_each(model, x, "act", [zero_ablation()] * 2, lambda out: out[:4, 0])
    with pytest.raises(SiteError, match="same shape"):
        patch_each(model, x, "act", [lambda v, s: v[:, :2]], lambda out: out[:, 0])
    with pytest.raises(RuntimeError, match="injected"):  # a user edit's error propagates unchanged
        patch_each(model, x, "act", [_raise], lambda out: out[:, 0])
    assert all(not m._forward_hooks for m in model.modules())


def _raise(value: Tensor, site: Site) -> None:
    raise RuntimeError("injected failure in an edit")


# -- which positions count: masks for reference values (issue #10, item 2) -------------------


def _padded_tokens() -> dict[str, Tensor]:
    """Four right-padded sentences (pad id 0) of lengths 5, 2, 4, 1 with their attention mask."""
    t = tokens(4, 5, seed=2)
    mask = torch.zeros(4, 5, dtype=torch.long)
    for i, n in enumerate((5, 2, 4, 1)):
        mask[i, :n] = 1
    return {"input_ids": t["input_ids"] * mask, "attention_mask": mask}


def _real_tokens(model: torch.nn.Module, inputs: dict[str, Tensor], site: str) -> Tensor:
    """``(n_real, d)``: each sentence run alone, unpadded, its positions concatenated (the oracle)."""
    rows = []
    for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True):
        n = int(mask.sum())
        alone = {"input_ids": ids[None, :n], "attention_mask": torch.ones(1, n, dtype=torch.long)}
        rows.append(st.capture(model, alone, [site])[site][0].detach())
    return torch.cat(rows)


def test_position_mask_reads_the_attention_mask_of_sequence_values_only() -> None:
    t = _padded_tokens()
    seq = torch.zeros(4, 5, 8)
    assert torch.equal(position_mask(t, seq, Site("b")), t["attention_mask"].bool())
    assert position_mask(t, seq, Site("b"), False) is None
    assert position_mask(t, torch.zeros(4, 8), Site("pooler")) is None  # no positions
    assert position_mask(t, torch.zeros(4, 2, 5, 5), Site("attn")) is None  # attention probabilities: not (b, s, d)
    assert position_mask(t, torch.zeros(4, 5, 8), Site("b", unit_dim=1)) is None  # units on dim 1: no positions
    assert position_mask(tokens(4, 5), seq, Site("b")) is None  # nothing padded: the unmasked path
    assert position_mask(images(3), torch.zeros(3, 4, 6, 6), Site("conv")) is None
    explicit = torch.tensor([[1, 0, 0, 0, 0]] * 4)
    assert torch.equal(position_mask(t, seq, Site("b"), explicit), explicit.bool())
    with pytest.raises(InputError, match=r"mask has shape \(4, 3\)"):
        position_mask(t, seq, Site("b"), torch.ones(4, 3))
    with pytest.raises(InputError, match="mask=False"):
        position_mask(images(3), torch.zeros(3, 4, 6, 6), Site("conv"), torch.ones(3, 6))
    with pytest.raises(InputTypeError, match="mask must be"):
        check_position_mask(True)
    with pytest.raises(InputError, match="0/1"):
        check_position_mask(torch.tensor([[0.5, 1.0]]))
    with pytest.raises(InputError, match=r"\(batch, seq\)"):
        check_position_mask(torch.ones(2, 3, 1))


def test_unit_means_and_resample_draws_leave_padding_out() -> None:
    value = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]]).bool()
    value[~mask] = 1e6  # padding: must never be averaged or drawn
    real = value[mask]  # (6, 2), row-major
    torch.testing.assert_close(unit_means(value, Site("b"), mask=mask), real.mean(0))
    target = torch.zeros(2, 3, 2)  # another sequence length than the reference: tokens are drawn one by one
    draws = resample_draws(value, target, Site("b"), n_samples=3, seed=4, mask=mask)
    index = resample_indices(6, 2 * 3, n_samples=3, seed=4)  # the documented order
    assert torch.equal(draws, real[index].view(3, 2, 3, 2)) and bool((draws < 1e5).all())
    edit = resample_ablation(value, [1], seed=4, mask=mask)
    edited = edit(target, Site("b"))
    assert torch.equal(edited[..., 1], draws[0, ..., 1]) and torch.equal(edited[..., 0], target[..., 0])
    with pytest.raises(InputError, match="no position"):
        unit_means(value, Site("b"), mask=torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(InputError, match="pass reference data of the same kind"):
        resample_draws(value, torch.zeros(2, 3, 5), Site("b"), mask=mask)
    # without a mask, resample_draws is resample_ablation's row draw, bit for bit
    rows = resample_draws(value, torch.zeros(5, 4, 2), Site("b"), n_samples=2, seed=1)
    assert torch.equal(rows, value[resample_indices(3, 5, n_samples=2, seed=1)])


def test_mean_ablation_of_a_padded_reference_is_the_mean_over_real_tokens() -> None:
    tr, t, site = TinyTransformer(), _padded_tokens(), "blocks.0.mlp.1"
    real = _real_tokens(tr, t, site)
    out = st.patch(tr, t, {site: mean_ablation(real.mean(0), [1, 5])})  # oracle: the unpadded runs' mean
    # padding changes the attention's float32 sums slightly: 1e-5 absolute covers it
    torch.testing.assert_close(ablate(tr, t, site, [1, 5], ablation="mean"), out, rtol=0.0, atol=1e-5)
    torch.testing.assert_close(ablate(tr, tokens(2, 5), site, [1, 5], ablation="mean", reference=t),
                               st.patch(tr, tokens(2, 5), {site: mean_ablation(real.mean(0), [1, 5])}),
                               rtol=0.0, atol=1e-5)
    unmasked = ablate(tr, t, site, [1, 5], ablation="mean", mask=False)
    assert not torch.allclose(unmasked, out, atol=1e-3)  # the pads moved the mean: what the mask fixes
    metric = lambda out: out[:, -1, 3]  # noqa: E731
    got = unit_importance(tr, tokens(2, 5), site, metric, ablation="mean", reference=t)
    clean = metric(tr(**tokens(2, 5)))
    slow = torch.stack([(clean - metric(st.patch(tr, tokens(2, 5), {site: mean_ablation(real.mean(0), [u])}))).mean()
                        for u in range(16)])
    torch.testing.assert_close(got.values, slow.detach(), rtol=0.0, atol=1e-5)


def test_resample_ablation_never_draws_a_pad_position() -> None:
    tr, site = TinyTransformer(), "blocks.0.mlp.1"
    t = tokens(3, 4, seed=5)
    one = {"input_ids": torch.tensor([[7, 0, 0, 0], [0, 0, 0, 0]]), "attention_mask": torch.tensor([[1, 0, 0, 0],
                                                                                                     [0, 0, 0, 0]])}
    token = _real_tokens(tr, {k: v[:1] for k, v in one.items()}, site)[0]  # the only real reference token
    fixed = st.patch(tr, t, {site: mean_ablation(token, [2, 9])})  # every position takes that token's units
    torch.testing.assert_close(ablate(tr, t, site, [2, 9], ablation="resample", reference=one), fixed,
                               rtol=0.0, atol=1e-5)  # float32 sums of the padded reference run, as above
    metric = lambda out: out[:, 0, 1]  # noqa: E731
    got = unit_importance(tr, t, site, metric, ablation="resample", reference=one, n_samples=2)
    clean = metric(tr(**t))
    slow = torch.stack([(clean - metric(st.patch(tr, t, {site: mean_ablation(token, [u])}))).mean()
                        for u in range(16)])
    torch.testing.assert_close(got.values, slow.detach(), rtol=0.0, atol=1e-5)
    with pytest.raises(InputTypeError, match="mask must be"):
        ablate(tr, t, site, [2], ablation="mean", mask=True)  # type: ignore[arg-type]  # the wrong form
