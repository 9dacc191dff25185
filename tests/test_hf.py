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
    with torch.no_grad():
        # transformers 5 installs its own output-recording hooks on the first output_attentions=True call
        # (install_output_capuring_hook), so the snapshot is taken after it: it checks capture, not transformers
        reference = model(**inputs, output_attentions=True).attentions
    before = snapshot(model)
    with torch.no_grad():
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


# -- every method that takes dict inputs, on MiniLM, with an oracle (issue #10, item 8) ------------------

SHORT = ["A cat sat.", "I love pizza.", "ok"]              # padded: 5, 6 and 3 tokens
HELD_OUT = ["The dog barked.", "Prices rose.", "Why?"]
SITE = "encoder.layer.3.output.dense"                      # 384 units, (batch, seq, 384)


def _short_metric(tokenizer, model, texts: list[str]) -> tuple:  # type: ignore[no-untyped-def]
    """Padded inputs and a per-example metric: the pooled output's projection on a fixed direction."""
    from seethrough.evidence import per_example

    inputs = tokenize(tokenizer, texts)
    direction = torch.linspace(-1.0, 1.0, 384)

    def score(out, mask):  # type: ignore[no-untyped-def]
        return _pool(out.last_hidden_state, mask) @ direction

    return inputs, per_example(score, mask=inputs["attention_mask"])


def _real_token_values(tokenizer, model, texts: list[str], site: str) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    """Each sentence run alone (no padding): its site values, (seq_i, d)."""
    with torch.no_grad():
        return [st.capture(model, tokenize(tokenizer, [t]), [site])[site][0] for t in texts]


def test_patch_of_one_position_equals_a_hand_written_patch(minilm: tuple) -> None:
    tokenizer, model, _ = minilm
    inputs = tokenize(tokenizer, ["A cat sat on the mat.", "A dog sat on the mat."])
    word = Site("encoder.layer.3", positions=[2])
    before = snapshot(model)
    with torch.no_grad():
        full = st.capture(model, inputs, ["encoder.layer.3"])["encoder.layer.3"]
        ours = st.patch(model, inputs, {word: full[:, 2:3].flip(0)}).last_hidden_state

        def by_hand(value, site):  # type: ignore[no-untyped-def]
            value = value.clone()
            value[:, 2] = full[:, 2].flip(0)
            return value

        with st.hooks(model, {"encoder.layer.3": by_hand}):
            theirs = model(**inputs).last_hidden_state
        whole = st.patch(model, inputs, {"encoder.layer.3": full.flip(0)}).last_hidden_state
        plain = model(**inputs).last_hidden_state
    assert_unchanged(before, snapshot(model), "patch of one position on MiniLM")
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert float((ours - plain).abs().max()) > 0.1  # the swap is not a no-op
    torch.testing.assert_close(whole, plain.flip(0), rtol=0, atol=0)  # a block's output is the whole stream


def test_integrated_gradients_at_an_inner_site_is_complete(minilm: tuple) -> None:
    from seethrough.neurons import integrated_gradients

    tokenizer, model, _ = minilm
    inputs, metric = _short_metric(tokenizer, model, SHORT)
    before = snapshot(model)
    result = integrated_gradients(model, inputs, None, site=SITE, metric=metric, n_steps=8)
    assert_unchanged(before, snapshot(model), "integrated gradients at an inner MiniLM site")
    with torch.no_grad():  # the oracle: F(x) - F(zero at the site), by hand
        f_x = metric(model(**inputs))
        f_base = metric(st.patch(model, inputs, {SITE: lambda v, s: torch.zeros_like(v)}))
    assert result.values.shape == (3, inputs["input_ids"].shape[1], 384)
    # Gauss-Legendre with 8 nodes on a smooth path: completeness to 1% of the score's change
    torch.testing.assert_close(result.values.sum((1, 2)), f_x - f_base, rtol=0, atol=0.01 * float((f_x - f_base).abs().max()))
    torch.testing.assert_close(result.delta, result.values.sum((1, 2)) - (f_x - f_base), rtol=0, atol=1e-4)


