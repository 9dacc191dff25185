"""seethrough.audit: find planted flaws from clean data (trigger reverse-engineering today)."""

from .reverse import NeuralCleanse, ReversedTrigger, anomaly_index, neural_cleanse, reverse_engineer_trigger

__all__ = ["reverse_engineer_trigger", "neural_cleanse", "anomaly_index", "ReversedTrigger", "NeuralCleanse"]
