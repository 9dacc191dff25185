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


# -- per-token attribution of a sentence-similarity score (issue #10, item 4) -----------------------------

PAIRS = (["A cat sat on the mat.", "The stock market fell sharply.", "I love pizza."],
         ["A kitten rested on a rug.", "Shares dropped today.", "Pizza is my favourite food."])


def _pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask[..., None].to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1)


@pytest.fixture(scope="module")
def similarity() -> tuple:
    """MiniLM, the first sentences (padded), the pooled embeddings of their partners, and the metric."""
    from seethrough.evidence import per_example

    tokenizer, model = load_minilm()
    inputs, partners = tokenize(tokenizer, PAIRS[0]), tokenize(tokenizer, PAIRS[1])
    with torch.no_grad():
        reference = _pool(model(**partners).last_hidden_state, partners["attention_mask"])

    def cosine(out, mask, reference):  # type: ignore[no-untyped-def]
        return torch.cosine_similarity(_pool(out.last_hidden_state, mask), reference, dim=1)

    metric = per_example(cosine, mask=inputs["attention_mask"], reference=reference)
    return tokenizer, model, inputs, reference, cosine, metric


def test_per_token_ig_of_a_similarity_matches_captum_with_additional_forward_args(similarity: tuple) -> None:
    from captum.attr import IntegratedGradients, LayerIntegratedGradients

    from seethrough.hf import token_strings
    from seethrough.neurons import integrated_gradients

    tokenizer, model, inputs, reference, cosine, metric = similarity
    mask = inputs["attention_mask"]
    assert bool((mask == 0).any())  # padded: the pooled score needs the per-example mask
    before = snapshot(model)
    # 1) at the word embeddings, zero baseline: Captum's IntegratedGradients on inputs_embeds
    ours = integrated_gradients(model, inputs, None, site="embeddings.word_embeddings", metric=metric, n_steps=16)
    words = st.capture(model, inputs, ["embeddings.word_embeddings"])["embeddings.word_embeddings"]

    def from_embeds(embeds, mask, reference):  # type: ignore[no-untyped-def]
        return cosine(model(inputs_embeds=embeds, attention_mask=mask, token_type_ids=torch.zeros_like(mask)),
                      mask, reference)

    theirs = IntegratedGradients(from_embeds).attribute(words, baselines=torch.zeros_like(words), n_steps=16,
                                                        additional_forward_args=(mask, reference))
    torch.testing.assert_close(ours.values, theirs.detach(), rtol=1e-4, atol=1e-7)
    # 2) at the embeddings module, baseline = the [PAD] sentence keeping [CLS]/[SEP]: LayerIntegratedGradients
    ids = inputs["input_ids"]
    base_ids = ids.masked_fill((ids != tokenizer.cls_token_id) & (ids != tokenizer.sep_token_id),
                               tokenizer.pad_token_id)
    baseline = st.capture(model, dict(inputs, input_ids=base_ids), ["embeddings"])["embeddings"]
    layer = integrated_gradients(model, inputs, None, site="embeddings", baseline=baseline, metric=metric, n_steps=16)

    def from_ids(ids, mask, reference):  # type: ignore[no-untyped-def]
        return cosine(model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)), mask, reference)

    theirs = LayerIntegratedGradients(from_ids, model.embeddings).attribute(
        ids, baselines=base_ids, additional_forward_args=(mask, reference), n_steps=16)
    torch.testing.assert_close(layer.values, theirs.detach(), rtol=1e-4, atol=1e-7)
    assert_unchanged(before, snapshot(model), "per-token integrated gradients on MiniLM")
    # per-token scores: the embedding axis summed, the tokens carried, padding left out
    strings = token_strings(tokenizer, inputs)
    assert strings[0][:3] == ["[CLS]", "a", "cat"] and strings[2][-1] == "[PAD]"
    scores = layer.token_scores(strings, attention_mask=mask)
    frame = scores.to_frame()
    assert len(frame) == int(mask.sum()) and "[PAD]" not in set(frame["token"])
    torch.testing.assert_close(scores.scores, layer.values.sum(2), rtol=0, atol=0)
    with pytest.raises(st.InputTypeError, match="token_strings"):
        layer.token_scores(PAIRS[0][0])  # a raw sentence is refused in one line


