"""Result factories for issue #13 items 1, 2, 5 (steering, TCAV over several concepts), joined into FACTORIES.

Each builds its result on an MLP whose ReLU carries the contract check's hostile name, so the name reaches
the result's frame, HTML and JSON (and a concept is named with the other hostile string).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from models import vectors
from torch import nn

from seethrough import representations

HOSTILE = "<script>alert(1)</script>"  # the contract test's hostile names (tests/test_result_contract.py)
HOSTILE_CELL = "</td><img src=x>"


def _hostile_mlp() -> nn.Module:
    torch.manual_seed(0)  # the factory's own model; nothing under test reads the global RNG
    return nn.Sequential(OrderedDict([("fc1", nn.Linear(4, 8)), (HOSTILE, nn.ReLU()), ("fc2", nn.Linear(8, 3))]))


def _steering() -> Any:
    x = vectors(20)
    return representations.steer(_hostile_mlp(), x, torch.ones(8), HOSTILE, n_controls=3)


def _concept_tests() -> Any:
    x = vectors(24)
    return representations.tcav_concepts(_hostile_mlp(), {HOSTILE_CELL: x[:6] + 1, "plain": x[6:12]}, x[12:], HOSTILE,
                                         x, 1, n_random=39, n_runs=2)


# class name -> (factory, whether the instance carries a hostile name)
FACTORIES: dict[str, tuple[Callable[[], Any], bool]] = {
    "Steering": (_steering, True),
    "ConceptTests": (_concept_tests, True),
}
