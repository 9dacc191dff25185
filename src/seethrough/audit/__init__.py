"""seethrough.audit: find planted flaws from clean data, validate them, repair and attack with them, and report."""

from .attack import DesignedAttack, binarise_mask, design_attack
from .internal import TriggerUnits, default_feature_site, trigger_units
from .repair import RepairResult, accuracy, repair_by_unlearning
from .reverse import NeuralCleanse, ReversedTrigger, anomaly_index, neural_cleanse, reverse_engineer_trigger
from .scan import AuditResult, audit_classifier

__all__ = ["audit_classifier", "AuditResult", "repair_by_unlearning", "RepairResult", "accuracy",
           "reverse_engineer_trigger", "neural_cleanse", "anomaly_index", "ReversedTrigger", "NeuralCleanse",
           "trigger_units", "TriggerUnits", "default_feature_site", "design_attack", "DesignedAttack",
           "binarise_mask"]
