"""Hygiene cases for issue #11's audit (several targets, the warp family in the scan, refined findings)."""

from __future__ import annotations

from hygiene import Case
from models import TinyCNN, images

import seethrough.audit as audit
from seethrough.bench.games import trojan as trojan_game

CASES = [
    # 6x6 images take a warp search (4x4 control grid), one target per family; a warp search of vectors and
    # bad targets are refused before any work
    Case("scan (warp, targets)", audit.scan, TinyCNN, lambda: images(8),
         lambda m, x: audit.scan(m, x, families=("patch", "warp"), max_targets=1, steps=10,
                                 n_controls=20).to_dict()["searched"],
         invalid=(lambda m, x: audit.scan(m, x.flatten(1), families=("patch", "warp")),
                  lambda m, x: audit.scan(m, x, max_targets=0),
                  lambda m, x: audit.scan(m, x, families=("patch", "wrap")))),
]

EXEMPT = {
    audit.flag_targets: "ranks numbers; takes no model",
    trojan_game.target_recall: "compares class sets; takes no model",
}
