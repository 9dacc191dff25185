"""The ground-truth games, one or more per taxonomy item; `GAMES` is the registry `seethrough bench` runs.

Every module of this package is imported here, and each game module calls `register(game)` on its
games, so adding a game is adding one file (see `base.Game`). `GAMES` lists them in table order.
"""

import importlib
import inspect
import pkgutil

from .base import Game, GameError, LegacyGame, Metric, case_generator, outranks, register, registered

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from .trojan import mask_iou, pattern_correlation  # noqa: E402 - re-exported helpers, after discovery

# TODO(#9): the legacy class-based games, found by discovery too, until every game is a `Game`;
# their table order is today's registry order.
_LEGACY_ORDER = {"trigger-rediscovery": 40, "visualisation-faithfulness": 50, "trojan-detection": 100,
                 "trojan-repair": 110}


def _legacy_games() -> list[tuple[int, str, LegacyGame]]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, LegacyGame) and cls.__module__ == module.__name__ and not inspect.isabstract(cls):
                found.append((_LEGACY_ORDER.get(cls.name, 1000), cls.name, cls()))
    return found


GAMES: dict[str, Game | LegacyGame] = {name: game for _, name, game in sorted(
    [(g.order, g.name, g) for g in registered()] + _legacy_games(), key=lambda t: (t[0], t[1]))}

__all__ = ["Game", "GameError", "Metric", "register", "case_generator", "outranks", "GAMES", "mask_iou",
           "pattern_correlation"]
