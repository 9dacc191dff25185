"""The zoo's disk cache: a model is trained once per config and reloaded bit-identically.

Entries live at ``cache_dir()/"zoo"/kind/"<config_hash>.safetensors"`` with a JSON sidecar that
holds the training metadata (the planted ground truth, measured accuracies) and the config
itself. Writes are atomic; an unreadable or mismatching entry is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seethrough.core import InputError, InputTypeError, LoadError, cache_dir, load_tensors, save_tensors

__all__ = ["config_hash", "cached"]

_KIND = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _check_json(value: Any, where: str) -> None:
    """Raise unless ``value`` is plain JSON: None, bool, int, finite float, str, list/tuple, str-keyed dict."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"{where} is {value!r}; JSON has no NaN/inf, so the value cannot be stored or hashed.")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InputTypeError(f"{where} has the key {key!r} ({type(key).__name__}); JSON keys must be str.")
            _check_json(item, f"{where}[{key!r}]")
        return
    hint = " Convert tensors and arrays with .tolist() and numpy scalars with int()/float()." if hasattr(
        value, "tolist") else ""
    raise InputTypeError(f"{where} is a {type(value).__name__}, which is not JSON (None, bool, int, float, str, "
                         f"list or str-keyed dict).{hint}")


def _canonical(config: Mapping[str, Any], where: str) -> str:
    _check_json(config, where)
    return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(config: Mapping[str, Any]) -> str:
    """The first 16 hex digits of the SHA-256 of ``config`` as canonical JSON (sorted keys).

    Key order does not matter; tuples hash like lists.

    Args:
        config: a str-keyed mapping of JSON values.

    Returns:
        16 lowercase hex characters.

    Raises:
        InputTypeError: a value is not JSON (a tensor, an array, a numpy scalar, a non-str key).
        InputError: a float is NaN or infinite.

    Example:
        >>> config_hash({"a": 1, "b": [2, 3]}) == config_hash({"b": (2, 3), "a": 1})
        True
        >>> len(config_hash({}))
        16
    """
    if not isinstance(config, Mapping):
        raise InputTypeError(f"config must be a str-keyed mapping, got {type(config).__name__}.")
    return hashlib.sha256(_canonical(config, "config").encode()).hexdigest()[:16]


def _entry_path(kind: str, config: Mapping[str, Any]) -> Path:
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise InputError(f"kind {kind!r} must be a plain folder name (letters, digits, '_', '-', '.'; "
                         "not starting with '.'), e.g. 'trojaned_classifier'.")
    return cache_dir() / "zoo" / kind / f"{config_hash(config)}.safetensors"


def _load_entry(path: Path, build: Callable[[], nn.Module], config: Any) -> tuple[nn.Module, dict[str, Any]] | None:
    """The cached model and metadata, or None (with a warning) when the entry cannot be trusted."""
    try:
        state, meta = load_tensors(path)
        if meta.get("config") != config:
            raise LoadError(f"its sidecar {path.name}.json is missing or records another config")
        model = build()
        model.load_state_dict(state, strict=True)
    except (LoadError, OSError, ValueError, RuntimeError, AttributeError) as err:
        # ValueError covers json.JSONDecodeError; RuntimeError covers load_state_dict mismatches;
        # AttributeError a sidecar whose JSON is not an object.
        warnings.warn(f"zoo cache entry {str(path)!r} is unusable ({type(err).__name__}: {err}); rebuilding it.",
                      stacklevel=3)
        return None
    return model.eval(), meta


def cached(
    kind: str,
    config: Mapping[str, Any],
    build: Callable[[], nn.Module],
    train: Callable[[nn.Module], dict[str, Any]],
) -> tuple[nn.Module, dict[str, Any]]:
    """Return the model for ``config``, trained once and cached on disk.

    On a hit, ``build()`` makes the architecture and the saved state dict is loaded into it.
    On a miss (or an unreadable, truncated or mismatching entry, which is rebuilt with a
    warning), ``train(build())`` trains a fresh model in place, on one torch thread so that a
    config names the same weights whatever the caller's thread count, and returns its metadata; the
    state dict and ``{**metadata, "config": config}`` are saved atomically, and the model is
    reloaded from what was saved, so a hit and a miss return the same thing.

    Args:
        kind: the zoo entry's name, a folder under ``cache_dir()/"zoo"``.
        config: everything that determines the trained weights (JSON values only).
        build: makes an untrained model of the right architecture; must be deterministic.
        train: trains the given model in place and returns JSON metadata (the ground truth,
            measured scores). Tensors must be converted with ``.tolist()``. The key
            ``"config"`` is reserved.

    Returns:
        ``(model, metadata)``: the model in eval mode (parameters require grad, as built) and
        the metadata as it reads back from JSON (tuples become lists), including ``"config"``.

    Raises:
        InputError: ``kind`` is not a plain folder name, or a float in ``config`` or the
            metadata is NaN/inf.
        InputTypeError: ``config`` or the metadata holds a non-JSON value, or ``train`` did not
            return a dict.
    """
    path = _entry_path(kind, config)
    plain_config = json.loads(_canonical(config, "config"))
    if path.is_file():
        hit = _load_entry(path, build, plain_config)
        if hit is not None:
            return hit
    # Training runs on one thread whoever calls it: the thread count changes floating-point
    # reduction order, so it would otherwise change the weights a config names.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build()
        meta = train(model)
    finally:
        torch.set_num_threads(threads)
    if not isinstance(meta, dict):
        raise InputTypeError(f"the train function of zoo entry {kind!r} returned {type(meta).__name__}; "
                             "it must return a dict of JSON metadata.")
    if "config" in meta:
        raise InputError(f"the train function of zoo entry {kind!r} returned the reserved key 'config'; "
                         "cached adds the config itself, rename that key.")
    _check_json(meta, f"the metadata of zoo entry {kind!r}")
    record = {**json.loads(json.dumps(meta, allow_nan=False)), "config": plain_config}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_tensors(path, state, record)
    fresh = build()
    fresh.load_state_dict(state, strict=True)
    return fresh.eval(), record
