"""Result factories for attention maps and lenses (issue #13 item 4), joined into FACTORIES.

The token labels are the contract check's hostile strings, so they reach the frame, HTML and JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models import TinyTransformer, tokens

from seethrough import Site
from seethrough import representations as rep

HOSTILE = "<script>alert(1)</script>"  # the contract test's hostile names (tests/test_result_contract.py)
HOSTILE_CELL = "</td><img src=x>"
TOKENS = [[HOSTILE, HOSTILE_CELL, "a", "b", "c"]] * 3


def _inputs() -> dict:
    x = tokens(3, 5)
    x["attention_mask"][2, 3:] = 0
    return x


def _attention_maps() -> Any:
    sites = [Site("blocks.0.attn", element=1), Site("blocks.1.attn", element=1)]
    return rep.attention_rollout(TinyTransformer(), _inputs(), sites, tokens=TOKENS)


def _lens_result() -> Any:
    model = TinyTransformer()
    return rep.logit_lens(model, _inputs(), ["blocks.0", "blocks.1"], rep.module_readout(model, ["unembed"]),
                          tokens=TOKENS, classes=[HOSTILE] * 16)


# class name -> (factory, whether the instance carries a hostile name)
FACTORIES: dict[str, tuple[Callable[[], Any], bool]] = {
    "AttentionMaps": (_attention_maps, True),
    "LensResult": (_lens_result, True),
}
