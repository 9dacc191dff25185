"""docs/representations-intrinsic.md's examples run as written and print what the page shows (issue #14).

The leakage example trains two small concept bottlenecks (seconds); the robust-twins example reads the
zoo's cached seed-0 twins (the bench trains the same ones). Held-out accuracies may differ by one test
example across CPUs' float reductions (1/2000 and 1/450).
"""

from __future__ import annotations

from pathlib import Path

from docs_pages import assert_same_output, examples, run

PAGE = Path(__file__).resolve().parents[1] / "docs" / "representations-intrinsic.md"
TOLERANCE = 1 / 450 + 1e-3


def test_the_pages_examples_print_what_they_show() -> None:
    namespace: dict = {"__name__": "docs_intrinsic"}
    blocks = examples(PAGE.read_text(), PAGE.name)
    assert len(blocks) == 2
    for i, (code, expected) in enumerate(blocks):
        assert_same_output(run(code, namespace, PAGE), expected, f"{PAGE.name} example {i + 1}", tolerance=TOLERANCE)
