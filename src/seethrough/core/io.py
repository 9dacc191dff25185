"""Safe loading and saving: model specs, weights, datasets and artefacts.

Weights and data are untrusted: safetensors files, ``.pt`` state dicts through
``torch.load(weights_only=True)`` with no unsafe fallback, and ``.npz`` arrays with
``allow_pickle=False``. A model *spec* (``file.py:factory`` or ``package.module:factory``) is
code the user chose to run, like any import. Artefacts are written atomically (temp file, then
rename) as safetensors plus a JSON sidecar.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import os
import pickle
import re
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import InputError, LoadError

__all__ = ["cache_dir", "atomic_write", "check_writable", "ArrayData", "load_factory", "load_model", "load_weights", "load_data", "save_tensors", "load_tensors"]


def cache_dir() -> Path:
    """Where generated data and models are cached: ``$SEETHROUGH_CACHE`` or ``~/.cache/seethrough``."""
    return Path(os.environ.get("SEETHROUGH_CACHE", Path.home() / ".cache" / "seethrough"))


def load_factory(spec: str) -> Callable[[], Any]:
    """Resolve ``path/to/file.py:factory`` or ``package.module:factory`` to the callable.

    Raises:
        LoadError: malformed spec, missing file or module, missing or non-callable attribute.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise LoadError(f"model spec {spec!r} must look like 'path/to/file.py:factory' or 'package.module:factory'.")
    where, name = spec.split(":")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise LoadError(f"model file {where!r} does not exist (from spec {spec!r}).")
        mod_name = f"_seethrough_model_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise LoadError(f"cannot import {where!r} as a Python file.")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module  # dataclasses and pickling look modules up here
        try:
            loader_spec.loader.exec_module(module)
        except Exception as err:
            sys.modules.pop(mod_name, None)
            raise LoadError(f"importing {where!r} failed: {type(err).__name__}: {err}") from err
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as err:
            raise LoadError(f"cannot import module {where!r} (from spec {spec!r}): {err}") from err
    if not hasattr(module, name):
        names = [n for n in dir(module) if not n.startswith("_")]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise LoadError(f"{where!r} has no attribute {name!r}{hint}")
    factory = getattr(module, name)
    if not callable(factory):
        raise LoadError(f"{spec!r} is a {type(factory).__name__}, not a callable factory returning an nn.Module.")
    return factory


