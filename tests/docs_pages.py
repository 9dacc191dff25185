"""Running a docs page's examples as a reader would (shared by the docs tests; not collected on its own).

A page's ```python blocks run in one namespace, in order, and each one's printed output is compared
with the plain ``` block that follows it: the same words, every number within a tolerance.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

NUMBER = re.compile(r"-?\d+(?:\.\d*)?(?:e[-+]?\d+)?")


def examples(text: str, where: str) -> list[tuple[str, str]]:
    """(code, expected output) for every python block of ``text``: the output is the next plain fenced block."""
    fences = re.findall(r"```(python)?\n(.*?)```", text, re.S)
    pairs, code = [], None
    for language, body in fences:
        if language:
            assert code is None, f"a python block of {where} has no output block after it"
            code = body
        elif code is not None:
            pairs.append((code, body))
            code = None
    assert code is None and pairs
    return pairs


def run(code: str, namespace: dict, page: Path) -> str:
    """What ``code`` prints, run in ``namespace`` (the page's own code, as a reader runs it)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(page), "exec"), namespace)
    return out.getvalue()


def assert_same_output(got: str, expected: str, where: str, tolerance: float = 2e-3,
                       count_tolerance: float | None = None) -> None:
    """The same words, and every number within ``tolerance`` (``count_tolerance`` for numbers ≥ 10, if given)."""
    words_got, words_expected = NUMBER.sub("#", got).split(), NUMBER.sub("#", expected).split()
    assert words_got == words_expected, f"{where}: printed\n{got}\nbut the page shows\n{expected}"
    for a, b in zip(NUMBER.findall(got), NUMBER.findall(expected), strict=True):
        allowed = count_tolerance if count_tolerance is not None and abs(float(b)) >= 10 else tolerance
        assert float(a) == pytest.approx(float(b), abs=allowed), f"{where}: printed {a}, the page shows {b}\n{got}"