def _hand_gradient(model, inputs, metric, site: str) -> tuple:  # type: ignore[no-untyped-def]
    """d metric.sum() / d value at ``site``, through a leaf injected by a patch callback."""
    held = {}

    def leaf(value, s):  # type: ignore[no-untyped-def]
        held["value"] = value.detach().requires_grad_(True)
        return held["value"]

    with torch.enable_grad(), st.hooks(model, {site: leaf}):
        score = metric(model(**inputs)).sum()
    (grad,) = torch.autograd.grad(score, held["value"])
    return held["value"].detach(), grad


def test_saliency_gradient_x_input_smoothgrad_and_vargrad_at_a_site_follow_the_hand_gradient(minilm: tuple) -> None:
    from seethrough.neurons import gradient_x_input, saliency, smoothgrad, vargrad

    tokenizer, model, _ = minilm
    inputs, metric = _short_metric(tokenizer, model, SHORT)
    value, grad = _hand_gradient(model, inputs, metric, SITE)
    before = snapshot(model)
    sal = saliency(model, inputs, None, site=SITE, metric=metric, absolute=False)
    gxi = gradient_x_input(model, inputs, None, site=SITE, metric=metric)
    # noise of 1e-6 moves a GELU network's gradient by far less than 1e-4 of its scale
    smooth = smoothgrad(model, inputs, None, site=SITE, metric=metric, n_samples=2, stdev=1e-6)
    spread = vargrad(model, inputs, None, site=SITE, metric=metric, n_samples=2, stdev=1e-6)
    assert_unchanged(before, snapshot(model), "gradient methods at a MiniLM site")
    assert float(grad.abs().max()) > 0
    torch.testing.assert_close(sal.values, grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gxi.values, grad * value, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(smooth.values, grad, rtol=0, atol=1e-4 * float(grad.abs().max()))
    # nearly equal gradients: their variance is ~0 on the scale of the squared gradient
    assert float(spread.values.abs().max()) < 1e-6 * float(grad.pow(2).max())
    pads = inputs["attention_mask"] == 0  # pad positions feed nothing the pooled metric reads
    assert float(sal.values[pads].abs().max()) < 1e-6 * float(grad.abs().max())


def test_activation_stats_over_a_padded_batch_equal_each_sentence_alone(minilm: tuple) -> None:
    from seethrough.neurons import activation_stats

    tokenizer, model, _ = minilm
    padded = tokenize(tokenizer, SHORT + HELD_OUT)
    alone = _real_token_values(tokenizer, model, SHORT + HELD_OUT, SITE)
    before = snapshot(model)
    stats = activation_stats(model, padded, SITE, quantiles=(0.5,), batch_size=4)  # attention_mask by default
    tokens = activation_stats(model, padded, SITE, quantiles=(0.5,), reduce="none")
    assert_unchanged(before, snapshot(model), "activation_stats on padded MiniLM inputs")
    per_sentence = torch.stack([v.mean(0) for v in alone]).double()   # reduce="mean": one row per sentence
    every_token = torch.cat(alone).double()                            # reduce="none": one row per real token
    assert stats.count == 6 and tokens.count == int(padded["attention_mask"].sum()) == len(every_token)
    # padding changes float32 sums inside BERT's attention slightly: 1e-4 absolute covers it
    torch.testing.assert_close(stats.mean.double(), per_sentence.mean(0), rtol=0, atol=1e-4)
    torch.testing.assert_close(stats.quantile_values[0].double(), per_sentence.quantile(0.5, dim=0), rtol=0, atol=1e-4)
    torch.testing.assert_close(tokens.mean.double(), every_token.mean(0), rtol=0, atol=1e-4)
    torch.testing.assert_close(tokens.std.double(), every_token.std(0, unbiased=False), rtol=0, atol=1e-4)


def test_mean_ablation_averages_real_tokens_only(minilm: tuple) -> None:
    from seethrough.neurons import ablate

    tokenizer, model, _ = minilm
    inputs = tokenize(tokenizer, SHORT)
    means = torch.cat(_real_token_values(tokenizer, model, SHORT, SITE)).mean(0)  # real tokens, unpadded runs
    units = [3, 100, 200]
    before = snapshot(model)
    ours = ablate(model, inputs, SITE, units, ablation="mean").last_hidden_state.detach()
    counted_pads = ablate(model, inputs, SITE, units, ablation="mean", mask=False).last_hidden_state.detach()
    assert_unchanged(before, snapshot(model), "mean ablation on padded MiniLM inputs")

    def by_hand(value, site):  # type: ignore[no-untyped-def]
        value = value.clone()
        value[..., units] = means[units]
        return value

    with torch.no_grad(), st.hooks(model, {SITE: by_hand}):
        theirs = model(**inputs).last_hidden_state
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)  # means of padded vs unpadded runs: 1e-4
    assert float((counted_pads - theirs).abs().max()) > 1e-3  # counting pads would give another mean


