"""Hygiene cases for feature synthesis (issue #5, part 2): joined into tests/hygiene.py's table."""

from __future__ import annotations

import torch
from hygiene import Case
from models import TinyCNN, TinyMLP, TinyTransformer, images, tokens, vectors

from seethrough.bench.games import synthesis as synthesis_games
from seethrough.bench.zoo import fooling, glyphs
from seethrough.neurons import prompts, synthesis


def _raise_objective(value: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("injected failure in a progress callback")


CASES: list[Case] = [
    Case("synthesize (mlp, from init)", synthesis.synthesize, TinyMLP, vectors,
         lambda m, x: synthesis.synthesize(m, synthesis.unit_objective("act", 2), shape=(4,), init=x.clamp(0, 1),
                                           steps=4).images,
         per_example=lambda images: images,
         invalid=(lambda m, x: synthesis.synthesize(m, synthesis.unit_objective("act", 99), shape=(4,), steps=2),
                  lambda m, x: synthesis.synthesize(m, synthesis.unit_objective("nope", 0), shape=(4,)),
                  lambda m, x: synthesis.synthesize(m, synthesis.logit_objective(0), shape=(4,), steps=2,
                                                    progress=lambda step, v: _raise_objective(v)))),
    Case("synthesize (cnn, fourier, transforms, train mode)", synthesis.synthesize, TinyCNN, images,
         lambda m, x: synthesis.synthesize(
             m, [synthesis.channel_objective("conv", 1), synthesis.logit_objective(2)], shape=(1, 6, 6), n=2,
             steps=3, param="fourier", transforms=synthesis.Transforms(jitter=1, scale=0.1, rotate=10.0), tv=0.1,
             l2=0.1, blur=0.1, diversity=0.5).images,
         train_mode=True),
    Case("synthesize (cnn, direction)", synthesis.synthesize, TinyCNN, images,
         lambda m, x: synthesis.synthesize(m, synthesis.direction_objective("act", torch.ones(4)), shape=(1, 6, 6),
                                           init=x.sigmoid(), steps=3).objective_values,
         per_example=lambda values: values[:, None]),
]

# The soft prompt starts from random tokens drawn for the whole batch, so a batch of n and n batches of
# one start differently: no per-example check (determinism per seed is checked in test_prompts.py).
CASES.append(
    Case("synthesize_prompt (transformer, train mode)", prompts.synthesize_prompt, TinyTransformer, tokens,
         lambda m, x: prompts.synthesize_prompt(m, synthesis.unit_objective("unembed", 3, position=(4,)), x,
                                                site="embed", embedding=m.embed.weight, steps=3).embeddings,
         invalid=(lambda m, x: prompts.synthesize_prompt(m, synthesis.unit_objective("unembed", 99), x,
                                                         site="embed", embedding=m.embed.weight, steps=2),
                  lambda m, x: prompts.synthesize_prompt(m, synthesis.logit_objective(0), x, site="embed",
                                                         embedding=m.embed.weight, steps=2,
                                                         progress=lambda step, v: _raise_objective(v))),
         train_mode=True))

EXEMPT: dict = {
    prompts.SoftPrompt: "a result dataclass",
    synthesis.Objective: "a value object; its builders take no model",
    synthesis.unit_objective: "builds an objective; takes no model",
    synthesis.channel_objective: "builds an objective; takes no model",
    synthesis.direction_objective: "builds an objective; takes no model",
    synthesis.logit_objective: "builds an objective; takes no model",
    synthesis.Transforms: "transforms images; takes no model",
    synthesis.Synthesis: "a result dataclass",
}

for _module in (glyphs, fooling):
    for _name in _module.__all__:
        if callable(getattr(_module, _name)):  # FAMILIES and the shape tables are data
            EXEMPT[getattr(_module, _name)] = "zoo: builds data, triggers or new models (tested in tests/bench)"
for _name in synthesis_games.__all__:
    EXEMPT[getattr(synthesis_games, _name)] = "a game, its judge or its scorer (tested in tests/bench)"
