"""Soft-prompt synthesis in embedding space (issue #10, item 4) on TinyTransformer.

Oracles: random soft prompts in the same ball (the optimised prompt beats all of them); the model
run on the projected token ids (the projected objective is the model's own score on real tokens);
a brute-force nearest-neighbour search and cosine similarity by hand; the same seed twice.
"""

from __future__ import annotations

import pytest
import torch
from hygiene import assert_unchanged, snapshot
from models import TinyTransformer, seeded, tokens

from seethrough import patch
from seethrough.core import InputError
from seethrough.neurons import unit_objective
from seethrough.neurons.prompts import SoftPrompt, synthesize_prompt

OBJECTIVE = unit_objective("unembed", 3, position=(4,))  # logit 3 at the last position


def _run(model: TinyTransformer, **options: object) -> SoftPrompt:
    return synthesize_prompt(model, OBJECTIVE, tokens(2, 5), site="embed", embedding=model.embed.weight,
                             **{"steps": 40, "lr": 0.1, **options})  # type: ignore[arg-type]


def test_objective_rises_above_random_soft_prompts_and_the_gap_is_the_models_own() -> None:
    model = TinyTransformer().eval()
    inputs = tokens(2, 5)
    before = snapshot(model)
    result = _run(model)
    assert_unchanged(before, snapshot(model), "synthesize_prompt")
    table = model.embed.weight.detach()
    limit = table.norm(dim=1).max()
    assert bool((result.embeddings.norm(dim=2) <= limit * (1 + 1e-5)).all())  # stays in the ball of real tokens
    # 200 random soft prompts in the same ball: directions uniform, norms up to the largest token's
    gen = seeded(7)
    draws = torch.randn(200, 2, 5, 8, generator=gen)
    draws = draws / draws.norm(dim=3, keepdim=True) * limit * torch.rand(200, 2, 5, 1, generator=gen)
    with torch.no_grad():
        random_values = torch.stack([patch(model, inputs, {"embed": d})[:, 4, 3] for d in draws])
    assert bool((result.objective_values > random_values.max(0).values).all())
    assert result.history[-1].mean() > result.history[0].mean()
    # the projection: the nearest rows by brute force, and the model's own score on those tokens
    for i in range(2):
        for j in range(5):
            d = (table - result.embeddings[i, j]).norm(dim=1)
            assert int(result.token_ids[i, j]) == int(d.argmin())
            torch.testing.assert_close(result.distance[i, j], d.min(), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(result.cosine[i, j], torch.cosine_similarity(
                result.embeddings[i, j], table[result.token_ids[i, j]], dim=0), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        own = model(result.token_ids, inputs["attention_mask"])[:, 4, 3]
    torch.testing.assert_close(result.projected_values, own, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.gap, result.objective_values - own, rtol=1e-5, atol=1e-5)
    frame = result.to_frame()
    assert len(frame) == 10 and {"token", "l2_distance", "cosine", "gap"} <= set(frame.columns)


def test_determinism_by_seed_and_positions() -> None:
    model = TinyTransformer().eval()
    a, b, c = _run(model, seed=3), _run(model, seed=3), _run(model, seed=4)
    assert torch.equal(a.embeddings, b.embeddings) and torch.equal(a.token_ids, b.token_ids)
    assert not torch.equal(a.embeddings, c.embeddings)
    part = _run(model, positions=[0, -1], vocabulary=[f"t{i}" for i in range(16)])
    assert part.positions == (0, 4) and part.embeddings.shape == (2, 2, 8)
    assert part.tokens == tuple(tuple(f"t{int(t)}" for t in row) for row in part.token_ids)
    inputs = tokens(2, 5)
    ids = inputs["input_ids"].clone()
    ids[:, [0, 4]] = part.token_ids  # the other positions keep their own tokens
    with torch.no_grad():
        torch.testing.assert_close(part.projected_values, model(ids, inputs["attention_mask"])[:, 4, 3],
                                   rtol=1e-5, atol=1e-5)


def test_bad_arguments_are_refused_before_work() -> None:
    model = TinyTransformer().eval()
    calls: list[int] = []
    model.register_forward_pre_hook(lambda *a: calls.append(1))
    weight = model.embed.weight
    with pytest.raises(InputError, match="NaN"):
        synthesize_prompt(model, OBJECTIVE, tokens(), site="embed", embedding=torch.full((16, 8), float("nan")))
    with pytest.raises(InputError, match="reads"):
        synthesize_prompt(model, unit_objective("embed", 0), tokens(), site="embed", embedding=weight)
    with pytest.raises(KeyError, match="close matches"):
        synthesize_prompt(model, OBJECTIVE, tokens(), site="embedd", embedding=weight)
    with pytest.raises(InputError, match="steps"):
        synthesize_prompt(model, OBJECTIVE, tokens(), site="embed", embedding=weight, steps=0)
    with pytest.raises(InputError, match="vocabulary"):
        synthesize_prompt(model, OBJECTIVE, tokens(), site="embed", embedding=weight, vocabulary=["a"])
    with pytest.raises(TypeError, match="objective"):  # InputTypeError, or the type checker under pytest
        synthesize_prompt(model, "logit 3", tokens(), site="embed", embedding=weight)  # type: ignore[arg-type]
    assert calls == []
    with pytest.raises(InputError, match="positions"):
        synthesize_prompt(model, OBJECTIVE, tokens(), site="embed", embedding=weight, positions=[9])
    with pytest.raises(InputError, match=r"\(batch, seq, 8\)"):
        synthesize_prompt(model, OBJECTIVE, tokens(), site="blocks.0.mlp.0", embedding=weight)
    with pytest.raises(InputError, match=r"\(batch, seq, 5\) token embeddings matching"):
        synthesize_prompt(model, OBJECTIVE, tokens(), site="embed", embedding=torch.zeros(16, 5))
