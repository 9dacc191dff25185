"""hooks / capture / patch against hand-written forwards (issue #2).

Oracles: a hand-written forward with injected activations (TinyMLP.forward_from_hidden), the
self-patch identity, and direct computation of module inputs/outputs.
"""

from __future__ import annotations

import re

import pytest
import torch
from models import (
    DictOutput,
    InplaceReLU,
    KeywordModel,
    PairOutput,
    TinyCNN,
    TinyMLP,
    TinyTransformer,
    TwiceMLP,
    UnusedBranch,
    images,
    tokens,
    vectors,
)

import seethrough as st
from seethrough import Site


def test_capture_equals_direct_computation() -> None:
    model, x = TinyMLP(), vectors()
    got = st.capture(model, x, ["fc1", Site("fc2", point="input"), "fc2"])
    h = model.fc1(x)
    torch.testing.assert_close(got["fc1"], h, rtol=0, atol=0)
    torch.testing.assert_close(got[Site("fc2", point="input")], torch.relu(h), rtol=0, atol=0)
    torch.testing.assert_close(got["fc2"], model(x), rtol=0, atol=0)
    assert list(got) == ["fc1", Site("fc2", point="input"), "fc2"]  # keyed exactly as given


def test_capture_single_site_and_root() -> None:
    model, x = TinyMLP(), vectors()
    assert list(st.capture(model, x, "fc1")) == ["fc1"]
    torch.testing.assert_close(st.capture(model, x, [""])[""], model(x), rtol=0, atol=0)


def test_patch_with_own_activation_is_identity() -> None:
    model, x = TinyTransformer(), tokens()
    sites = st.select_sites(model, "blocks.*")
    own = st.capture(model, x, sites)
    assert torch.equal(st.patch(model, x, own), model(**x))


def test_patch_matches_hand_written_forward() -> None:
    model, x = TinyMLP(), vectors()
    h = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(st.patch(model, x, {"fc1": h}), model.forward_from_hidden(h), rtol=0, atol=0)


def test_patch_units_replaces_only_those_units() -> None:
    model, x = TinyMLP(), vectors()
    h = model.fc1(x).detach()
    expected = h.clone()
    expected[:, [2, 5]] = 0.0
    out = st.patch(model, x, {Site("fc1", units=[2, 5]): torch.zeros(5, 2)})
    torch.testing.assert_close(out, model.forward_from_hidden(expected), rtol=0, atol=0)
    captured = st.capture(model, x, [Site("fc1", units=[5, 2])])[Site("fc1", units=[5, 2])]
    torch.testing.assert_close(captured, h[:, [5, 2]], rtol=0, atol=0)


def test_patch_broadcasts_a_mean_over_the_batch() -> None:
    model, x = TinyMLP(), vectors()
    mean = model.fc1(x).detach().mean(0)
    torch.testing.assert_close(st.patch(model, x, {"fc1": mean}),
                               model.forward_from_hidden(mean.expand(5, 8)), rtol=0, atol=0)


def test_patch_shape_that_does_not_broadcast_is_refused() -> None:
    with pytest.raises(st.SiteError, match=r"\(3,\).*\(5, 8\)"):
        st.patch(TinyMLP(), vectors(), {"fc1": torch.zeros(3)})


def test_conv_units_are_channels() -> None:
    model, x = TinyCNN(), images()
    got = st.capture(model, x, [Site("conv", units=[1, 3])])[Site("conv", units=[1, 3])]
    torch.testing.assert_close(got, model.conv(x)[:, [1, 3]], rtol=0, atol=0)


def test_sequence_positions_and_units() -> None:
    model, x = TinyTransformer(), tokens()
    full = st.capture(model, x, ["blocks.0"])["blocks.0"]
    site = Site("blocks.0", positions=[0, -1], units=[1, 4])
    got = st.capture(model, x, [site])[site]
    torch.testing.assert_close(got, full[:, [0, 4]][:, :, [1, 4]], rtol=0, atol=0)
    # patching the selected slice with its own values changes nothing
    assert torch.equal(st.patch(model, x, {site: got}), model(**x))
    # patching it with zeros changes exactly that slice of the block output
    zeroed = full.clone()
    zeroed[:, [0, 4], 1] = 0
    zeroed[:, [0, 4], 4] = 0
    seen = st.patch(model, x, {site: torch.zeros_like(got), "blocks.1": lambda v, s: None})
    expected = st.patch(model, x, {"blocks.0": zeroed})
    torch.testing.assert_close(seen, expected, rtol=0, atol=0)


