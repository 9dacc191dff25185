"""docs/subnetworks-modularity.md's examples run as written and print what the page shows.

Issue #12 (Done when: worked examples with the real numbers they give). Every ```python block of the page
runs in one namespace, in order, and its printed output is compared with the plain ``` block after it: the
same words, small numbers within 0.02 and numbers ≥ 10 within 5 (the example trains a network for 600 steps:
float reductions that differ across CPUs move a trained network's connection cost and ratios a little).
"""

from __future__ import annotations

from pathlib import Path

from docs_pages import assert_same_output, examples, run

PAGE = Path(__file__).resolve().parents[1] / "docs" / "subnetworks-modularity.md"


def test_the_page_prints_what_it_shows() -> None:
    namespace: dict = {"__name__": "docs_modularity"}
    blocks = examples(PAGE.read_text(), "docs/subnetworks-modularity.md")
    assert len(blocks) == 3
    for n, (code, expected) in enumerate(blocks):
        assert_same_output(run(code, namespace, PAGE), expected, f"example {n}", 0.02, count_tolerance=5.0)
