"""Hygiene exemptions for the result contract and the argument checks (issue #9); joined by tests/hygiene.py."""

from __future__ import annotations

from typing import Any

from hygiene import Case

from seethrough.core import checks, results

CASES: list[Case] = []

EXEMPT: dict[Any, str] = {
    results.Result: "the base of result dataclasses (checked by tests/test_result_contract.py)",
    results.jsonable: "converts values to JSON data; takes no model",
    results.new_figure: "makes an empty matplotlib figure; takes no model",
    checks.check_int: "checks a number; takes no model",
    checks.check_float: "checks a number; takes no model",
}
