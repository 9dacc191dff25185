"""Fingerprints of data: which examples a finding was discovered on, cheaply and deterministically.

Evidence, beside `Finding` and `validate`. A finding tested on the data it was discovered on is
not tested: its effect is inflated by selection. `fingerprint(inputs)` hashes every example (row)
of the inputs' tensors, so `validate` can tell whether its data is the discovery data, or shares
examples with it, and flag the result as in-sample.

What is hashed, per example: every tensor whose leading size is the batch size, in order (a dict
by sorted key), values cast to a canonical dtype (float64, complex128 or int64, so the same
values in float32 and float64 or on another device hash alike). A row of at most
``FULL_ROW_ELEMENTS`` elements is hashed in full; a longer row through a strided sample of that
many elements, evenly spaced over the flattened row (first and last included). Each row is
hashed with BLAKE2b to 64 bits. The digest (128-bit BLAKE2b) also covers the tensors' names,
dtypes and shapes, and a strided sample of tensors that are not per-example (a shared table).

Collision risk: two different rows collide by chance with probability about 2⁻⁶⁴ per pair
(negligible); what is not negligible is that two long rows (more than ``FULL_ROW_ELEMENTS``
elements, e.g. a 3×224×224 image) that differ only at unsampled elements (a small stamped patch,
a one-pixel edit) hash alike, so such near-copies count as the same example. That errs towards
flagging a validation as in-sample (a warning), never towards calling shared examples held out.
Non-tensor arguments (flags, strings) are not hashed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import InitVar, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.errors import InputError, InputTypeError
from ..core.types import Inputs

__all__ = ["Fingerprint", "fingerprint", "FULL_ROW_ELEMENTS"]

#: Rows with at most this many elements are hashed in full; longer ones through this many samples.
FULL_ROW_ELEMENTS = 4096
_CHUNK_BYTES = 1 << 25  # canonical values of at most 32 MiB of rows are materialised at a time


@dataclass(frozen=True)
class Fingerprint:
    """Which data a result was computed on: a digest of the whole and a hash per example.

    Two fingerprints are equal when their digests are (same tensors, same order). The per-example
    hashes (``rows``, an init-only argument kept out of the fields so that ``to_dict`` and
    `seethrough.core.jsonable` give two small values) answer `overlap`: how many examples of other
    data also occur here.

    Attributes:
        digest: 32 hex characters (BLAKE2b-128) over names, dtypes, shapes and every row hash.
        n_examples: the batch size (rows hashed).
    """

    digest: str
    n_examples: int
    rows: InitVar[np.ndarray | None] = None

    def __post_init__(self, rows: np.ndarray | None) -> None:
        hashes = np.zeros(0, dtype=np.uint64) if rows is None else np.asarray(rows, dtype=np.uint64).reshape(-1)
        if rows is not None and len(hashes) != self.n_examples:
            raise InputError(f"a fingerprint of {self.n_examples} examples got {len(hashes)} row hashes.")
        object.__setattr__(self, "_rows", np.unique(hashes))

    def overlap(self, other: Fingerprint) -> int:
        """The number of distinct examples of ``other`` that also occur in these data (by row hash)."""
        return int(np.isin(other._rows, self._rows, assume_unique=True).sum())  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        """``{"digest", "n_examples"}`` (the row hashes stay out of JSON)."""
        return {"digest": self.digest, "n_examples": self.n_examples}


def fingerprint(inputs: Inputs | Iterable[Inputs]) -> Fingerprint:
    """The `Fingerprint` of ``inputs`` (a tensor, tuple or dict) or of a re-iterable of input batches.

    Args:
        inputs: what the model is called with; or a list (DataLoader...) of such batches, whose
            examples count in iteration order (a one-shot generator is consumed).

    Raises:
        InputTypeError: something that is not inputs or an iterable of inputs.
        InputError: inputs without a tensor, or batches whose tensors change name, dtype or shape.

    Example:
        >>> x = torch.arange(12.0).view(4, 3)
        >>> fingerprint(x) == fingerprint(x.double()), fingerprint(x) == fingerprint(x[:3])
        (False, False)
        >>> fingerprint(x).overlap(fingerprint(x[2:].double()))
        2
    """
    if isinstance(inputs, (Tensor, tuple, Mapping)):
        return _fingerprint_batches([inputs])
    if not isinstance(inputs, Iterable) or isinstance(inputs, (str, bytes)):
        raise InputTypeError(f"fingerprint takes model inputs (a tensor, tuple or dict) or an iterable of input "
                             f"batches, got {type(inputs).__name__}.")
    return _fingerprint_batches(inputs)


def _fingerprint_batches(batches: Iterable[Inputs]) -> Fingerprint:
    whole = hashlib.blake2b(digest_size=16)
    rows: list[np.ndarray] = []
    layout: list[tuple[str, str, tuple[int | str, ...]]] | None = None
    for inputs in batches:
        named = _named_tensors(inputs)
        if named[0][1].ndim == 0:
            raise InputError("the first input tensor is 0-dim; inputs need a leading batch dimension.")
        n = named[0][1].shape[0]
        per_row = [(name, t) for name, t in named if t.ndim > 0 and t.shape[0] == n]
        per_row_names = {name for name, _ in per_row}
        # Text batches are padded to different lengths: the sequence axis of inputs that carry an
        # attention mask is compared by name, every other size exactly.
        seq = _sequence_length(inputs, n)
        this = [(name, str(t.dtype), tuple("seq" if seq is not None and i == 0 and size == seq else size
                                           for i, size in enumerate(t.shape[1:])))
                for name, t in per_row]
        if layout is not None and this != layout:
            raise InputError(f"batches differ in their tensors: {layout} then {this}; fingerprint batches of one kind.")
        if layout is None:
            layout = this
            whole.update(repr(this).encode())
        for name, t in named:  # shared tensors (another leading size) enter the digest, not the rows
            if name not in per_row_names:
                whole.update(repr((name, str(t.dtype), tuple(t.shape))).encode())
                whole.update(_canonical(_sample(t.reshape(1, -1))).tobytes())
        if n == 0:
            continue
        mask = _padding_mask(inputs, n)
        columns = np.stack([_row_hashes(t, mask) for _, t in per_row], axis=1)
        batch_rows = columns[:, 0] if columns.shape[1] == 1 else _hash_rows(np.ascontiguousarray(columns))
        whole.update(batch_rows.tobytes())
        rows.append(batch_rows)
    if layout is None:
        raise InputError("no batches to fingerprint; pass inputs holding at least one example.")
    hashes = np.concatenate(rows)
    return Fingerprint(whole.hexdigest(), len(hashes), hashes)


def _sequence_length(inputs: Inputs, n: int) -> int | None:
    """The sequence length of HuggingFace-style dict inputs with an ``(n, seq)`` attention mask."""
    mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
    return int(mask.shape[1]) if isinstance(mask, Tensor) and mask.ndim == 2 and mask.shape[0] == n else None


def _padding_mask(inputs: Inputs, n: int) -> Tensor | None:
    """The ``(n, seq)`` attention mask of HuggingFace-style dict inputs, if they carry one."""
    mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
    if isinstance(mask, Tensor) and mask.ndim == 2 and mask.shape[0] == n and not bool(mask.bool().all()):
        return mask.bool()
    return None


def _named_tensors(inputs: Inputs) -> list[tuple[str, Tensor]]:
    if isinstance(inputs, Tensor):
        named = [("inputs", inputs)]
    elif isinstance(inputs, tuple):
        named = [(f"inputs[{i}]", t) for i, t in enumerate(inputs) if isinstance(t, Tensor)]
    elif isinstance(inputs, Mapping):
        named = [(f"inputs[{k!r}]", inputs[k]) for k in sorted(inputs, key=str) if isinstance(inputs[k], Tensor)]
    else:
        raise InputTypeError(f"each batch must be a tensor, tuple or dict of inputs, got {type(inputs).__name__}.")
    if not named:
        raise InputError("inputs hold no tensor to fingerprint.")
    return named


def _sample(rows: Tensor) -> Tensor:
    """``(n, m)`` rows, or an evenly strided sample of ``FULL_ROW_ELEMENTS`` of their columns."""
    m = rows.shape[1]
    if m <= FULL_ROW_ELEMENTS:
        return rows
    index = torch.linspace(0, m - 1, FULL_ROW_ELEMENTS, dtype=torch.float64).round().long().to(rows.device)
    return rows.index_select(1, index)


def _canonical(values: Tensor) -> np.ndarray:
    """The values on the CPU as float64, complex128 or int64 (bool and all integers alike), C-contiguous."""
    values = values.detach()
    dtype = torch.complex128 if values.is_complex() else torch.float64 if values.is_floating_point() else torch.int64
    return np.ascontiguousarray(values.to(device="cpu", dtype=dtype).numpy())


def _row_hashes(t: Tensor, mask: Tensor | None = None) -> np.ndarray:
    """One 64-bit BLAKE2b hash per row of ``t`` (over its canonical, possibly sampled, values).

    With a padding ``mask`` ``(n, seq)``, a tensor whose dim 1 is the sequence keeps only each
    row's real positions, so a sentence hashes alike however its batch was padded.
    """
    if mask is not None and t.ndim >= 2 and t.shape[1] == mask.shape[1]:
        return np.concatenate([_row_hashes(t[i:i + 1, mask[i]]) for i in range(t.shape[0])])
    flat = t.reshape(t.shape[0], -1)
    width = max(1, min(flat.shape[1], FULL_ROW_ELEMENTS)) * 16
    step = max(1, _CHUNK_BYTES // width)
    out = np.empty(flat.shape[0], dtype=np.uint64)
    for start in range(0, flat.shape[0], step):
        chunk = _canonical(_sample(flat[start:start + step]))
        out[start:start + len(chunk)] = _hash_rows(chunk)
    return out


def _hash_rows(rows: np.ndarray) -> np.ndarray:
    """BLAKE2b-64 of each row's bytes (little-endian uint64)."""
    digests = b"".join(hashlib.blake2b(memoryview(row), digest_size=8).digest() for row in rows)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)
