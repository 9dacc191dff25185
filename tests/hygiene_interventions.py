"""Hygiene cases for issue #9 item 1: the intervention edits of core, run through `patch` (joined by hygiene.py)."""

from __future__ import annotations

from typing import Any

import torch
from hygiene import Case
from models import TinyCNN, TinyMLP, TinyTransformer, images, tokens, vectors
from torch import Tensor

import seethrough as st
from seethrough import Site
from seethrough.core import interventions as iv


def _raise(value: Tensor, site: Site) -> None:
    raise RuntimeError("injected failure in a user edit")


CASES: list[Case] = [
    Case("zero_ablation", iv.zero_ablation, TinyMLP, vectors,
         lambda m, x: st.patch(m, x, {"act": iv.zero_ablation([1, 4])}), per_example=lambda out: out,
         invalid=(lambda m, x: st.patch(m, x, {"act": iv.zero_ablation([9])}),)),
    Case("zero_ablation (cnn channels, train mode)", iv.zero_ablation, TinyCNN, images,
         lambda m, x: st.patch(m, x, {"conv": iv.zero_ablation([0, 3])}), per_example=lambda out: out,
         train_mode=True),
    Case("mean_ablation", iv.mean_ablation, TinyMLP, vectors,
         lambda m, x: st.patch(m, x, {"act": iv.mean_ablation(torch.linspace(0, 1, 8), [2])}),
         per_example=lambda out: out,
         invalid=(lambda m, x: st.patch(m, x, {"act": iv.mean_ablation(torch.ones(3), [2])}),)),
    Case("resample_ablation (one reference row)", iv.resample_ablation, TinyMLP, vectors,
         lambda m, x: st.patch(m, x, {"act": iv.resample_ablation(torch.ones(1, 8), [0, 5], seed=2)}),
         per_example=lambda out: out,
         invalid=(lambda m, x: st.patch(m, x, {"act": iv.resample_ablation(torch.ones(4, 3), [0])}),)),
    Case("resample_ablation (transformer)", iv.resample_ablation, TinyTransformer, tokens,
         lambda m, x: st.patch(m, x, {"blocks.0": iv.resample_ablation(torch.arange(160.0).view(4, 5, 8) / 160,
                                                                       seed=1)})),
    Case("replace_slice (transformer positions)", iv.replace_slice, TinyTransformer, tokens,
         lambda m, x: st.patch(m, x, {"blocks.0": iv.replace_slice(torch.zeros(8), units=[1], positions=[0, 2])}),
         per_example=lambda out: out,
         invalid=(lambda m, x: st.patch(m, x, {"blocks.0": iv.replace_slice(torch.zeros(8), positions=[9])}),)),
    Case("project_out", iv.project_out, TinyMLP, vectors,
         lambda m, x: st.patch(m, x, {"act": iv.project_out(torch.linspace(-1, 1, 8))}), per_example=lambda out: out,
         invalid=(lambda m, x: st.patch(m, x, {"act": iv.project_out(torch.ones(5))}),)),
    Case("add_direction (cnn, train mode)", iv.add_direction, TinyCNN, images,
         lambda m, x: st.patch(m, x, {"conv": iv.add_direction(torch.ones(4), alpha=0.5)}),
         per_example=lambda out: out, train_mode=True),
    Case("patch_each", iv.patch_each, TinyMLP, vectors,
         lambda m, x: iv.patch_each(m, x, "act", [iv.zero_ablation([u]) for u in range(8)], lambda out: out[:, 0],
                                    max_rows=12),
         per_example=lambda scores: scores.T,
         invalid=(lambda m, x: iv.patch_each(m, x, "act", [_raise], lambda out: out[:, 0]),
                  lambda m, x: iv.patch_each(m, x, "act", [iv.zero_ablation()], lambda out: out[:1, 0]),
                  lambda m, x: iv.patch_each(m, x, "nope", [iv.zero_ablation()], lambda out: out[:, 0]))),
    Case("patch_each (transformer, train mode)", iv.patch_each, TinyTransformer, tokens,
         lambda m, x: iv.patch_each(m, x, Site("blocks.1", positions=[1]), [iv.project_out(torch.ones(8))],
                                    lambda out: out[:, -1, 0]),
         per_example=lambda scores: scores.T, train_mode=True),
]

EXEMPT: dict[Any, str] = {
    iv.along_units: "reshapes a vector for a value; takes no model",
    iv.unit_means: "statistics over a tensor; takes no model",
    iv.unit_values: "averages a tensor; takes no model",
    iv.resample_indices: "draws indices from its own seeded generator; takes no model",
    iv.check_ablation: "checks an argument; takes no model",
    iv.check_position_mask: "checks an argument; takes no model",
    iv.position_mask: "reads a mask from inputs and a value; takes no model",
    iv.resample_draws: "draws reference rows or tokens from its own seeded generator; takes no model",
}
