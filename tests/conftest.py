"""Shared fixtures. Tests import reference models from tests/models.py."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

#: Per-area hygiene tables (imported by tests/hygiene.py) and result factories (imported by
#: tests/test_result_contract.py) are never collected on their own.
collect_ignore_glob = ["hygiene_*.py", "results_*.py"]

torch.set_num_threads(1)  # small models; keeps timings out of the way and results reproducible


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Zoo models are trained once per test session into a temporary cache (unless one is set)."""
    if "SEETHROUGH_CACHE" in os.environ:
        yield
        return
    os.environ["SEETHROUGH_CACHE"] = str(tmp_path_factory.mktemp("seethrough-cache"))
    yield
    del os.environ["SEETHROUGH_CACHE"]
