"""seethrough.evidence: findings, their causal validation, and honest statistics.

Observational tools emit `Finding`s (hypotheses); `validate` tests them by intervention against
matched random controls; `summarize` reports every case (mean, median, worst, bootstrap CI).
"""

from .finding import Finding, FindingKind
from .metrics import per_example
from .ranks import auroc, spearman
from .summary import Summary, bootstrap_ci, summarize
from .trigger import Trigger, accuracy, attack_success, stamp
from .validate import Validation, target_hit, target_log_prob, validate

__all__ = ["Finding", "FindingKind", "validate", "Validation", "target_log_prob", "target_hit", "per_example",
           "summarize", "Summary", "bootstrap_ci",
           "Trigger", "stamp", "attack_success", "accuracy", "auroc", "spearman"]