def test_tuple_output_site_is_first_element_and_rest_is_kept() -> None:
    model, x = TinyTransformer(), tokens()
    attn = model.blocks[0].attn
    ln = model.blocks[0].ln(model.embed(x["input_ids"]))
    expected_out, _ = attn(ln, mask=x["attention_mask"])
    got = st.capture(model, x, ["blocks.0.attn"])["blocks.0.attn"]
    torch.testing.assert_close(got, expected_out, rtol=0, atol=0)


def test_dict_output_site_is_first_value() -> None:
    model, x = DictOutput(), vectors()
    torch.testing.assert_close(st.capture(model, x, ["inner"])["inner"], model.inner.fc(x), rtol=0, atol=0)
    out = st.patch(model, x, {"inner": torch.zeros(5, 4)})
    torch.testing.assert_close(out, torch.ones(5, 4), rtol=0, atol=0)  # "extra" survived the patch


def test_keyword_inputs_and_keyword_module_calls() -> None:
    model, x = KeywordModel(), {"x": vectors(), "scale": 2.0}
    torch.testing.assert_close(st.capture(model, x, ["fc"])["fc"], model.fc(x["x"]), rtol=0, atol=0)
    # blocks receive mask= as a keyword: their input point is the positional hidden state
    tmodel, t = TinyTransformer(), tokens()
    got = st.capture(tmodel, t, [Site("blocks.0", point="input")])[Site("blocks.0", point="input")]
    torch.testing.assert_close(got, tmodel.embed(t["input_ids"]), rtol=0, atol=0)


def test_input_patch_equals_output_patch_of_previous_module() -> None:
    model, x = TinyMLP(), vectors()
    h = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    via_input = st.patch(model, x, {Site("fc2", point="input"): h})
    torch.testing.assert_close(via_input, model.fc2(h), rtol=0, atol=0)


def test_module_called_twice_is_refused_or_selected_by_call() -> None:
    model, x = TwiceMLP(), vectors()
    with pytest.raises(st.SiteError, match=r"call=k"):
        st.capture(model, x, ["layer"])
    first, second = Site("layer", call=0), Site("layer", call=1)
    got = st.capture(model, x, [first, second])
    torch.testing.assert_close(got[first], model.layer(x), rtol=0, atol=0)
    torch.testing.assert_close(got[second], model(x), rtol=0, atol=0)
    with pytest.raises(st.HookNotFiredError, match="call=2 needs 3"):
        st.capture(model, x, [Site("layer", call=2)])


def test_raw_hooks_fire_on_every_call() -> None:
    model, x = TwiceMLP(), vectors()
    seen = []
    with st.hooks(model, {"layer": lambda v, s: seen.append(v.shape)}) as ctx:
        model(x)
        assert ctx.calls == {Site("layer"): 2}
    assert seen == [torch.Size([5, 4])] * 2


def test_hook_that_never_fired_is_an_error_naming_it() -> None:
    with pytest.raises(st.HookNotFiredError, match="'unused'"):
        st.capture(UnusedBranch(), vectors(), ["used", "unused"])
    with pytest.raises(st.HookNotFiredError, match="'used'"), st.hooks(UnusedBranch(), {"used": lambda v, s: None}):
        pass


def test_user_callback_error_propagates_unchanged() -> None:
    model = TinyMLP()
    boom = ZeroDivisionError("from the user's callback")

    def fn(value: torch.Tensor, site: Site) -> None:
        raise boom

    with pytest.raises(ZeroDivisionError) as info:
        st.patch(model, vectors(), {"fc1": fn})
    assert info.value is boom
    assert not model.fc1._forward_hooks


def test_model_failure_is_wrapped_with_inputs_and_cause() -> None:
    with pytest.raises(st.ForwardError, match=r"float32 \(5, 7\)") as info:
        st.capture(TinyMLP(), torch.zeros(5, 7), ["fc1"])
    assert isinstance(info.value.__cause__, RuntimeError)
    assert isinstance(info.value, RuntimeError)


