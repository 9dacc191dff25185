"""per_example: metrics from per-example data on copy-major stacked rows (issue #10).

Oracles: the hand-tiled metric, and Captum's IntegratedGradients with additional_forward_args
(which expands per-example arguments itself) for a pooled-sentence-similarity score.
"""

from __future__ import annotations

import pytest
import torch
from models import TinyTransformer, tokens
from torch import Tensor

from seethrough.core.errors import InputError, InputTypeError
from seethrough.evidence import per_example
from seethrough.neurons import integrated_gradients


def _pooled_cosine(hidden: Tensor, mask: Tensor, reference: Tensor) -> Tensor:
    """Cosine of the mask-weighted mean of ``hidden`` (batch, seq, d) with ``reference`` (batch, d)."""
    weights = mask.to(hidden.dtype)[..., None]
    pooled = (hidden * weights).sum(1) / weights.sum(1)
    return torch.nn.functional.cosine_similarity(pooled, reference, dim=-1)


def test_rows_are_tiled_copy_major() -> None:
    seen = {}

    def fn(output: Tensor, ids: Tensor) -> Tensor:
        seen["ids"] = ids
        return output[:, 0]

    metric = per_example(fn, ids=torch.tensor([10, 11, 12]))
    metric(torch.zeros(9, 2))
    assert seen["ids"].tolist() == [10, 11, 12] * 3


def test_integrated_gradients_of_a_pooled_similarity_equals_captum() -> None:
    from captum.attr import IntegratedGradients

    model, inputs = TinyTransformer().eval(), tokens(batch=3, seq=5)
    inputs["attention_mask"][2, 3:] = 0  # a padded sentence
    reference = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    metric = per_example(lambda out, mask, ref: _pooled_cosine(out, mask, ref),
                         mask=inputs["attention_mask"], ref=reference)
    ours = integrated_gradients(model, inputs, None, site="embed", metric=metric, n_steps=16)

    def from_embeddings(embedded: Tensor, mask: Tensor, ref: Tensor) -> Tensor:
        h = embedded
        for block in model.blocks:
            h = block(h, mask=mask)
        return _pooled_cosine(model.unembed(h), mask, ref)

    embedded = model.embed(inputs["input_ids"]).detach()
    theirs, delta = IntegratedGradients(from_embeddings).attribute(
        embedded, baselines=torch.zeros_like(embedded), additional_forward_args=(inputs["attention_mask"], reference),
        n_steps=16, method="gausslegendre", return_convergence_delta=True)
    torch.testing.assert_close(ours.values, theirs, rtol=1e-4, atol=1e-6)  # float32 sums in another order
    torch.testing.assert_close(ours.delta, delta.to(ours.delta.dtype), rtol=1e-4, atol=1e-5)


def test_bad_uses_are_refused_in_one_line() -> None:
    metric = per_example(lambda out, y: out[:, 0], y=torch.arange(4))
    with pytest.raises(InputError, match="got 6 output rows, not a multiple of the 4 examples"):
        metric(torch.zeros(6, 2))
    with pytest.raises(InputError, match=r"must return one score per row, \(8,\)"):
        per_example(lambda out, y: out, y=torch.arange(4))(torch.zeros(8, 2))
    with pytest.raises(InputError, match="disagree on the number of examples"):
        per_example(lambda out, a, b: out[:, 0], a=torch.arange(3), b=torch.arange(4))
    with pytest.raises(InputTypeError, match="must be a tensor with the examples on dim 0"):
        per_example(lambda out, a: out[:, 0], a=torch.tensor(3))
    with pytest.raises(InputError, match="at least one per-example tensor"):
        per_example(lambda out: out[:, 0])
