"""seethrough.evidence: findings, their causal validation, and honest statistics.

Observational tools emit `Finding`s (hypotheses); `validate` tests them by intervention against
matched random controls, and flags a test on the discovery data as in-sample (`fingerprint`);
`benjamini_hochberg` corrects per-unit p-values for the number of units tested; `summarize`
reports every case (mean, median, worst, bootstrap CI).
"""

from .finding import Finding, FindingKind
from .fingerprint import Fingerprint, fingerprint
from .metrics import per_example
from .multiple import benjamini_hochberg, majority_p_values
from .ranks import auroc, spearman
from .summary import Summary, bootstrap_ci, summarize
from .trigger import Trigger, accuracy, attack_success, displacement, stamp
from .validate import Validation, target_hit, target_log_prob, validate

__all__ = ["Finding", "FindingKind", "Fingerprint", "fingerprint", "validate", "Validation", "target_log_prob",
           "target_hit", "per_example", "benjamini_hochberg",
           "majority_p_values",
           "summarize", "Summary", "bootstrap_ci",
           "Trigger", "stamp", "displacement", "attack_success", "accuracy", "auroc", "spearman"]