@pytest.fixture(scope="module")
def importance(minilm: tuple) -> tuple:
    """Mean-ablation unit importance at SITE on SHORT (the mean over real tokens), with its metric."""
    from seethrough.neurons import unit_importance

    tokenizer, model, _ = minilm
    inputs, metric = _short_metric(tokenizer, model, SHORT)
    before = snapshot(model)
    result = unit_importance(model, inputs, SITE, metric, ablation="mean")
    assert_unchanged(before, snapshot(model), "unit_importance on MiniLM")
    return inputs, metric, result


def test_unit_importance_with_mean_ablation_equals_hand_written_drops(minilm: tuple, importance: tuple) -> None:
    tokenizer, model, _ = minilm
    inputs, metric, result = importance
    means = torch.cat(_real_token_values(tokenizer, model, SHORT, SITE)).mean(0)
    assert result.values.shape == (384,) and result.ablation == "mean"
    with torch.no_grad():
        clean = metric(model(**inputs))
        for unit in [*result.top(2), 0, 383]:
            def by_hand(value, site, unit=unit):  # type: ignore[no-untyped-def]
                value = value.clone()
                value[..., unit] = means[unit]
                return value

            with st.hooks(model, {SITE: by_hand}):
                drop = (clean - metric(model(**inputs))).mean()
            # drops are differences of similar scores: 1e-4 absolute for the padded-vs-alone means
            torch.testing.assert_close(result.values[unit], drop, rtol=0, atol=1e-4)


def test_validate_a_units_finding_held_out_and_in_sample(minilm: tuple, importance: tuple) -> None:
    from seethrough.evidence import validate

    tokenizer, model, _ = minilm
    inputs, metric, result = importance
    (finding,) = result.to_findings(k=3)
    held_out, held_out_metric = _short_metric(tokenizer, model, HELD_OUT)
    before = snapshot(model)
    check = validate(finding, model, held_out, metric=held_out_metric, n_controls=8)
    with pytest.warns(UserWarning, match="discovered on"):
        same = validate(finding, model, inputs, metric=metric, n_controls=8)
    assert_unchanged(before, snapshot(model), "validate on MiniLM")
    assert check.in_sample is False and check.n_in_sample == 0
    assert same.in_sample is True and same.n_in_sample == 3
    units = list(finding.units or ())
    with torch.no_grad():  # the effect is the mean drop under zero ablation of the units, by hand
        for data, score, validation in ((held_out, held_out_metric, check), (inputs, metric, same)):
            def zero(value, site):  # type: ignore[no-untyped-def]
                value = value.clone()
                value[..., units] = 0.0
                return value

            with st.hooks(model, {SITE: zero}):
                ablated = score(model(**data))
            drop = (score(model(**data)) - ablated).double().mean()
            assert validation.effect == pytest.approx(float(drop), abs=1e-6)


