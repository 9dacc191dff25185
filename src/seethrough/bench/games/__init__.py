"""The ground-truth games, one or more per taxonomy item; `GAMES` is the registry `seethrough bench` runs.

Every module of this package is imported here, and each game module calls `register(game)` on its
games, so adding a game is adding one file (see `base.Game`). `GAMES` lists them in table order
(each game's ``order``, then its name).
"""

import importlib
import pkgutil

from .base import Game, GameError, Metric, case_generator, outranks, register, registered

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from .trojan import mask_iou, pattern_correlation  # noqa: E402 - re-exported helpers, after discovery

GAMES: dict[str, Game] = {game.name: game for game in registered()}

__all__ = ["Game", "GameError", "Metric", "register", "case_generator", "outranks", "GAMES", "mask_iou",
           "pattern_correlation"]
