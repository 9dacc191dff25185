"""Hygiene cases for attention patterns, rollout, flow and the lenses (issue #13 item 4): joined into tests/hygiene.py."""

from __future__ import annotations

import torch
from hygiene import Case
from models import TinyTransformer, tokens

from seethrough import Site
from seethrough import representations as rep
from seethrough.bench.games import routes as route_games
from seethrough.bench.zoo import routes as route_zoo

SITES = [Site("blocks.0.attn", element=1), Site("blocks.1.attn", element=1)]
RESIDUAL = ["blocks.0", "blocks.1"]


def _padded() -> dict:
    x = tokens(4, 5)
    x["attention_mask"][1, 3:] = 0
    return x


def _readout(m: torch.nn.Module) -> object:
    return rep.module_readout(m, ["unembed"])


def _tuned(m: torch.nn.Module, x: dict) -> rep.LensResult:
    return rep.TunedLens(_readout(m), n_steps=3).fit(m, x, RESIDUAL).lens(m, x)


CASES: list[Case] = [
    Case("attention_patterns", rep.attention_patterns, TinyTransformer, _padded,
         lambda m, x: rep.attention_patterns(m, x, SITES), per_example=lambda r: r.values,
         invalid=(lambda m, x: rep.attention_patterns(m, x, ["blocks.9.attn"]),
                  lambda m, x: rep.attention_patterns(m, x, ["blocks.0"]))),
    Case("attention_rollout", rep.attention_rollout, TinyTransformer, _padded,
         lambda m, x: rep.attention_rollout(m, x, SITES), per_example=lambda r: r.values,
         invalid=(lambda m, x: rep.attention_rollout(m, x, SITES, residual=2.0),)),
    Case("attention_flow (train mode)", rep.attention_flow, TinyTransformer, _padded,
         lambda m, x: rep.attention_flow(m, x, SITES), per_example=lambda r: r.values, train_mode=True,
         invalid=(lambda m, x: rep.attention_flow(m, x, SITES, positions=[9]),)),
    Case("logit_lens", rep.logit_lens, TinyTransformer, _padded,
         lambda m, x: rep.logit_lens(m, x, RESIDUAL, _readout(m)), per_example=lambda r: r.logits,
         invalid=(lambda m, x: rep.logit_lens(m, x, ["blocks.0"], _readout(m)),
                  lambda m, x: rep.logit_lens(m, x, RESIDUAL, lambda h: h.sum(-1)))),
    Case("lens_findings", rep.lens_findings, TinyTransformer, _padded,
         lambda m, x: [f.direction for f in rep.lens_findings(m, x, RESIDUAL, _readout(m), 1)],
         invalid=(lambda m, x: rep.lens_findings(m, x, RESIDUAL, _readout(m), 10_000),
                  lambda m, x: rep.lens_findings(m, x, ["blocks.0"], _readout(m), 0))),
    Case("TunedLens (fit and lens)", rep.TunedLens, TinyTransformer, _padded, _tuned,
         invalid=(lambda m, x: rep.TunedLens(_readout(m)).lens(m, x),
                  lambda m, x: rep.TunedLens(_readout(m), n_steps=-1).fit(m, x, RESIDUAL))),
    Case("blank_out_importance", route_games.blank_out_importance, lambda: route_zoo.RouteTransformer(16, 10),
         lambda: torch.randint(0, 16, (3, 10), generator=torch.Generator().manual_seed(0)),
         lambda m, x: route_games.blank_out_importance(m, x)),
    Case("rotated_twin", route_zoo.rotated_twin, lambda: route_zoo.ResidualNet(16, 10),
         lambda: torch.zeros(2, 16), lambda m, x: route_zoo.rotated_twin(m, 0)[1], runs_forward=False,
         invalid=(lambda m, x: route_zoo.rotated_twin(torch.nn.Identity(), 0),)),
]

EXEMPT: dict = {
    rep.AttentionMaps: "a result dataclass",
    rep.LensResult: "a result dataclass",
    rep.rollout: "composes attention tensors; takes no model",
    rep.flow: "max-flows over attention tensors; takes no model",
    rep.module_readout: "looks up modules by path; runs nothing (the lenses that call it are in the table)",
    route_zoo.RouteTransformer: "a model class",
    route_zoo.ResidualNet: "a model class",
    route_zoo.route_task: "builds data",
    route_zoo.teacher_task: "builds data",
    route_zoo.trained_route_transformer: "builds a new model",
    route_zoo.trained_residual_net: "builds a new model",
}
