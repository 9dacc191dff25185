"""DESIGN §6's outside contract, checked by the shared smoke check (issues #12-#15, done-when).

One run of ``../shared/contract_check.py`` requiring every chapter area (it checks the form of all
ten entries on tiny models: names, fields, shapes, the model left as found); every entry must be
present and ``ok``. CI has a copy of shared/ beside the repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT.parent / "shared" / "contract_check.py"
ENTRIES = {
    "weights.importance", "weights.learn_mask",
    "subnetworks.partition", "subnetworks.clusterability", "subnetworks.activation_patching",
    "subnetworks.find_circuit",
    "representations.probe", "representations.tcav", "representations.SparseAutoencoder", "representations.dci",
}


@pytest.mark.skipif(not CHECK.is_file(), reason="../shared/contract_check.py is not beside this checkout")
def test_every_chapter_entry_of_the_contract_is_built_and_has_its_form() -> None:
    done = subprocess.run([sys.executable, str(CHECK), "--require", "weights", "subnetworks", "representations"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    status = {line.split()[0]: line.split(None, 1)[1] for line in done.stdout.splitlines()
              if line.split() and line.split()[0] in ENTRIES}
    assert done.returncode == 0, done.stdout + done.stderr
    assert status == dict.fromkeys(ENTRIES, "ok"), done.stdout + done.stderr