def test_stop_ends_the_forward_early() -> None:
    model, x = TinyMLP(), vectors()
    ran = []
    model.fc2.register_forward_pre_hook(lambda *a: ran.append(1))
    got = st.capture(model, x, ["fc1"], stop=True)
    torch.testing.assert_close(got["fc1"], model.fc1(x), rtol=0, atol=0)
    assert ran == []


def test_in_place_overwrite_is_detected_and_clone_fixes_it() -> None:
    model, x = InplaceReLU(), vectors()
    expected = model.fc.weight.detach() @ x.T
    expected = expected.T + model.fc.bias.detach()
    with pytest.raises(st.SiteError, match="clone=True"):
        st.capture(model, x, ["fc"])
    torch.testing.assert_close(st.capture(model, x, ["fc"], clone=True)["fc"], expected, rtol=1e-6, atol=1e-6)
    with torch.inference_mode():  # no version counters here: capture copies by itself
        got = st.capture(model, x, ["fc"])["fc"]
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)  # matmul vs addmm rounding


def test_capture_keeps_autograd_graph_when_grad_enabled() -> None:
    model, x = TinyMLP(), vectors()
    h = st.capture(model, x, ["fc1"])["fc1"]
    assert h.grad_fn is not None
    (grad,) = torch.autograd.grad(h.sum(), model.fc1.bias)
    torch.testing.assert_close(grad, torch.full((8,), 5.0), rtol=0, atol=0)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        assert st.capture(model, x, ["fc1"])["fc1"].grad_fn is None


def test_gradient_flows_through_a_patched_value() -> None:
    model, x = TinyMLP(), vectors()
    h = torch.randn(5, 8, generator=torch.Generator().manual_seed(3), requires_grad=True)
    (g_patch,) = torch.autograd.grad(st.patch(model, x, {"fc1": h}).sum(), h)
    h2 = h.detach().clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(model.forward_from_hidden(h2).sum(), h2)
    torch.testing.assert_close(g_patch, g_ref, rtol=0, atol=0)


def test_nested_hooks_remove_only_their_own() -> None:
    model, x = TinyMLP(), vectors()
    with st.hooks(model, {"fc1": lambda v, s: v * 0}):
        with st.hooks(model, {"fc2": lambda v, s: v + 1}):
            torch.testing.assert_close(model(x), model.fc2.bias.detach().expand(5, 3) + 1, rtol=0, atol=0)
        assert len(model.fc2._forward_hooks) == 0 and len(model.fc1._forward_hooks) == 1
        torch.testing.assert_close(model(x), model.fc2.bias.detach().expand(5, 3), rtol=0, atol=0)
    assert len(model.fc1._forward_hooks) == 0


def test_context_cannot_be_entered_twice() -> None:
    model = TinyMLP()
    ctx = st.hooks(model, {"fc1": lambda v, s: None}, require_fired=False)
    with ctx, pytest.raises(st.SeethroughError, match="already active"), ctx:
        pass
    assert len(model.fc1._forward_hooks) == 0


@pytest.mark.parametrize("bad, message", [
    (lambda v, s: "nope", "return a Tensor or None"),
    (lambda v, s: v[:, :2], r"shape \(5, 2\)"),
    (lambda v, s: v.double(), "float64"),
])
def test_bad_callback_results_are_refused(bad, message: str) -> None:
    model = TinyMLP()
    with pytest.raises(st.SiteError, match=message):
        st.patch(model, vectors(), {"fc1": bad})
    assert len(model.fc1._forward_hooks) == 0


# -- Site(element=...): any element of a structured output or input (issue #10) ---------------------