def test_conductance_through_the_embeddings_matches_captum(similarity: tuple) -> None:
    from captum.attr import LayerConductance

    from seethrough.neurons import conductance

    tokenizer, model, inputs, reference, cosine, metric = similarity
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    base_ids = ids.masked_fill((ids != tokenizer.cls_token_id) & (ids != tokenizer.sep_token_id),
                               tokenizer.pad_token_id)
    baseline = st.capture(model, dict(inputs, input_ids=base_ids), ["embeddings"])["embeddings"]
    before = snapshot(model)
    ours = conductance(model, inputs, None, site="encoder.layer.2", path_site="embeddings", baseline=baseline,
                       metric=metric, n_steps=16)
    assert_unchanged(before, snapshot(model), "conductance on MiniLM")
    assert ours.values.shape == (3, ids.shape[1], 384)
    assert float(ours.delta.abs().max()) < 0.05  # a layer the whole score flows through: nearly complete

    def from_embeddings(embeddings, ids, mask, reference):  # type: ignore[no-untyped-def]
        kwargs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
        return cosine(st.patch(model, kwargs, {"embeddings": embeddings}), mask, reference)

    embeddings = st.capture(model, inputs, ["embeddings"])["embeddings"]
    theirs = LayerConductance(from_embeddings, model.encoder.layer[2]).attribute(
        embeddings, baselines=baseline, additional_forward_args=(ids, mask, reference), n_steps=16,
        method="riemann_trapezoid")
    torch.testing.assert_close(ours.values, theirs.detach(), rtol=1e-4, atol=1e-7)


# -- padding never counts in dataset summaries (issue #10, item 2) ---------------------------------------

SENTENCES = ["The cat sat on the mat.", "Interpretability tools generate hypotheses, not conclusions.", "ok",
             "I love pizza.", "The stock market fell sharply after the announcement on Monday morning.",
             "Shares dropped.", "A kitten rested on a rug by the fire.", "Why?"]


def test_top_exemplars_over_a_padded_batch_skip_pads_and_equal_each_sentence_alone(minilm: tuple) -> None:
    from seethrough.neurons import top_exemplars

    tokenizer, model, _ = minilm
    site = "encoder.layer.3.intermediate"
    padded = tokenize(tokenizer, SENTENCES)
    lengths = padded["attention_mask"].sum(1)
    before = snapshot(model)
    ex = top_exemplars(model, padded, site, k=3, batch_size=3)  # the attention_mask is the default mask
    assert_unchanged(before, snapshot(model), "top_exemplars on padded MiniLM inputs")
    assert ex.positions is not None and not bool((ex.positions[..., 0] >= lengths[ex.indices]).any())  # no [PAD]
    alone = [st.capture(model, tokenize(tokenizer, [s]), [site])[site][0] for s in SENTENCES]
    best = torch.stack([v.max(0).values for v in alone])  # (n_sentences, 1536): each sentence unpadded
    where = torch.stack([v.max(0).indices for v in alone])
    order = torch.sort(best, dim=0, descending=True, stable=True).indices[:3]
    assert torch.equal(ex.indices, order) and torch.equal(ex.positions[..., 0], where.gather(0, order))
    # padding changes float32 sums inside BERT's attention slightly: 1e-4 absolute covers it
    torch.testing.assert_close(ex.values, best.gather(0, order), rtol=0.0, atol=1e-4)
    unmasked = top_exemplars(model, padded, site, k=3, mask=False)  # the trial's failure, for contrast
    assert unmasked.positions is not None and bool((unmasked.positions[..., 0] >= lengths[unmasked.indices]).any())
