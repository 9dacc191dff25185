"""seethrough.audit: find planted flaws from clean data, validate them, repair and attack with them.

The three verbs the command line calls: `scan` (an `AuditResult`: verdict, per-class scans,
validated findings), `repair(result, ...)` (a `RepairResult`) and `attack(result, ...)` (a
`DesignedAttack`); `seethrough.report.write_audit_report` renders them. A verdict is "trojaned",
"clean" (with the families searched and the measured miss rate) or "inconclusive" (with the reasons); every
validated trigger is reported (a model may carry several trojans, `flag_targets`). The building blocks
(`neural_cleanse`, `trigger_units`, `repair_by_unlearning`, `design_attack`) are public too.
"""

from .attack import DesignedAttack, attack, binarise_mask, design_attack
from .internal import TriggerUnits, default_feature_site, trigger_units
from .repair import RepairResult, repair, repair_by_unlearning
from .reverse import (
                      SHRINK_TOLERANCE,
                      NeuralCleanse,
                      ReversedTrigger,
                      anomaly_index,
                      data_range,
                      neural_cleanse,
                      reverse_engineer_trigger,
)
from .verdict import (
                      DEFAULT_FAMILIES,
                      IDENTIFIABLE_TOLERANCE,
                      MAX_TARGETS,
                      MEASURED_DETECTION,
                      NEAR,
                      WARP_MIN_GAP,
                      AuditResult,
                      flag_targets,
                      scan,
)

__all__ = ["scan", "repair", "attack", "AuditResult", "repair_by_unlearning", "RepairResult",
           "reverse_engineer_trigger", "neural_cleanse", "anomaly_index", "ReversedTrigger", "NeuralCleanse",
           "trigger_units", "TriggerUnits", "default_feature_site", "design_attack", "DesignedAttack",
           "binarise_mask", "data_range", "SHRINK_TOLERANCE", "MEASURED_DETECTION", "NEAR", "flag_targets",
           "MAX_TARGETS", "WARP_MIN_GAP", "DEFAULT_FAMILIES", "IDENTIFIABLE_TOLERANCE"]
