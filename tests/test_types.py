"""Every jaxtyping shape annotation in the package uses the fixed vocabulary (STYLE §5)."""

from __future__ import annotations

import re
from pathlib import Path

import seethrough
from seethrough.core.types import SHAPE_NAMES

ANNOTATION = re.compile(r'\b(?:Float|Int|Int64|Bool|Shaped|Num)\[[A-Za-z.]+,\s*"([^"]*)"\]')


def test_shape_names_come_from_the_fixed_list() -> None:
    src = Path(seethrough.__file__).parent
    found = {(str(p.relative_to(src)), dims) for p in src.rglob("*.py") for dims in ANNOTATION.findall(p.read_text())}
    assert found, "the package has jaxtyping annotations to check"
    bad = sorted((path, name) for path, dims in found for name in dims.split()
                 if not name.lstrip("*").isdigit() and name.lstrip("*") not in SHAPE_NAMES)
    assert not bad, f"shape names outside core.types.SHAPE_NAMES (add them there, or rename): {bad}"
