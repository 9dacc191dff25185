"""docs/representations-minilm.md runs as written and prints the numbers it shows (issue #13, Done when: MiniLM end to end).

Each ```python block of the page runs in one namespace, in order, and its printed output is compared
with the plain ``` block that follows it: the same words, every number within 2e-3 (the page rounds to
3-4 decimals; float32 sums may differ across CPUs in the last digit), held-out accuracies within one
test example. The whole page takes ~2.5 min on 2 busy cores (MiniLM, 7 probes, 20 erasures, a tuned
lens), so it is marked slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from docs_pages import assert_same_output, examples, run

pytestmark = pytest.mark.hf

PAGE = Path(__file__).resolve().parents[1] / "docs" / "representations-minilm.md"
TOLERANCE = 1 / 60 + 2e-3  # one of the ~60 held-out ambiguous words of the probes, plus the page's rounding


def test_every_example_has_its_output() -> None:
    blocks = examples(PAGE.read_text(), "docs/representations-minilm.md")
    assert len(blocks) == 5
    assert "probe(" in blocks[1][0] and "erase(" in blocks[2][0] and "attention_rollout(" in blocks[3][0]
    assert "TunedLens(" in blocks[4][0]


@pytest.mark.slow
def test_the_page_prints_what_it_shows() -> None:
    namespace: dict = {"__name__": "docs_representations_minilm"}
    for n, (code, expected) in enumerate(examples(PAGE.read_text(), "docs/representations-minilm.md")):
        # counts (numbers >= 10) are exact up to the page's rounding
        assert_same_output(run(code, namespace, PAGE), expected, f"example {n}", TOLERANCE, count_tolerance=0.5)
