"""docs/representations-sae.md's MiniLM worked example runs as written and prints what it shows (issue #14).

Each ```python block of the section "Worked example: an SAE on a MiniLM layer" runs in one namespace,
in order, and its printed output is compared with the plain ``` block after it: the same words, every
number within 2e-3 (counts within 0.5). The page harvests one MiniLM layer over 480 sentences, fits an
SAE, splices it back and runs about 90 steered forward passes: minutes on 2 shared cores, so the run is
marked slow; the structure check is not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from docs_pages import assert_same_output, examples, run

pytestmark = pytest.mark.hf

PAGE = Path(__file__).resolve().parents[1] / "docs" / "representations-sae.md"
SECTION = "## Worked example: an SAE on a MiniLM layer"


def _examples() -> list[tuple[str, str]]:
    text = PAGE.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return examples(text[start:end if end > 0 else None], "the MiniLM worked example")


def test_every_example_has_its_output() -> None:
    blocks = _examples()
    assert len(blocks) == 5
    assert "harvest" in blocks[0][0] and "loss_recovered" in blocks[2][0] and "steer=" in blocks[4][0]


@pytest.mark.slow
def test_the_worked_example_prints_what_it_shows() -> None:
    namespace: dict = {"__name__": "docs_sae_minilm"}
    for n, (code, expected) in enumerate(_examples()):
        assert_same_output(run(code, namespace, PAGE), expected, f"example {n}", count_tolerance=0.5)
