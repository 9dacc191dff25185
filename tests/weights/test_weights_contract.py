"""DESIGN.md §6's outside check of the weights area passes (issue #15: `contract_check.py --require weights`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
CHECK = ROOT.parent / "shared" / "contract_check.py"


@pytest.mark.skipif(not CHECK.is_file(), reason="../shared/contract_check.py is not beside this checkout")
def test_contract_check_requires_weights_and_passes() -> None:
    done = subprocess.run([sys.executable, str(CHECK), "--require", "weights"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = {line.split()[0]: line.split(None, 1)[1] for line in done.stdout.splitlines()
             if line.startswith("weights.")}
    assert set(lines) == {"weights.importance", "weights.learn_mask"}, done.stdout + done.stderr
    assert all(status == "ok" for status in lines.values()), done.stdout + done.stderr
