"""docs/subnetworks-circuits.md's worked example runs as written and prints what it shows (issue #12 item 4)."""

from __future__ import annotations

from pathlib import Path

from docs_pages import assert_same_output, examples, run

PAGE = Path(__file__).resolve().parents[1] / "docs" / "subnetworks-circuits.md"


def test_the_worked_example_prints_what_it_shows() -> None:
    blocks = examples(PAGE.read_text(), "subnetworks-circuits.md")
    assert len(blocks) == 1
    code, expected = blocks[0]
    assert_same_output(run(code, {"__name__": "docs_circuits"}, PAGE), expected, "the worked example")
