"""The ground-truth games, one or more per taxonomy item; `GAMES` is the registry `seethrough bench` runs."""

from .ablation import AblationGame
from .attribution import AttributionLocalisationGame, FaithfulnessGame, RoarGame, SanityCheckGame
from .base import Game, Metric, case_generator, outranks
from .dissection import DissectionGame
from .hazards import HazardsGame
from .repair import TrojanRepairGame
from .synthesis import TriggerRediscoveryGame, VisualisationFaithfulnessGame
from .trojan import TrojanDetectionGame, mask_iou, pattern_correlation

GAMES: dict[str, Game] = {game.name: game for game in (
    AblationGame(), HazardsGame(), DissectionGame(), TriggerRediscoveryGame(), VisualisationFaithfulnessGame(),
    AttributionLocalisationGame(), SanityCheckGame(), FaithfulnessGame(), RoarGame(),
    TrojanDetectionGame(), TrojanRepairGame(),
)}

__all__ = ["Game", "Metric", "case_generator", "outranks", "GAMES", "AblationGame", "HazardsGame", "DissectionGame",
           "TriggerRediscoveryGame", "VisualisationFaithfulnessGame", "AttributionLocalisationGame", "SanityCheckGame",
           "FaithfulnessGame", "RoarGame", "TrojanDetectionGame", "TrojanRepairGame", "mask_iou",
           "pattern_correlation"]
