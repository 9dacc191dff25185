"""Result factories for issue #12 item 4 (circuit stability), joined into test_result_contract's FACTORIES.

Each builds its result on a residual stream whose embedding and head carry the contract check's
hostile names, so the names reach the result's frame, HTML and JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models import vectors
from torch import Tensor, nn

from seethrough import subnetworks

HOSTILE = "<script>alert(1)</script>"  # the contract test's hostile names (tests/test_result_contract.py)
HOSTILE_CELL = "</td><img src=x>"


class _Stream(nn.Module):
    """embed (named HOSTILE) writes, one block reads and writes, the head (named HOSTILE_CELL) reads."""

    def __init__(self) -> None:
        super().__init__()
        self.add_module(HOSTILE, nn.Linear(4, 6))
        self.block = nn.Sequential(nn.Linear(6, 6), nn.ReLU())
        self.add_module(HOSTILE_CELL, nn.Linear(6, 3))

    def forward(self, x: Tensor) -> Tensor:
        h = getattr(self, HOSTILE)(x)
        return getattr(self, HOSTILE_CELL)(h + self.block(h))


def _metric(output: Tensor) -> Tensor:
    return output[:, 0]


def _stability() -> Any:
    x = vectors()
    return subnetworks.circuit_stability(_Stream(), x, -x, _metric, writers=[HOSTILE, "block"],
                                         readers=["block", HOSTILE_CELL], k=2, method="eap", n_samples=3)


# class name -> (factory, whether the instance carries a hostile name)
FACTORIES: dict[str, tuple[Callable[[], Any], bool]] = {
    "CircuitStability": (_stability, True),
}
