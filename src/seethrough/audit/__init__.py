"""seethrough.audit: find planted flaws from clean data, validate them, and report."""

from .repair import RepairResult, accuracy, repair_by_unlearning
from .reverse import NeuralCleanse, ReversedTrigger, anomaly_index, neural_cleanse, reverse_engineer_trigger
from .scan import AuditResult, audit_classifier

__all__ = ["audit_classifier", "AuditResult", "repair_by_unlearning", "RepairResult", "accuracy",
           "reverse_engineer_trigger", "neural_cleanse", "anomaly_index", "ReversedTrigger", "NeuralCleanse"]