def test_steer_at_positions_equals_a_hand_written_addition(minilm: tuple) -> None:
    from seethrough.neurons import steer

    tokenizer, model, _ = minilm
    inputs = tokenize(tokenizer, SHORT)
    direction = torch.linspace(-1.0, 1.0, 384)
    before = snapshot(model)
    ours = steer(model, inputs, Site(SITE, positions=[1]), direction, alpha=2.0).last_hidden_state.detach()
    whole = steer(model, inputs, SITE, direction, alpha=2.0).last_hidden_state.detach()
    assert_unchanged(before, snapshot(model), "steer on MiniLM")

    def at_one(value, site):  # type: ignore[no-untyped-def]
        value = value.clone()
        value[:, 1] += 2.0 * direction
        return value

    with torch.no_grad():
        with st.hooks(model, {SITE: at_one}):
            theirs = model(**inputs).last_hidden_state
        everywhere = st.patch(model, inputs, {SITE: lambda v, s: v + 2.0 * direction}).last_hidden_state
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    torch.testing.assert_close(whole, everywhere, rtol=0, atol=0)
    assert float((ours - whole).abs().max()) > 0.01


def test_frivolous_units_zero_damage_equals_a_hand_written_ablation(minilm: tuple) -> None:
    from seethrough.neurons import frivolous_units

    tokenizer, model, _ = minilm
    inputs, metric = _short_metric(tokenizer, model, SHORT)
    before = snapshot(model)
    report = frivolous_units(model, inputs, SITE, metric=metric)
    assert_unchanged(before, snapshot(model), "frivolous_units on MiniLM")
    with torch.no_grad():
        clean = metric(model(**inputs)).double()
        spread = float((clean - clean.mean()).pow(2).mean().sqrt())
        for unit in (0, 200):
            out = st.patch(model, inputs, {Site(SITE, units=[unit]): torch.zeros(1)})
            damage = float((metric(out).double() - clean).pow(2).mean().sqrt()) / spread
            assert float(report.damage[unit]) == pytest.approx(damage, rel=1e-4, abs=1e-6)



def test_activation_patching_of_positions_equals_hand_written_patches(minilm: tuple) -> None:
    from seethrough.evidence import per_example
    from seethrough.subnetworks import activation_patching

    tokenizer, model, _ = minilm
    clean = tokenize(tokenizer, ["A cat sat on the mat.", "The cat sat on the rug."])
    corrupted = tokenize(tokenizer, ["A dog sat on the mat.", "The dog sat on the rug."])  # same tokens but one
    direction = torch.linspace(-1.0, 1.0, 384)
    metric = per_example(lambda out, mask: _pool(out.last_hidden_state, mask) @ direction,
                         mask=clean["attention_mask"])
    positions = Site("encoder.layer.3", positions=[2, 6])  # the swapped word and a shared one
    before = snapshot(model)
    result = activation_patching(model, clean, corrupted, ["encoder.layer.3", positions], metric)
    assert_unchanged(before, snapshot(model), "activation_patching on MiniLM")
    with torch.no_grad():
        source = st.capture(model, corrupted, ["encoder.layer.3"])["encoder.layer.3"]
        low, high = metric(model(**clean)).double().mean(), metric(model(**corrupted)).double().mean()
        expected = []
        for p in (2, 6):
            def by_hand(value, site, p=p):  # type: ignore[no-untyped-def]
                value = value.clone()
                value[:, p] = source[:, p]
                return value

            with st.hooks(model, {"encoder.layer.3": by_hand}):
                expected.append((metric(model(**clean)).double().mean() - low) / (high - low))
    # the whole block output is the whole stream: patching it gives the corrupted run exactly
    torch.testing.assert_close(result.effects["encoder.layer.3"], torch.tensor(1.0), rtol=0, atol=1e-5)
    torch.testing.assert_close(result.effects[positions], torch.stack(expected).float(), rtol=0, atol=1e-5)
    assert float(result.effects[positions][0]) > float(result.effects[positions][1].abs())  # the word carries it



