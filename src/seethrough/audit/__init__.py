"""seethrough.audit: find planted flaws from clean data, validate them, and report."""

from .reverse import NeuralCleanse, ReversedTrigger, anomaly_index, neural_cleanse, reverse_engineer_trigger
from .scan import AuditResult, audit_classifier

__all__ = ["audit_classifier", "AuditResult", "reverse_engineer_trigger", "neural_cleanse", "anomaly_index", "ReversedTrigger", "NeuralCleanse"]
