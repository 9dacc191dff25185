"""docs/transformers.md runs as written and prints the numbers it shows (issue #10, item 8).

Each ```python block of the page runs in one namespace, in order, and its printed output is
compared with the plain ``` block that follows it: the words must be the same and every number
within 2e-3 (the page rounds to 3-4 decimals; float32 sums may differ across CPUs in the last
digit). The validation section takes ~40 s on 2 cores and is marked slow.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.hf

PAGE = Path(__file__).resolve().parents[1] / "docs" / "transformers.md"
NUMBER = re.compile(r"-?\d+(?:\.\d*)?(?:e[-+]?\d+)?")
SLOW_BLOCK = "unit_importance(model, discovery"


def _examples() -> list[tuple[str, str]]:
    """(code, expected output) for every python block: the output is the next plain fenced block."""
    fences = re.findall(r"```(python)?\n(.*?)```", PAGE.read_text(), re.S)
    pairs, code = [], None
    for language, body in fences:
        if language:
            assert code is None, "a python block of docs/transformers.md has no output block after it"
            code = body
        elif code is not None:
            pairs.append((code, body))
            code = None
    assert code is None and pairs
    return pairs


def _assert_same_output(got: str, expected: str, where: str) -> None:
    words_got, words_expected = NUMBER.sub("#", got).split(), NUMBER.sub("#", expected).split()
    assert words_got == words_expected, f"{where}: printed\n{got}\nbut the page shows\n{expected}"
    for a, b in zip(NUMBER.findall(got), NUMBER.findall(expected), strict=True):
        assert float(a) == pytest.approx(float(b), abs=2e-3), f"{where}: printed {a}, the page shows {b}\n{got}"


def _run(code: str, namespace: dict) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(PAGE), "exec"), namespace)  # the page's own code, as a reader runs it
    return out.getvalue()


@pytest.fixture(scope="module")
def page() -> tuple[list[tuple[str, str]], dict]:
    return _examples(), {"__name__": "docs_transformers"}


def test_every_example_has_its_output_and_the_slow_one_is_last(page: tuple) -> None:
    examples, _ = page
    assert len(examples) == 7
    assert SLOW_BLOCK in examples[-1][0] and not any(SLOW_BLOCK in code for code, _ in examples[:-1])


def test_the_page_prints_what_it_shows(page: tuple) -> None:
    examples, namespace = page
    for n, (code, expected) in enumerate(examples[:-1]):
        _assert_same_output(_run(code, namespace), expected, f"example {n}")


@pytest.mark.slow
def test_the_validated_finding_prints_what_it_shows(page: tuple) -> None:
    examples, namespace = page
    if "model" not in namespace:  # run alone: the earlier examples set up the session
        for code, _ in examples[:-1]:
            _run(code, namespace)
    code, expected = examples[-1]
    _assert_same_output(_run(code, namespace), expected, "the validated finding")
