"""Result factories for issue #15 item 1 (joined into tests/test_result_contract.py's FACTORIES).

Each factory runs on an MLP whose linear layers are named with the contract test's hostile strings, so
parameter names (and the unit layer's path) carry them into every table, figure and HTML view.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from models import vectors
from torch import nn

from seethrough import weights

HOSTILE = "<script>alert(1)</script>"  # the contract test's hostile names (tests/test_result_contract.py)
HOSTILE_CELL = "</td><img src=x>"


def _model() -> nn.Module:
    return nn.Sequential(OrderedDict([(HOSTILE, nn.Linear(4, 8)), ("act", nn.ReLU()), (HOSTILE_CELL, nn.Linear(8, 3))]))


def _tasks() -> list[tuple[torch.Tensor, torch.Tensor]]:
    x = vectors(6)
    return [(x, torch.arange(6) % 3), (x, (torch.arange(6) + 1) % 3)]


def _sequential() -> Any:
    return weights.train_sequential(_model(), _tasks(), penalty="si", epochs=2, batch_size=3)


def _allocation() -> Any:
    return weights.allocate(_model(), _tasks(), epochs=2, retrain_epochs=1, batch_size=3)


def _unit_allocation() -> Any:
    return weights.unit_allocation(_model(), _tasks(), HOSTILE)


FACTORIES: dict[str, tuple[Any, bool]] = {
    "SequentialTraining": (_sequential, True),
    "Allocation": (_allocation, True),
    "UnitAllocation": (_unit_allocation, True),
}
