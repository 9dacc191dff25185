"""Result factories for issue #12 item 1 (sparsity), joined into tests/test_result_contract.py's FACTORIES."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from torch import nn

from seethrough import subnetworks as sub

HOSTILE = "<script>alert(1)</script>"  # the contract test's hostile names (tests/test_result_contract.py)
HOSTILE_CELL = "</td><img src=x>"


def _sparsity_report() -> Any:
    m = nn.Sequential(OrderedDict([(HOSTILE, nn.Linear(4, 8)), ("act", nn.ReLU()), (HOSTILE_CELL, nn.Linear(8, 3))]))
    return sub.sparsity_report(m)


# class name -> (factory, whether the instance carries a hostile name)
FACTORIES: dict[str, tuple[Callable[[], Any], bool]] = {
    "SparsityReport": (_sparsity_report, True),
}
