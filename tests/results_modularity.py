"""Result factories for issue #12 items 2-3 (lesion tests, functional graphs, enforced modularity), joined into FACTORIES.

Each builds its result on an MLP whose layers carry the contract check's hostile names, so the names reach
the result's frame, HTML and JSON where the result shows layer paths.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from models import vectors
from torch import nn

from seethrough import subnetworks as sub

HOSTILE = "<script>alert(1)</script>"  # the contract test's hostile names (tests/test_result_contract.py)
HOSTILE_CELL = "</td><img src=x>"


def _hostile_layers() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict([(HOSTILE, nn.Linear(4, 8)), ("act", nn.ReLU()), (HOSTILE_CELL, nn.Linear(8, 3))]))


def _lesion_test() -> Any:
    metrics = {HOSTILE: lambda out: out[:, 0], HOSTILE_CELL: lambda out: out[:, 1]}
    return sub.lesion_test(_hostile_layers(), {HOSTILE: np.arange(8) % 2}, vectors(), metrics, n_controls=4)


def _unit_graph() -> Any:
    return sub.functional_graph(_hostile_layers(), vectors(), method="ablation")


def _modular_training() -> Any:
    x = vectors(12)
    return sub.train_modular(_hostile_layers(), x, torch.arange(12) % 3, n_steps=3, n_shuffles=2)


# class name -> (factory, whether the instance carries a hostile name)
FACTORIES: dict[str, tuple[Callable[[], Any], bool]] = {
    "LesionTest": (_lesion_test, True),
    "UnitGraph": (_unit_graph, True),
    "ModularTraining": (_modular_training, False),
}
