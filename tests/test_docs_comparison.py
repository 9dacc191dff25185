"""docs/representations-comparison.md's worked example runs as written and prints what it shows (issue #13 item 3).

The ```python block of "Worked example" runs and its printed output is compared with the plain ``` block
after it: the same words, every number within 2e-3 (float64 maths throughout; the page rounds to 3-4
digits).
"""

from __future__ import annotations

from pathlib import Path

from docs_pages import assert_same_output, examples, run

PAGE = Path(__file__).resolve().parents[1] / "docs" / "representations-comparison.md"
SECTION = "## Worked example"


def test_the_worked_example_prints_what_it_shows() -> None:
    text = PAGE.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    blocks = examples(text[start:end if end > 0 else None], "the worked example")
    assert len(blocks) == 1
    code, expected = blocks[0]
    assert_same_output(run(code, {"__name__": "docs_comparison"}, PAGE), expected, "the worked example", 2e-3)
