"""docs/transformers.md runs as written and prints the numbers it shows (issue #10, item 8).

Each ```python block of the page runs in one namespace, in order, and its printed output is
compared with the plain ``` block that follows it: the words must be the same and every number
within 2e-3 (the page rounds to 3-4 decimals; float32 sums may differ across CPUs in the last
digit). The validation section takes ~40 s on 2 cores and is marked slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from docs_pages import assert_same_output, examples, run

pytestmark = pytest.mark.hf

PAGE = Path(__file__).resolve().parents[1] / "docs" / "transformers.md"
SLOW_BLOCK = "unit_importance(model, discovery"


@pytest.fixture(scope="module")
def page() -> tuple[list[tuple[str, str]], dict]:
    return examples(PAGE.read_text(), "docs/transformers.md"), {"__name__": "docs_transformers"}


def test_every_example_has_its_output_and_the_slow_one_is_last(page: tuple) -> None:
    blocks, _ = page
    assert len(blocks) == 7
    assert SLOW_BLOCK in blocks[-1][0] and not any(SLOW_BLOCK in code for code, _ in blocks[:-1])


def test_the_page_prints_what_it_shows(page: tuple) -> None:
    blocks, namespace = page
    for n, (code, expected) in enumerate(blocks[:-1]):
        assert_same_output(run(code, namespace, PAGE), expected, f"example {n}")


@pytest.mark.slow
def test_the_validated_finding_prints_what_it_shows(page: tuple) -> None:
    blocks, namespace = page
    if "model" not in namespace:  # run alone: the earlier examples set up the session
        for code, _ in blocks[:-1]:
            run(code, namespace, PAGE)
    code, expected = blocks[-1]
    assert_same_output(run(code, namespace, PAGE), expected, "the validated finding")
