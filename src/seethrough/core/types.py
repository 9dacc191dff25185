"""Shared type aliases and the fixed vocabulary of shape names.

Shape names used in jaxtyping annotations across the package come from `SHAPE_NAMES` (numbers
and ``*rest`` are allowed too); keeping one list makes signatures read the same everywhere, and
`tests/test_types.py` checks every annotation in the package against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

from torch import Tensor

__all__ = ["Inputs", "SHAPE_NAMES"]

#: What a model is called with: a tensor (``model(x)``), a tuple (``model(*args)``) or a
#: mapping of keyword arguments (``model(**kwargs)``, HuggingFace style).
Inputs: TypeAlias = Tensor | tuple[Any, ...] | Mapping[str, Any]

SHAPE_NAMES = ("batch", "seq", "d_model", "d_hidden", "d_sae", "n_units", "n_concepts", "n_classes",
               "channels", "height", "width", "n_features", "vocab", "k", "rest",
               "n_quantiles", "n_ranks", "d_left", "d_right")
