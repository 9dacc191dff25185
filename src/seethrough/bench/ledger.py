"""The benchmark's results store: one SQLite row per unit of work, resumable after kill -9.

A *unit* is one (game, method, seed, config) case; its `UnitKey.id` is the primary key. Each
``record_*`` call is one committed transaction, so a killed run loses nothing already recorded and
a rerun skips the ids in `Ledger.finished`. Errored units are stored as errors, never as results.
There is ONE writer, the driver process (executors send results back to it); any number of other
processes may read at the same time (WAL mode, ``Ledger(path, read_only=True)``). Tables leave as
DataFrames or Parquet for analysis and the report (DESIGN.md section 7).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pandas as pd

from ..core.errors import InputError, InputTypeError, LoadError
from ..core.io import atomic_write

__all__ = ["UnitKey", "Ledger"]

_SCHEMA_VERSION = 1
_COLUMNS = ("id", "game", "method", "seed", "config_hash", "status", "metrics", "error", "config", "seconds",
            "attempts", "updated")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    id          TEXT PRIMARY KEY,
    game        TEXT NOT NULL,
    method      TEXT NOT NULL,
    seed        INTEGER NOT NULL,
    config_hash TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    metrics     TEXT,
    error       TEXT,
    config      TEXT NOT NULL,
    seconds     REAL NOT NULL,
    attempts    INTEGER NOT NULL,
    updated     REAL NOT NULL,
    CHECK ((status = 'ok' AND metrics IS NOT NULL AND error IS NULL)
        OR (status = 'error' AND metrics IS NULL AND error IS NOT NULL))
)
"""
_INSERT = """
INSERT INTO units (id, game, method, seed, config_hash, status, metrics, error, config, seconds, attempts, updated)
VALUES (:id, :game, :method, :seed, :config_hash, :status, :metrics, :error, :config, :seconds, 1, :updated)
"""
# A new result replaces whatever was there; attempts counts every record for the id.
_UPSERT_OK = _INSERT + """
ON CONFLICT (id) DO UPDATE SET
    status = 'ok', metrics = excluded.metrics, error = NULL, config = excluded.config,
    seconds = excluded.seconds, attempts = units.attempts + 1, updated = excluded.updated
"""
# An error never overwrites a result (a flaky rerun must not erase a finished unit); it only counts.
_UPSERT_ERROR = _INSERT + """
ON CONFLICT (id) DO UPDATE SET
    attempts = units.attempts + 1,
    error    = CASE WHEN units.status = 'ok' THEN units.error   ELSE excluded.error   END,
    config   = CASE WHEN units.status = 'ok' THEN units.config  ELSE excluded.config  END,
    seconds  = CASE WHEN units.status = 'ok' THEN units.seconds ELSE excluded.seconds END,
    updated  = CASE WHEN units.status = 'ok' THEN units.updated ELSE excluded.updated END
"""
# The dtype this pandas gives a column of strings (object before pandas 3, str from 3 on); set explicitly
# so that an empty ledger, or one with no errors, has the same dtypes as a Parquet round trip.
_STR_DTYPE = pd.Series(["text"]).dtype
_FRAME_COLUMNS = ("id", "game", "method", "seed", "config_hash", "status", "error", "config", "seconds", "attempts",
                  "updated")