def load_weights(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors``, or from ``.pt``/``.pth``/``.bin`` with ``weights_only=True``.

    Raises:
        LoadError: missing file, unknown suffix, a pickle that ``weights_only`` refuses (it is
            never retried unsafely), or content that is not a mapping of names to tensors.
    """
    p = Path(path)
    if p.is_dir():
        found = sorted(q.name for q in p.iterdir() if q.suffix.lower() in (".safetensors", ".pt", ".pth", ".bin"))[:3]
        hint = f" (it holds {', '.join(found)})" if found else ""
        raise LoadError(f"weights {str(p)!r} is a directory{hint}; give the .safetensors (or .pt) file itself.")
    if not p.is_file():
        raise LoadError(f"weights file {str(p)!r} does not exist.")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise LoadError(f"{str(p)!r} is not a valid safetensors file: {err}") from err
    elif suffix in (".pt", ".pth", ".bin"):
        try:
            with warnings.catch_warnings():
                # torch warns about the pickle protocol of files it is about to refuse; our error says more
                warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
                state = torch.load(p, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
                AttributeError, TypeError) as err:
            # torch's own text carries colour codes and advises weights_only=False, which we never
            # do; keep only the name of the refused global, if there is one.
            found = re.search(r"(?:Unsupported global|GLOBAL)[:\s]+([\w.]+)", str(err))
            why = f"it references {found.group(1)!r}" if found else f"unreadable: {type(err).__name__}"
            raise LoadError(
                f"{str(p)!r} was refused by torch.load(weights_only=True) ({why}). Only plain state dicts of "
                "tensors are loaded, never arbitrary pickles; re-save it with safetensors.torch.save_file."
            ) from None
    else:
        raise LoadError(f"unknown weights format {suffix!r} for {str(p)!r}; use .safetensors (or a .pt state dict).")
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        hint = ""
        if isinstance(state, Mapping) and any(k in state for k in ("state_dict", "model")):
            hint = " It looks like a training checkpoint; save its 'state_dict' entry alone."
        raise LoadError(f"{str(p)!r} does not hold a state dict (a mapping of parameter names to tensors).{hint}")
    return dict(state)


def load_model(spec: str, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """Build the model from ``spec``, load ``weights`` strictly if given, and put it in eval mode.

    Raises:
        LoadError: any problem with the spec, the factory's result or the weights (missing or
            unexpected keys, shape mismatches are all listed).
    """
    factory = load_factory(spec)
    try:
        model = factory()
    except Exception as err:
        raise LoadError(f"calling the factory {spec!r} failed: {type(err).__name__}: {err}") from err
    if not isinstance(model, nn.Module):
        raise LoadError(f"the factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module.")
    if weights is not None:
        state = load_weights(weights)
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                      for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
        if missing or unexpected or mismatched:
            parts = []
            if missing:
                parts.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
            if unexpected:
                parts.append(f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
            if mismatched:
                parts.append(f"shape mismatch {mismatched[:5]}")
            raise LoadError(f"weights {str(weights)!r} do not fit {spec!r}: " + "; ".join(parts) + ".")
        model.load_state_dict(state, strict=True)
    return model.eval()


@dataclass(frozen=True)
class ArrayData:
    """A labelled dataset loaded from ``.npz``: ``x`` (N, C, H, W) or (N, D) float32, ``y`` (N,) int64."""

    x: Tensor
    y: Tensor
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


def load_data(path: str | os.PathLike[str], *, max_rows: int | None = None) -> ArrayData:
    """Load ``x``, ``y`` and optional ``class_names`` from ``.npz`` with ``allow_pickle=False``.

    Arrays are read straight from the archive into their final float32 / int64 buffers, a chunk at
    a time, so memory stays near the size of what is returned (a highly compressed file of a few
    MB can expand to gigabytes: its shape is known from the header before anything is read), and
    ``max_rows`` reads only the first rows.

    Args:
        path: the ``.npz`` file.
        max_rows: read at most this many examples (all when ``None``).

    Raises:
        LoadError: missing file or keys, object arrays (pickles), wrong dtypes or shapes, NaN/inf or
            values beyond float32's range, empty data, labels outside ``class_names``.
    """
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
        raise LoadError(f"max_rows must be a positive int or None, got {max_rows!r}.")
    p = Path(path)
    if p.is_dir():
        raise LoadError(f"data {str(p)!r} is a directory; give the .npz file itself.")
    if not p.is_file():
        raise LoadError(f"data file {str(p)!r} does not exist.")
    try:
        loaded = np.load(p, allow_pickle=False)  # an NpzFile reads no array until asked
    except ValueError as err:
        reason = "holds pickled data, which is never loaded" if "pickle" in str(err) else "is not a readable .npz file"
        raise LoadError(f"{str(p)!r} {reason}; save with np.savez(f, x=..., y=...).") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise LoadError(f"{str(p)!r} is not a readable .npz file: {err}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise LoadError(f"{str(p)!r} is a single .npy array, not an .npz archive; save with np.savez(f, x=..., y=...).")
    loaded.close()
    try:
        with zipfile.ZipFile(p) as archive:
            return _read_arrays(p, archive, max_rows)
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise LoadError(f"{str(p)!r} is not a readable .npz file: {err}") from None


def _read_arrays(p: Path, archive: zipfile.ZipFile, max_rows: int | None) -> ArrayData:
    members = {name[:-4]: name for name in archive.namelist() if name.endswith(".npy")}
    for key in ("x", "y"):
        if key not in members:
            raise LoadError(f"{str(p)!r} has no array {key!r} (found {sorted(members)}); "
                            "save with np.savez(f, x=..., y=...).")
    headers = {key: _header(p, archive, name) for key, name in members.items()}
    (x_shape, x_dtype), (y_shape, y_dtype) = headers["x"][:2], headers["y"][:2]
    if not np.issubdtype(x_dtype, np.floating):
        raise LoadError(f"x must be floating point (float32), got {x_dtype}.")
    if len(x_shape) not in (2, 4):
        raise LoadError(f"x must have shape (N, D) or (N, C, H, W), got {x_shape}.")
    if x_shape[0] == 0:
        raise LoadError(f"{str(p)!r} holds no examples (x has shape {x_shape}).")
    if not np.issubdtype(y_dtype, np.integer):
        raise LoadError(f"y must hold integer class labels (int64), got {y_dtype}.")
    if y_shape != (x_shape[0],):
        raise LoadError(f"y must have shape ({x_shape[0]},) to match x, got {y_shape}.")
    rows = x_shape[0] if max_rows is None else min(max_rows, x_shape[0])
    x = _read_rows(archive, members["x"], rows, np.dtype(np.float32), "x")
    y = _read_rows(archive, members["y"], rows, np.dtype(np.int64), "y")
    if (y < 0).any():
        raise LoadError("y holds negative labels; class labels are 0..n_classes-1.")
    names: tuple[str, ...] | None = None
    if "class_names" in members:
        cn_shape, cn_dtype = headers["class_names"][:2]
        if cn_dtype.kind not in ("U", "S") or len(cn_shape) != 1:
            raise LoadError(f"class_names must be a 1-d array of strings, got {cn_dtype} {cn_shape}.")
        with archive.open(members["class_names"]) as f:
            cn = np.lib.format.read_array(f, allow_pickle=False)
        names = tuple(str(s.decode() if isinstance(s, bytes) else s) for s in cn.tolist())
        if int(y.max()) >= len(names):
            raise LoadError(f"y has label {int(y.max())} but class_names lists only {len(names)} classes.")
    return ArrayData(torch.from_numpy(x), torch.from_numpy(y), names)


def _header(p: Path, archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    """``(shape, dtype, fortran_order)`` of one array of the archive, read from its .npy header alone."""
    with archive.open(name) as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
        except ValueError as err:
            raise LoadError(f"{str(p)!r}: the array {name!r} is not a readable .npy member: {err}") from None
    if dtype.hasobject:
        raise LoadError(f"{str(p)!r} holds object arrays (pickled data), which are never loaded.")
    return tuple(shape), dtype, fortran


def _read_rows(archive: zipfile.ZipFile, name: str, rows: int, out_dtype: np.dtype, what: str) -> np.ndarray:
    """The first ``rows`` rows of an archive array as ``out_dtype``, read and checked chunk by chunk."""
    with archive.open(name) as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        if fortran and len(shape) > 1:  # rows are not contiguous on disk: read it whole (rare)
            with archive.open(name) as whole:
                return _convert(np.lib.format.read_array(whole, allow_pickle=False)[:rows], out_dtype, what)
        out = np.empty((rows, *shape[1:]), dtype=out_dtype)
        row_items = int(np.prod(shape[1:], dtype=np.int64))
        chunk_rows = max(1, (64 << 20) // max(1, row_items * dtype.itemsize))
        non_finite = 0
        for start in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - start)
            buffer = np.empty((n, *shape[1:]), dtype=dtype)
            view = memoryview(buffer).cast("B")
            got = f.readinto(view)
            if got != view.nbytes:
                raise LoadError(f"the array {what!r} is truncated: expected {shape} of {dtype}.")
            if np.issubdtype(dtype, np.floating):
                non_finite += int(buffer.size - np.count_nonzero(np.isfinite(buffer)))
                if non_finite:
                    continue
            out[start:start + n] = _convert(buffer, out_dtype, what)
    if non_finite:
        raise LoadError(f"{what} contains {non_finite} NaN/inf values; clean the data first.")
    return out


def _convert(chunk: np.ndarray, out_dtype: np.dtype, what: str) -> np.ndarray:
    if np.issubdtype(chunk.dtype, np.floating):
        if not np.isfinite(chunk).all():
            raise LoadError(f"{what} contains {int(chunk.size - np.count_nonzero(np.isfinite(chunk)))} NaN/inf "
                            "values; clean the data first.")
        limit = float(np.finfo(out_dtype).max) if np.issubdtype(out_dtype, np.floating) else None
        if limit is not None and chunk.size and float(np.abs(chunk).max()) > limit:
            raise LoadError(f"{what} holds values beyond {out_dtype}'s range (largest |{what}| = "
                            f"{float(np.abs(chunk).max()):.3g}); rescale the data.")
    elif np.issubdtype(out_dtype, np.integer) and chunk.size:
        info = np.iinfo(out_dtype)
        if chunk.max() > info.max:
            raise LoadError(f"{what} holds the value {int(chunk.max())}, beyond {out_dtype}'s range; "
                            "labels are 0..n_classes-1.")
    return chunk.astype(out_dtype, copy=False)


def check_writable(path: Path, what: str, *, folder: bool) -> None:
    """Refuse, before any work, an output ``path`` (a folder, or a file) that this run could not write.

    Nothing is created: the nearest existing folder (``path`` itself for an existing folder) is
    probed with a temporary file, which catches permissions, read-only file systems and a file
    standing where a folder must be.

    Raises:
        InputError: ``path`` (or a parent) is a file where a folder is needed, a folder where a file
            is needed, or not writable.
    """
    try:
        if folder and path.exists() and not path.is_dir():
            raise InputError(f"{what} {str(path)!r} is a file, not a folder; give a folder path.")
        if not folder and path.is_dir():
            raise InputError(f"{what} {str(path)!r} is a folder; give a file path.")
        probe = path if folder and path.is_dir() else path.absolute().parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise InputError(f"{what} {str(path)!r} cannot be created: {str(probe)!r} is a file, not a folder; "
                             "choose another path.")
        handle, name = tempfile.mkstemp(dir=probe, prefix=".seethrough-probe-")
        os.close(handle)
        os.unlink(name)
    except OSError as err:
        raise InputError(f"{what} {str(path)!r} is not writable ({err.strerror or err}); choose a path you can "
                         "write to.") from None


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Create ``path`` atomically: ``write(tmp)`` fills a temp file beside it, then it is renamed.

    Readers see the old file or the complete new one, never a partial one; on any error the temp
    file is removed and ``path`` is untouched. The file is made readable by all (0644), as a plain
    ``open`` would under the usual umask (``mkstemp`` alone makes it owner-only).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(path: str | os.PathLike[str], tensors: Mapping[str, Tensor], metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``tensors`` to ``path`` (safetensors) and ``metadata`` to ``path + '.json'``, each atomically."""
    from safetensors.torch import save_file

    p = Path(path)
    text = json.dumps(dict(metadata or {}), indent=2, sort_keys=True)  # fail before writing anything
    atomic_write(p, lambda tmp: save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp))
    atomic_write(p.with_name(p.name + ".json"), lambda tmp: Path(tmp).write_text(text))


def load_tensors(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read what `save_tensors` wrote: ``(tensors, metadata)``."""
    p = Path(path)
    tensors = load_weights(p)
    side = p.with_name(p.name + ".json")
    meta = json.loads(side.read_text()) if side.is_file() else {}
    return tensors, meta
