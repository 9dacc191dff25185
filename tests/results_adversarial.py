"""Result factories for `TwinComparison` (issue #14 item 4: hostile measurement names) and `Leakage` (item 3)."""

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


FACTORIES: dict[str, tuple[Callable[[], Any], bool]] = {"TwinComparison": (_comparison, True)}


def _leakage() -> Any:
    import torch

    from seethrough.representations import bottleneck

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=gen)
    c = (x[:, :2] > 0).float()
    model = bottleneck.train_concept_bottleneck(x, c, (c[:, 0] != c[:, 1]).long(), epochs=2, hidden=8)
    return bottleneck.leakage_test(model, x, c, (c[:, 0] != c[:, 1]).long())


FACTORIES["Leakage"] = (_leakage, False)
