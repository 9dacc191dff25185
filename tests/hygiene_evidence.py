"""Hygiene exemptions for evidence helpers that take no model (issue #10); joined by tests/hygiene.py."""

from __future__ import annotations

from typing import Any

from hygiene import Case

from seethrough.evidence import metrics

CASES: list[Case] = []

EXEMPT: dict[Any, str] = {
    metrics.per_example: "builds a metric (output -> scores) from per-example data; takes no model. The methods "
                         "that call metrics are in the table (tests/evidence/test_metrics.py checks it against Captum)",
}
