"""DESIGN §6's outside contract for subnetworks, checked by the shared smoke check (issue #12)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT.parent / "shared" / "contract_check.py"


@pytest.mark.skipif(not CHECK.exists(), reason="../shared/contract_check.py is not beside the repository")
def test_contract_check_requires_subnetworks() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(CHECK), "--require", "subnetworks"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("subnetworks.")]
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(lines) == 4 and all(line.split()[-1] == "ok" for line in lines), done.stdout