@dataclass(frozen=True)
class UnitKey:
    """The identity of one unit of benchmark work.

    Args:
        game: the game's name.
        method: the method under test.
        seed: the case's seed.
        config_hash: a digest of everything else that changes the result (sizes, hyper-parameters).

    Raises:
        InputTypeError: a field of the wrong type.
        InputError: an empty field, or one containing ``/`` (the separator in `id`).

    Example:
        >>> UnitKey("ablation", "random", 3, "9f2c").id
        'ablation/random/3/9f2c'
    """

    game: str
    method: str
    seed: int
    config_hash: str

    def __post_init__(self) -> None:
        for name in ("game", "method", "config_hash"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise InputTypeError(f"UnitKey.{name} must be a str, got {type(value).__name__} {value!r}.")
            if not value or "/" in value:
                raise InputError(f"UnitKey.{name} must be a non-empty string without '/' (the id separator), "
                                 f"got {value!r}.")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise InputTypeError(f"UnitKey.seed must be an int, got {type(self.seed).__name__} {self.seed!r}.")

    @property
    def id(self) -> str:
        """``game/method/seed/config_hash``: the unit's primary key, the same in every process and run."""
        return f"{self.game}/{self.method}/{self.seed}/{self.config_hash}"


class Ledger:
    """A SQLite store of benchmark results, one row per `UnitKey`; ONE writer, many readers.

    The file (and its parent folders) is created on first use, in WAL mode so that readers in other
    processes never block the writer nor see a half-written row. ``synchronous=FULL`` fsyncs the WAL
    at every commit: NORMAL already survives a kill -9 of the writer (committed pages sit in the OS
    cache), but FULL also survives a power cut or a VM being stopped, and one fsync per unit costs
    milliseconds against units that take seconds. Not thread-safe: the driver owns the writer.

    Args:
        path: the database file.
        read_only: open an existing ledger without the right to write (safe beside a running
            writer).

    Raises:
        LoadError: the file is not a SQLite database, holds another schema, is missing while
            ``read_only``, or cannot be put in WAL mode.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder, Ledger(Path(folder) / "bench.db") as ledger:
        ...     key = UnitKey("ablation", "random", 0, "9f2c")
        ...     ledger.record_error(key, "ValueError: boom", seconds=0.5, config={"n": 8})
        ...     ledger.record_ok(key, {"auc": 0.75}, seconds=1.5, config={"n": 8})
        ...     ledger.status(key), ledger.rows()[0]["metrics"], ledger.rows()[0]["attempts"]
        ('ok', {'auc': 0.75}, 2)
    """

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._conn: sqlite3.Connection | None = None
        try:
            if read_only:
                if not self.path.is_file():
                    why = "is a folder" if self.path.is_dir() else "does not exist"
                    raise LoadError(f"ledger {str(self.path)!r} {why}; nothing to read.")
                self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                             isolation_level=None, timeout=30.0)
            else:
                if self.path.is_dir():
                    raise LoadError(f"ledger {str(self.path)!r} is a folder; give the path of a database file in it.")
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as err:
                    raise LoadError(f"cannot create the folder of ledger {str(self.path)!r} ({err.strerror or err}); "
                                    "choose a path you can write to.") from None
                self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
                self._set_up()
            self._check_schema()
        except sqlite3.DatabaseError as err:
            self.close()
            raise LoadError(f"cannot open {str(self.path)!r} as a seethrough ledger: {err}") from err
        except BaseException:
            self.close()
            raise

    def _set_up(self) -> None:
        """Create the schema in a new file; check (never alter) an existing one; then switch on WAL."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if version == 0 and tables == 0:
                conn.execute(_SCHEMA)
                conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            else:
                self._check_schema()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]  # persistent; outside any transaction
        if str(mode).lower() != "wal":
            raise LoadError(f"ledger {str(self.path)!r} could not be put in WAL mode (got {mode!r}); "
                            "put it on a local file system.")
        conn.execute("PRAGMA synchronous=FULL")

    def _check_schema(self) -> None:
        conn = self._connection()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        columns = tuple(row[1] for row in conn.execute("PRAGMA table_info(units)"))
        if version != _SCHEMA_VERSION or columns != _COLUMNS:
            raise LoadError(f"{str(self.path)!r} is not a seethrough ledger of schema version {_SCHEMA_VERSION} "
                            f"(found version {version}, columns {list(columns)}); use a new --db file.")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise InputError(f"ledger {str(self.path)!r} is closed; open a new Ledger(path).")
        return self._conn

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else ("read-only" if self.read_only else "open")
        return f"Ledger({str(self.path)!r}, {state})"

    def close(self) -> None:
        """Close the connection (idempotent). Every recorded unit is already committed."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def record_ok(self, key: UnitKey, metrics: Mapping[str, float], *, seconds: float,
                  config: Mapping[str, Any]) -> None:
        """Store a finished unit's metrics, replacing an earlier error or result for the same id.

        Args:
            key: the unit.
            metrics: metric name to a finite number; at least one.
            seconds: how long the unit took.
            config: the unit's full configuration (JSON-serialisable), kept for provenance.

        Raises:
            InputError: NaN/inf metric (named), no metrics, negative or non-finite seconds, config
                that JSON cannot hold, or a read-only/closed ledger. Nothing is written.
            InputTypeError: arguments of the wrong type.
        """
        params = _row_params(key, seconds, config)
        params.update(status="ok", metrics=_metrics_json(metrics, key), error=None)
        self._write(_UPSERT_OK, params)

    def record_error(self, key: UnitKey, error: str, *, seconds: float, config: Mapping[str, Any]) -> None:
        """Store a unit that failed, unless the same id already has a result (which is kept).

        Args:
            key: the unit.
            error: what went wrong, e.g. ``"ValueError: ..."``; non-empty.
            seconds: how long the unit ran before failing.
            config: the unit's full configuration (JSON-serialisable).

        Raises:
            InputError: empty error text, bad seconds or config, or a read-only/closed ledger.
            InputTypeError: arguments of the wrong type.
        """
        params = _row_params(key, seconds, config)
        if not isinstance(error, str):
            raise InputTypeError(f"error must be a str describing the failure, got {type(error).__name__}.")
        if not error.strip():
            raise InputError(f"error text for unit {key.id!r} is empty; pass e.g. f'{{type(err).__name__}}: {{err}}'.")
        params.update(status="error", metrics=None, error=error)
        self._write(_UPSERT_ERROR, params)

    def _write(self, sql: str, params: dict[str, Any]) -> None:
        conn = self._connection()
        if self.read_only:
            raise InputError(f"ledger {str(self.path)!r} was opened read_only; open Ledger(path) to write.")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(sql, params)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def status(self, key: UnitKey) -> Literal["ok", "error"] | None:
        """``"ok"`` or ``"error"`` for a recorded unit, ``None`` if it was never recorded."""
        if not isinstance(key, UnitKey):
            raise InputTypeError(f"key must be a UnitKey, got {type(key).__name__}.")
        row = self._connection().execute("SELECT status FROM units WHERE id = ?", (key.id,)).fetchone()
        if row is None:
            return None
        return "ok" if row[0] == "ok" else "error"

    def finished(self) -> set[str]:
        """The ids of units with a result (status ``ok``): what a resumed run skips."""
        return {row[0] for row in self._connection().execute("SELECT id FROM units WHERE status = 'ok'")}

    def rows(self, *, games: Sequence[str] | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Recorded units as dicts, ordered by (game, method, seed, config_hash).

        Args:
            games: keep only these games (all when ``None``).
            status: keep only ``"ok"`` or ``"error"`` units (all when ``None``).

        Returns:
            One dict per unit with keys ``id, game, method, seed, config_hash, status, metrics``
            (a dict, ``None`` for errors), ``error`` (``None`` for results), ``config`` (a dict),
            ``seconds, attempts, updated``.

        Raises:
            InputTypeError: ``games`` given as a single string.
            InputError: an unknown ``status``.
        """
        where: list[str] = []
        params: list[Any] = []
        if games is not None:
            if isinstance(games, str):
                raise InputTypeError(f"games must be a list of names, got the string {games!r}; pass [{games!r}].")
            names = list(games)
            where.append(f"game IN ({', '.join('?' * len(names))})" if names else "0")
            params.extend(names)
        if status is not None:
            if status not in ("ok", "error"):
                raise InputError(f"status must be 'ok', 'error' or None, got {status!r}.")
            where.append("status = ?")
            params.append(status)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM units"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY game, method, seed, config_hash"
        out = []
        for values in self._connection().execute(sql, params):
            row = dict(zip(_COLUMNS, values, strict=True))
            row["metrics"] = None if row["metrics"] is None else json.loads(row["metrics"])
            row["config"] = json.loads(row["config"])
            out.append(row)
        return out

    def to_frame(self) -> pd.DataFrame:
        """All units as a DataFrame, one row each, in `rows` order.

        Columns: ``id, game, method, seed, config_hash, status, error, config`` (JSON text),
        ``seconds, attempts, updated``, then one float column ``metric:<name>`` per metric name
        (sorted; NaN where a unit lacks that metric, as errors do).
        """
        rows = self.rows()
        names = sorted({name for row in rows for name in (row["metrics"] or {})})
        data: dict[str, Any] = {column: [row[column] for row in rows] for column in _FRAME_COLUMNS}
        data["config"] = [json.dumps(row["config"], sort_keys=True) for row in rows]
        frame = pd.DataFrame(data, columns=list(_FRAME_COLUMNS))
        dtypes: dict[str, Any] = {column: _STR_DTYPE for column in _FRAME_COLUMNS}
        dtypes.update(seed="int64", seconds="float64", attempts="int64", updated="float64")
        frame = frame.astype(dtypes)
        for name in names:
            frame[f"metric:{name}"] = pd.Series([(row["metrics"] or {}).get(name, math.nan) for row in rows],
                                                dtype="float64")
        return frame

    def export_parquet(self, path: str | os.PathLike[str]) -> None:
        """Write `to_frame` to a Parquet file, atomically (a temp file in the same folder, then rename)."""
        frame = self.to_frame()
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, engine="pyarrow", index=False))


def _row_params(key: UnitKey, seconds: float, config: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(key, UnitKey):
        raise InputTypeError(f"key must be a UnitKey, got {type(key).__name__}.")
    if not isinstance(seconds, numbers.Real) or isinstance(seconds, bool):
        raise InputTypeError(f"seconds must be a number, got {type(seconds).__name__}.")
    if not math.isfinite(float(seconds)) or seconds < 0:
        raise InputError(f"seconds for unit {key.id!r} must be finite and >= 0, got {seconds!r}.")
    if not isinstance(config, Mapping):
        raise InputTypeError(f"config must be a mapping, got {type(config).__name__}.")
    try:
        config_json = json.dumps(dict(config), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise InputError(f"config for unit {key.id!r} must be JSON-serialisable (str keys; numbers, strings, "
                         f"lists, dicts; no NaN): {err}") from err
    return {"id": key.id, "game": key.game, "method": key.method, "seed": key.seed, "config_hash": key.config_hash,
            "config": config_json, "seconds": float(seconds), "updated": time.time()}


def _metrics_json(metrics: Mapping[str, float], key: UnitKey) -> str:
    if not isinstance(metrics, Mapping):
        raise InputTypeError(f"metrics must be a mapping of names to numbers, got {type(metrics).__name__}.")
    if not metrics:
        raise InputError(f"unit {key.id!r} has no metrics; record a failure with record_error instead.")
    clean: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"metric names must be non-empty strings, got {name!r} for unit {key.id!r}.")
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise InputTypeError(f"metric {name!r} of unit {key.id!r} must be a float, got {type(value).__name__}.")
        if not math.isfinite(float(value)):
            raise InputError(f"metric {name!r} of unit {key.id!r} is {float(value)}; metrics must be finite. "
                             "A case whose metric is undefined failed: record it with record_error.")
        clean[name] = float(value)
    return json.dumps(dict(sorted(clean.items())))
