"""docs/weights.md's worked example on the two-task digits network runs as written and prints what it shows.

Issue #15 (Done when: a worked example with the real numbers it gives). Each ```python block of the
section "Worked example: a two-task digits network" runs in one namespace, in order, and its printed
output is compared with the plain ``` block after it: the same words, every number within 2e-3, except
that held-out accuracies may differ by one test example (1/450) across CPUs' float reductions.
"""

from __future__ import annotations

from pathlib import Path

from docs_pages import assert_same_output, examples, run

PAGE = Path(__file__).resolve().parents[1] / "docs" / "weights.md"
SECTION = "## Worked example: a two-task digits network"
TOLERANCE = 1 / 450 + 1e-3  # one of the 450 test digits, plus the page's rounding


def _examples() -> list[tuple[str, str]]:
    text = PAGE.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return examples(text[start:end if end > 0 else None], "the worked example")


def test_the_worked_example_prints_what_it_shows() -> None:
    namespace: dict = {"__name__": "docs_weights"}
    blocks = _examples()
    assert len(blocks) == 5
    for n, (code, expected) in enumerate(blocks):
        # counts (numbers >= 10) are exact up to the page's rounding
        assert_same_output(run(code, namespace, PAGE), expected, f"example {n}", TOLERANCE, count_tolerance=0.5)