def test_element_reads_and_patches_any_tuple_or_dict_element() -> None:
    model, x = PairOutput(), vectors()
    h, hk = model.inner.fc(x), model.keyed.fc(x)
    got = st.capture(model, x, [Site("inner", element=1), Site("keyed", element="b"), Site("inner", element=-2)])
    torch.testing.assert_close(got[Site("inner", element=1)], h.tanh(), rtol=0, atol=0)
    torch.testing.assert_close(got[Site("keyed", element="b")], hk.tanh(), rtol=0, atol=0)
    torch.testing.assert_close(got[Site("inner", element=-2)], h, rtol=0, atol=0)
    new_b, new_kb = torch.full_like(h, 2.0), torch.full_like(h, 3.0)
    out = st.patch(model, x, {Site("inner", element=1): new_b, Site("keyed", element="b"): new_kb})
    # hand-written forward with the two elements replaced and the others kept
    torch.testing.assert_close(out, h * new_b + hk - new_kb, rtol=0, atol=0)
    # a unit selection applies inside the element
    out = st.patch(model, x, {Site("inner", element=1, units=[0]): torch.zeros(5, 1)})
    b = h.tanh().clone()
    b[:, 0] = 0
    torch.testing.assert_close(out, h * b + hk - hk.tanh(), rtol=0, atol=0)


def test_element_of_attention_output_is_the_weights() -> None:
    model, x = TinyTransformer(), tokens()
    attn = model.blocks[0].attn
    ln = model.blocks[0].ln(model.embed(x["input_ids"]))
    _, weights = attn(ln, mask=x["attention_mask"])
    got = st.capture(model, x, [Site("blocks.0.attn", element=1)])[Site("blocks.0.attn", element=1)]
    torch.testing.assert_close(got, weights, rtol=0, atol=0)
    assert torch.allclose(got.sum(-1), torch.ones(()))  # rows of attention probabilities


def test_element_of_an_input_by_position_or_keyword() -> None:
    tmodel, t = TinyTransformer(), tokens()
    site = Site("blocks.0", point="input", element="mask")
    got = st.capture(tmodel, t, [site])[site]
    assert torch.equal(got, t["attention_mask"])
    first = Site("blocks.0", point="input", element=0)
    torch.testing.assert_close(st.capture(tmodel, t, [first])[first], tmodel.embed(t["input_ids"]), rtol=0, atol=0)
    # patching the keyword mask changes the block as a hand-written call with that mask does
    ones = torch.ones_like(t["attention_mask"])
    seen = {}
    with st.hooks(tmodel, {"blocks.0": lambda value, s: seen.setdefault("out", value)}):
        st.patch(tmodel, t, {site: ones})
    expected = tmodel.blocks[0](tmodel.embed(t["input_ids"]), mask=ones)
    torch.testing.assert_close(seen["out"], expected, rtol=0, atol=0)


@pytest.mark.parametrize(("site", "message"), [
    (Site("inner", element=2), "no element 2; it holds 2 elements"),
    (Site("inner", element="a"), "needs a dict output"),
    (Site("keyed", element="c"), "no element 'c'; it holds keys ['a', 'b']"),
    (Site("keyed", element=0), "needs a tuple/list output"),
    (Site("inner", point="input", element="x"), "no element 'x'"),
])
def test_bad_elements_are_refused_with_what_the_value_holds(site: Site, message: str) -> None:
    with pytest.raises(st.SiteError, match=re.escape(message)):
        st.capture(PairOutput(), vectors(), [site])


def test_element_must_be_an_int_or_a_str() -> None:
    with pytest.raises(st.SiteError, match="element must be an int index, a str key or None"):
        Site("inner", element=True)
    assert Site("a", element=1) != Site("a") and hash(Site("a", element=1)) == hash(Site("a", element=1))


def test_hooks_call_runs_the_model_and_wraps_only_model_failures() -> None:
    model, x = TinyMLP(), vectors()
    with st.hooks(model, {"fc1": lambda value, site: value * 0}) as ctx:
        out = ctx.call(x)
    torch.testing.assert_close(out, model.fc2(torch.zeros(5, 8)), rtol=0, atol=0)  # hand-written: fc1 zeroed
    with pytest.raises(st.ForwardError, match="forward failed"), st.hooks(model, {"fc1": lambda v, s: None}) as ctx:
        ctx.call(torch.zeros(5, 7))  # wrong width: the model's own error, wrapped
    with pytest.raises(KeyError, match="mine"), st.hooks(model, {"fc1": _raise_key_error}) as ctx:
        ctx.call(x)  # a callback's error propagates unchanged


def _raise_key_error(value: torch.Tensor, site: Site) -> None:
    raise KeyError("mine")
