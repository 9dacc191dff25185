"""The ground-truth games, one or more per taxonomy item; `GAMES` is the registry `seethrough bench` runs."""

from .ablation import AblationGame
from .base import Game, Metric, case_generator
from .trojan import TrojanTargetGame, mask_iou

GAMES: dict[str, Game] = {game.name: game for game in (AblationGame(), TrojanTargetGame())}

__all__ = ["Game", "Metric", "case_generator", "GAMES", "AblationGame", "TrojanTargetGame", "mask_iou"]
