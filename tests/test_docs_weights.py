"""docs/weights.md's worked example on the two-task digits network runs as written and prints what it shows.

Issue #15 (Done when: a worked example with the real numbers it gives). Each ```python block of the
section "Worked example: a two-task digits network" runs in one namespace, in order, and its printed
output is compared with the plain ``` block after it: the same words, every number within 2e-3, except
that held-out accuracies may differ by one test example (1/450) across CPUs' float reductions.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "weights.md"
SECTION = "## Worked example: a two-task digits network"
NUMBER = re.compile(r"-?\d+(?:\.\d*)?(?:e[-+]?\d+)?")
TOLERANCE = 1 / 450 + 1e-3  # one of the 450 test digits, plus the page's rounding


def _examples() -> list[tuple[str, str]]:
    text = PAGE.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    fences = re.findall(r"```(python)?\n(.*?)```", text[start:end if end > 0 else None], re.S)
    pairs, code = [], None
    for language, body in fences:
        if language:
            assert code is None, "a python block of the worked example has no output block after it"
            code = body
        elif code is not None:
            pairs.append((code, body))
            code = None
    assert code is None and pairs
    return pairs


def _run(code: str, namespace: dict) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(PAGE), "exec"), namespace)  # the page's own code, as a reader runs it
    return out.getvalue()


def test_the_worked_example_prints_what_it_shows() -> None:
    namespace: dict = {"__name__": "docs_weights"}
    examples = _examples()
    assert len(examples) == 5
    for n, (code, expected) in enumerate(examples):
        got = _run(code, namespace)
        words_got, words_expected = NUMBER.sub("#", got).split(), NUMBER.sub("#", expected).split()
        assert words_got == words_expected, f"example {n}: printed\n{got}\nbut the page shows\n{expected}"
        for a, b in zip(NUMBER.findall(got), NUMBER.findall(expected), strict=True):
            tolerance = 0.5 if abs(float(b)) >= 10 else TOLERANCE  # counts are exact up to rounding
            assert float(a) == pytest.approx(float(b), abs=tolerance), f"example {n}: printed {a}, page {b}\n{got}"
