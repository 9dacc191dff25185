"""Hygiene exemptions for the declarative games (issue #9): the harness's names, and each game module's
typed answer key and answer (value objects). The games build their own models; tests/bench plays them.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

from seethrough.bench import games, listing, zoo
from seethrough.bench.games import base

CASES: list = []

EXEMPT: dict[Any, str] = {
    base.Game: "the declarative game; games build their own models (tests/bench/test_games.py plays them)",
    base.register: "adds a game to the registry; takes no model",
    base.registered: "lists the registry; takes no model",
    listing.games_markdown: "formats the games list; takes no model",
    zoo.materialise: "initialises a new model built on the meta device (the games' retrained MLPs)",
}

for _info in pkgutil.iter_modules(games.__path__):
    _module = importlib.import_module(f"{games.__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", []):
        _obj = getattr(_module, _name)
        if dataclasses.is_dataclass(_obj) and isinstance(_obj, type) and _obj.__module__ == _module.__name__ \
                and _obj is not base.Game and _obj is not base.Metric:
            EXEMPT[_obj] = "a game's typed answer key or answer (a value object)"
