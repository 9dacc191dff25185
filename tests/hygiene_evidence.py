"""Hygiene exemptions for evidence helpers that take no model (issue #10); joined by tests/hygiene.py."""

from __future__ import annotations

from typing import Any

from hygiene import Case

from seethrough.evidence import Fingerprint, benjamini_hochberg, fingerprint, majority_p_values, metrics

CASES: list[Case] = []

EXEMPT: dict[Any, str] = {
    metrics.per_example: "builds a metric (output -> scores) from per-example data; takes no model. The methods "
                         "that call metrics are in the table (tests/evidence/test_metrics.py checks it against Captum)",
    fingerprint: "hashes input tensors; takes no model (tests/evidence/test_fingerprint.py)",
    Fingerprint: "a frozen value object (digest, size, row hashes); takes no model",
    majority_p_values: "label counts in, p-values out; takes no model (a brute-force enumeration is its oracle)",
    benjamini_hochberg: "p-values in, q-values out; takes no model (scipy is its oracle in test_multiple.py)",
}
