"""Shared fixtures. Tests import reference models from tests/models.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

torch.set_num_threads(1)  # small models; keeps timings out of the way and results reproducible


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
