"""Per-token attribution (issue #10, item 4): token scores, token strings in the table and figure, refusals.

Oracles: the attributed values summed over the embedding axis by hand; integrated gradients'
completeness (each example's token scores sum to F(x) - F(baseline) up to delta); the unpadded
run of each sentence (padding is left out of the table, and its tokens' scores agree).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch
from models import TinyTransformer, tokens

from seethrough.core import InputError, InputTypeError
from seethrough.neurons import AttributionResult, integrated_gradients
from seethrough.neurons.tokens import TokenAttribution

VOCAB = [f"tok{i}" for i in range(16)]


def _strings(ids: torch.Tensor) -> list[list[str]]:
    return [[VOCAB[i] for i in row] for row in ids.tolist()]


def _last_logit(out: torch.Tensor) -> torch.Tensor:
    return out[:, -1, 3]


def test_token_scores_sum_the_embedding_axis_and_keep_completeness() -> None:
    model, inputs = TinyTransformer().eval(), tokens(3, 5)
    result = integrated_gradients(model, inputs, None, site="embed", metric=_last_logit, n_steps=16)
    scores = result.token_scores(_strings(inputs["input_ids"]))
    assert isinstance(scores, TokenAttribution) and scores.scores.shape == (3, 5)
    torch.testing.assert_close(scores.scores, result.values.sum(2), rtol=0, atol=0)
    assert scores.delta is result.delta and scores.site == result.site and scores.method == result.method
    with torch.no_grad():  # completeness: sum over tokens = F(x) - F(0 at the embeddings) + delta
        f_x = _last_logit(model(**inputs))
        zero = torch.zeros(3, 5, 8)
        x = zero
        for block in model.blocks:
            x = block(x, mask=inputs["attention_mask"])
        f_0 = model.unembed(x)[:, -1, 3]
    torch.testing.assert_close(scores.scores.sum(1).double() - result.delta.double(), (f_x - f_0).double(),
                               rtol=1e-5, atol=1e-4)
    frame = scores.to_frame()
    assert list(frame.columns) == ["example", "position", "token", "attribution"] and len(frame) == 15
    assert frame["token"].tolist() == [VOCAB[i] for i in inputs["input_ids"].flatten().tolist()]
    torch.testing.assert_close(torch.tensor(frame["attribution"].to_numpy()), scores.scores.double().flatten())


def test_padding_is_left_out_and_matches_the_unpadded_sentence() -> None:
    model = TinyTransformer().eval()
    inputs = tokens(2, 6, seed=3)
    inputs["attention_mask"][1, 4:] = 0  # the second sentence has 4 real tokens and 2 pads (padded right)
    metric = _masked_mean_logit(inputs["attention_mask"])
    padded = integrated_gradients(model, inputs, None, site="embed", metric=metric, n_steps=8)
    scores = padded.token_scores(_strings(inputs["input_ids"]), attention_mask=inputs["attention_mask"])
    frame = scores.to_frame()
    assert len(frame) == 10 and frame[frame["example"] == 1]["position"].tolist() == [0, 1, 2, 3]
    alone_inputs = {"input_ids": inputs["input_ids"][1:, :4], "attention_mask": inputs["attention_mask"][1:, :4]}
    alone = integrated_gradients(model, alone_inputs, None, site="embed", n_steps=8,
                                 metric=_masked_mean_logit(alone_inputs["attention_mask"]))
    # the same sentence run alone, unpadded: the same per-token scores (float32 sums in another order)
    torch.testing.assert_close(torch.tensor(frame[frame["example"] == 1]["attribution"].to_numpy()),
                               alone.values.sum(2)[0].double(), rtol=1e-5, atol=1e-6)
    fig = scores.plot()
    labels = [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes if ax.get_xticklabels()]
    assert labels[0] == _strings(inputs["input_ids"])[0] and labels[1] == _strings(inputs["input_ids"])[1][:4]
    assert plt.get_fignums() == []


def _masked_mean_logit(mask: torch.Tensor):  # type: ignore[no-untyped-def]
    from seethrough.evidence import per_example

    def fn(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(out.dtype)
        return (out[..., 3] * m).sum(1) / m.sum(1)

    return per_example(fn, mask=mask)


def test_raw_strings_are_refused_in_one_line() -> None:
    model, inputs = TinyTransformer().eval(), tokens(2, 4)
    result = integrated_gradients(model, inputs, None, site="embed", metric=_last_logit, n_steps=4)
    for bad, fragment in (("tok1 tok2 tok3 tok4", "is a str"), (["tok1", "tok2", "tok3", "tok4"], "flat list"),
                          ([["a"] * 4, "abcd"], r"tokens\[1\] is a str")):
        with pytest.raises(InputTypeError, match=fragment) as caught:
            result.token_scores(bad)  # type: ignore[arg-type]
        assert "\n" not in str(caught.value) and "token_strings" in str(caught.value)
    with pytest.raises(InputError, match="3 tokens but the scores have 4 positions"):
        result.token_scores([["a"] * 4, ["a"] * 3])
    with pytest.raises(InputError, match="1 examples but the scores have 2"):
        result.token_scores([["a"] * 4])
    with pytest.raises(InputError, match="attention_mask has shape"):
        result.token_scores([["a"] * 4] * 2, attention_mask=torch.ones(2, 5))
    per_example_only = AttributionResult(torch.ones(2), None, "x")  # (batch,) values: no positions
    with pytest.raises(InputError, match="no position axis"):
        per_example_only.token_scores([["a"]] * 2)
    with pytest.raises(InputTypeError, match="is a str"):  # building the result directly is checked too
        TokenAttribution(torch.zeros(1, 2), "ab", torch.ones(1, 2, dtype=torch.bool), None, "x")  # type: ignore[arg-type]
