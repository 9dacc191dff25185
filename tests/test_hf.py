"""HuggingFace MiniLM, offline: capture parity with the model's own hidden states (issue #2)."""

from __future__ import annotations

import pytest
import torch
from hygiene import assert_unchanged, snapshot

import seethrough as st
from seethrough import Site
from seethrough.hf import load_minilm, tokenize

pytestmark = pytest.mark.hf

TEXTS = ["The cat sat on the mat.", "Interpretability tools generate hypotheses, not conclusions.", "ok"]


@pytest.fixture(scope="module")
def minilm() -> tuple:
    tokenizer, model = load_minilm()
    return tokenizer, model, tokenize(tokenizer, TEXTS)


def test_minilm_loads_offline_as_a_six_layer_bert(minilm: tuple) -> None:
    _, model, inputs = minilm
    assert type(model).__name__ == "BertModel" and not model.training
    assert len(model.encoder.layer) == 6 and model.config.hidden_size == 384
    assert inputs["input_ids"].shape[0] == 3 and inputs["attention_mask"][2].sum() < inputs["attention_mask"][1].sum()


def test_capture_matches_output_hidden_states(minilm: tuple) -> None:
    _, model, inputs = minilm
    with torch.no_grad():
        reference = model(**inputs, output_hidden_states=True).hidden_states
        sites = ["embeddings"] + [f"encoder.layer.{n}" for n in range(6)]
        got = st.capture(model, inputs, sites)
    for n, site in enumerate(sites):
        torch.testing.assert_close(got[site], reference[n], rtol=0, atol=1e-5)


def test_position_selection_on_bert_is_the_token_axis(minilm: tuple) -> None:
    _, model, inputs = minilm
    with torch.no_grad():
        full = st.capture(model, inputs, ["encoder.layer.3"])["encoder.layer.3"]
        cls = st.capture(model, inputs, [Site("encoder.layer.3", positions=[0])])[Site("encoder.layer.3", positions=[0])]
    torch.testing.assert_close(cls, full[:, :1], rtol=0, atol=0)


def test_self_patch_of_a_layer_is_identity_and_model_is_untouched(minilm: tuple) -> None:
    _, model, inputs = minilm
    before = snapshot(model)
    with torch.no_grad():
        own = st.capture(model, inputs, ["encoder.layer.2", "encoder.layer.2.attention.self.query"])
        patched = st.patch(model, inputs, own)
        plain = model(**inputs)
    assert torch.equal(patched.last_hidden_state, plain.last_hidden_state)
    assert_unchanged(before, snapshot(model), "capture/patch on MiniLM")


def test_zero_ablating_a_layer_output_changes_the_root_output(minilm: tuple) -> None:
    _, model, inputs = minilm
    with torch.no_grad():
        plain = model(**inputs).last_hidden_state
        ablated = st.patch(model, inputs, {"encoder.layer.5": lambda v, s: torch.zeros_like(v)}).last_hidden_state
    # the last layer's output is the model's last_hidden_state, so zeroing it zeroes the result
    assert plain.abs().sum() > 0
    torch.testing.assert_close(ablated, torch.zeros_like(plain), rtol=0, atol=0)


def test_unknown_bert_site_suggests_the_real_name(minilm: tuple) -> None:
    _, model, inputs = minilm
    with pytest.raises(st.SiteNotFoundError, match="encoder.layer.3"):
        st.capture(model, inputs, ["encoder.layers.3"])


def test_attention_probabilities_are_a_site_element_equal_to_the_models_own() -> None:
    """Issue #10: Site(element=1) reads an HF attention module's probabilities (eager attention)."""
    tokenizer, model = load_minilm(eager_attention=True)
    inputs = tokenize(tokenizer, TEXTS)  # padded: the third sentence is short
    sites = [Site(f"encoder.layer.{n}.attention.self", element=1) for n in range(6)]
    before = snapshot(model)
    with torch.no_grad():
        reference = model(**inputs, output_attentions=True).attentions
        got = st.capture(model, inputs, sites)
    assert_unchanged(before, snapshot(model), "capturing attention probabilities")
    for n, site in enumerate(sites):
        torch.testing.assert_close(got[site], reference[n], rtol=0, atol=0)
    probs = got[sites[0]]
    assert probs.shape == (3, 12, inputs["input_ids"].shape[1], inputs["input_ids"].shape[1])
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), rtol=0, atol=1e-5)
    pads = inputs["attention_mask"][2] == 0
    assert bool(pads.any()) and float(probs[2][..., pads].abs().max()) < 1e-6  # no attention to padding
