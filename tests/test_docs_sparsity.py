"""docs/subnetworks-sparsity.md's worked example runs as written and prints what it shows (issue #12 item 1).

The ```python block of "Worked example: the same digits MLP four ways" runs and its printed output is
compared with the plain ``` block after it: the same words, every number within 2e-3, except that held-out
accuracies may differ by one test example (1/450) across CPUs' float reductions, and counts by a few weights
(a weight at the top-k or soft-threshold boundary can fall either way under another reduction order).
"""

from __future__ import annotations

from pathlib import Path

from docs_pages import assert_same_output, examples, run

PAGE = Path(__file__).resolve().parents[1] / "docs" / "subnetworks-sparsity.md"
SECTION = "## Worked example: the same digits MLP four ways"
TOLERANCE = 1 / 450 + 1e-3  # one of the 450 test digits, plus the page's rounding


def test_the_worked_example_prints_what_it_shows() -> None:
    text = PAGE.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    blocks = examples(text[start:end if end > 0 else None], "the worked example")
    assert len(blocks) == 1
    namespace: dict = {"__name__": "docs_sparsity"}
    code, expected = blocks[0]
    assert_same_output(run(code, namespace, PAGE), expected, "the worked example", TOLERANCE, count_tolerance=5)
