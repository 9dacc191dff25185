"""Result factory for `TwinComparison` (issue #14 item 4), joined into FACTORIES: hostile measurement names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from seethrough.representations import adversarial

HOSTILE = "<script>alert(1)</script>"  # the contract test's hostile names (tests/test_result_contract.py)


def _comparison() -> adversarial.TwinComparison:
    a, b = nn.Linear(2, 1), nn.Linear(2, 1)
    return adversarial.compare_twins([(a, b), (b, a), (a, a)],
                                     lambda m, i: {HOSTILE: float(m.weight.sum()) + i, "</td><img src=x>": 1.0},
                                     n_boot=50)


FACTORIES: dict[str, Callable[[], Any]] = {"TwinComparison": _comparison}
