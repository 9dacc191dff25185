"""Result factories for issue #15 items 2-4 (pruning, lottery tickets, mask validation), joined into FACTORIES.

Each builds its result on an MLP whose layers carry the contract check's hostile names, so the names
reach the result's frame, HTML and JSON.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from models import vectors
from torch import nn

from seethrough import weights

HOSTILE = "<script>alert(1)</script>"  # the contract test's hostile names (tests/test_result_contract.py)
HOSTILE_CELL = "</td><img src=x>"


def _hostile_layers() -> nn.Module:
    return nn.Sequential(OrderedDict([(HOSTILE, nn.Linear(4, 8)), ("act", nn.ReLU()), (HOSTILE_CELL, nn.Linear(8, 3))]))


def _scores(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().abs() for n, p in m.named_parameters()}


def _pruning_mask() -> Any:
    m = _hostile_layers()
    return weights.prune(m, _scores(m), sparsity=0.4)


def _sparsity_curve() -> Any:
    m = _hostile_layers()
    x = vectors()
    return weights.sparsity_curve(m, x, torch.arange(5) % 3, _scores(m), sparsities=(0.0, 0.5))


def _lottery_ticket() -> Any:
    x = vectors(12)
    return weights.lottery_ticket(_hostile_layers(), x, torch.arange(12) % 3, rounds=2, rate=0.5, steps=3,
                                  batch_size=4)


def _mask_validation() -> Any:
    m = _hostile_layers()
    x = vectors()
    mask = weights.prune(m, _scores(m), sparsity=0.5).masks
    return weights.validate_mask(m, mask, {"a": (x, weights.correct(torch.arange(5) % 3))}, task="a", n_controls=3)


# class name -> (factory, whether the instance carries a hostile name)
FACTORIES: dict[str, tuple[Callable[[], Any], bool]] = {
    "PruningMask": (_pruning_mask, True),
    "SparsityCurve": (_sparsity_curve, False),
    "LotteryTicket": (_lottery_ticket, True),
    "MaskValidation": (_mask_validation, False),
}
