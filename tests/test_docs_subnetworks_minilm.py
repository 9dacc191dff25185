"""docs/subnetworks-minilm.md runs as written and prints the numbers it shows (issue #12, item 5).

Each ```python block of the page runs in one namespace, in order, and its printed output is
compared with the plain ``` block that follows it: the same words and every number within 2e-3
(the page rounds to 2-4 decimals; float32 sums may differ across CPUs in the last digit). The page
loads MiniLM and runs about 200 patched copies of an 8-sentence batch: about a minute on 2 cores,
so the run is marked slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from docs_pages import assert_same_output, examples, run

pytestmark = pytest.mark.hf

PAGE = Path(__file__).resolve().parents[1] / "docs" / "subnetworks-minilm.md"


def test_every_example_has_its_output() -> None:
    blocks = examples(PAGE.read_text(), "docs/subnetworks-minilm.md")
    assert len(blocks) == 3
    assert "activation_patching" in blocks[1][0] and "attribution_patching" in blocks[2][0]


@pytest.mark.slow
def test_the_page_prints_what_it_shows() -> None:
    namespace: dict = {"__name__": "docs_subnetworks_minilm"}
    for n, (code, expected) in enumerate(examples(PAGE.read_text(), "docs/subnetworks-minilm.md")):
        assert_same_output(run(code, namespace, PAGE), expected, f"example {n}")