def _tuning_curve(per_sentence: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """(n_units, 2) by hand: each group's mean activation minus the smaller of the two."""
    means = torch.stack([per_sentence[groups == g].mean(0) for g in (0, 1)], 1)
    return means - means.amin(1, keepdim=True)


def test_polysemanticity_of_equal_length_sentences_is_the_hand_tuning_curve(minilm: tuple) -> None:
    from seethrough.neurons import polysemanticity

    tokenizer, model, _ = minilm
    texts = ["A cat sat.", "A dog ran.", "Prices rose today.", "Shares fell today."]  # 6 tokens each: no padding
    inputs = tokenize(tokenizer, texts)
    assert bool(inputs["attention_mask"].all())
    groups = torch.tensor([0, 0, 1, 1])  # animals, markets: exclusive one-hot features
    before = snapshot(model)
    poly = polysemanticity(model, inputs, SITE, torch.nn.functional.one_hot(groups).double())
    assert_unchanged(before, snapshot(model), "polysemanticity on MiniLM")
    per_sentence = torch.stack([v.mean(0) for v in _real_token_values(tokenizer, model, texts, SITE)]).double()
    torch.testing.assert_close(poly.responses.double(), _tuning_curve(per_sentence, groups), rtol=0, atol=1e-4)


# -- dict-input paths that still count padding (found while writing the tests above; issue #10, item 2) -----


def test_validate_mean_ablation_averages_real_tokens_only(minilm: tuple) -> None:
    from seethrough.evidence import Finding, validate

    tokenizer, model, _ = minilm
    inputs, metric = _short_metric(tokenizer, model, SHORT)
    means = torch.cat(_real_token_values(tokenizer, model, SHORT, SITE)).mean(0)
    units = [3, 100, 200]
    finding = Finding("units", "three units", site=Site(SITE), units=units)
    check = validate(finding, model, inputs, metric=metric, n_controls=2, ablation="mean")

    def by_hand(value, site):  # type: ignore[no-untyped-def]
        value = value.clone()
        value[..., units] = means[units]
        return value

    with torch.no_grad():
        clean = metric(model(**inputs))
        with st.hooks(model, {SITE: by_hand}):
            drop = float((clean - metric(model(**inputs))).double().mean())
    # measured: effect -0.0490 (pads counted) against -0.0875 over real tokens
    assert check.effect == pytest.approx(drop, abs=1e-4)


def test_frivolous_units_max_abs_counts_real_tokens_only(minilm: tuple) -> None:
    from seethrough.neurons import frivolous_units

    tokenizer, model, _ = minilm
    inputs, metric = _short_metric(tokenizer, model, SHORT)
    real = torch.cat(_real_token_values(tokenizer, model, SHORT, SITE)).abs().amax(0)
    report = frivolous_units(model, inputs, SITE, metric=metric)
    # measured: 25 of 384 units have max_abs above their real-token maximum, by up to 0.68 ("ok" is padded)
    torch.testing.assert_close(report.max_abs, real, rtol=0, atol=1e-4)



def test_polysemanticity_of_a_padded_batch_averages_real_tokens_only(minilm: tuple) -> None:
    from seethrough.neurons import polysemanticity

    tokenizer, model, _ = minilm
    texts = SHORT + HELD_OUT  # padded to 6 tokens: "ok" and "Why?" are mostly padding
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    poly = polysemanticity(model, tokenize(tokenizer, texts), SITE, torch.nn.functional.one_hot(groups).double())
    per_sentence = torch.stack([v.mean(0) for v in _real_token_values(tokenizer, model, texts, SITE)]).double()
    torch.testing.assert_close(poly.responses.double(), _tuning_curve(per_sentence, groups), rtol=0, atol=1e-4)
