"""Hygiene cases for issue #12's patching sweeps: heads, ablations, prefix reuse, attribution patching (joined by hygiene.py)."""

from __future__ import annotations

from typing import Any

import torch
from hygiene import Case
from models import TinyMLP, TinyTransformer, tokens, vectors
from torch import Tensor

from seethrough import Site
from seethrough import subnetworks as sub


def _metric(out: Any) -> Tensor:
    return torch.log_softmax(out, -1)[:, 0]


def _last_token(out: Any) -> Tensor:
    return out[:, -1, 0] - out[:, -1, 1]


def _corrupt(x: Any) -> Any:
    if isinstance(x, dict):
        return {**x, "input_ids": (x["input_ids"] * 3 + 1) % 16}
    return x.flip(0) * -1.5


HEADS = Site("blocks.1.attn.out", point="input", positions=[0, -1])
CHAIN = ["blocks.0", "blocks.1", "unembed"]
RESID = [Site("blocks.0", point="input", positions=[1, 3]), Site("blocks.1", point="input", positions=[-1])]

CASES: list[Case] = [
    Case("activation_patching (heads, resample ablation)", sub.activation_patching, TinyTransformer, tokens,
         lambda m, x: sub.activation_patching(m, x, _corrupt(x), [HEADS], _last_token, n_heads=2,
                                              ablation="resample", seed=1).to_dict(),
         invalid=(lambda m, x: sub.activation_patching(m, x, _corrupt(x), [HEADS], _last_token, n_heads=3),
                  lambda m, x: sub.activation_patching(m, x, _corrupt(x), [HEADS], _last_token, ablation="half"))),
    Case("activation_patching (prefix reuse, train mode)", sub.activation_patching, TinyTransformer, tokens,
         lambda m, x: sub.activation_patching(m, x, _corrupt(x), RESID, _last_token, blocks=CHAIN).to_dict(),
         train_mode=True,
         invalid=(lambda m, x: sub.activation_patching(m, x, _corrupt(x), RESID, _last_token,
                                                       blocks=["blocks.0", "blocks.1"]),
                  lambda m, x: sub.activation_patching(m, x, _corrupt(x), RESID, _last_token, blocks=["blocks.9"]))),
    Case("attribution_patching", sub.attribution_patching, TinyMLP, vectors,
         lambda m, x: sub.attribution_patching(m, x, _corrupt(x), ["act", Site("fc1", units=[0, 2])],
                                               _metric).to_dict(),
         invalid=(lambda m, x: sub.attribution_patching(m, x, x[:2], ["act"], _metric),
                  lambda m, x: sub.attribution_patching(m, x, _corrupt(x), [Site("fc1", units=[99])], _metric))),
    Case("attribution_patching (heads, mean ablation)", sub.attribution_patching, TinyTransformer, tokens,
         lambda m, x: sub.attribution_patching(m, x, _corrupt(x), [HEADS, "blocks.0"], _last_token, n_heads=2,
                                               ablation="mean").to_dict()),
]

EXEMPT: dict[Any, str] = {}
