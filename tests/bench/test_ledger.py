"""The results ledger: round trips, upsert rules, kill -9 survival and a concurrent reader (DESIGN §5, §8)."""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from seethrough.bench.ledger import Ledger, UnitKey
from seethrough.core.errors import InputError, InputTypeError, LoadError, SeethroughError

CONFIG = {"n_units": 8, "sizes": [2, 3], "name": "tiny"}


def key(seed: int, game: str = "ablation", method: str = "random") -> UnitKey:
    return UnitKey(game, method, seed, "c0ffee")


def test_unit_key_id_is_deterministic_and_validated() -> None:
    assert key(3).id == "ablation/random/3/c0ffee"
    assert UnitKey("ablation", "random", 3, "c0ffee") == key(3)
    assert hash(UnitKey("ablation", "random", 3, "c0ffee")) == hash(key(3))
    with pytest.raises(InputError, match="'/'"):
        UnitKey("a/b", "m", 0, "h")
    with pytest.raises(InputError, match="non-empty"):
        UnitKey("g", "", 0, "h")
    with pytest.raises(InputTypeError, match="seed"):
        UnitKey("g", "m", True, "h")


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "bench.db"  # parent folders are created
    with Ledger(path) as ledger:
        ledger.record_ok(key(0), {"auc": 0.75, "recall": 0.5}, seconds=1.25, config=CONFIG)
        ledger.record_error(key(1), "ValueError: boom", seconds=0.5, config=CONFIG)
    with Ledger(path) as ledger:  # reopened: everything was committed
        assert ledger.status(key(0)) == "ok"
        assert ledger.status(key(1)) == "error"
        assert ledger.status(key(2)) is None
        assert ledger.finished() == {key(0).id}
        ok, err = ledger.rows()
    assert ok["id"] == key(0).id and ok["game"] == "ablation" and ok["method"] == "random" and ok["seed"] == 0
    assert ok["config_hash"] == "c0ffee" and ok["status"] == "ok" and ok["error"] is None
    assert ok["metrics"] == {"auc": 0.75, "recall": 0.5}
    assert ok["config"] == CONFIG and ok["seconds"] == 1.25 and ok["attempts"] == 1
    assert err["status"] == "error" and err["metrics"] is None and err["error"] == "ValueError: boom"
    assert err["seconds"] == 0.5 and err["attempts"] == 1
    for row in (ok, err):
        assert isinstance(row["updated"], float) and row["updated"] > 1.6e9


def test_journal_is_wal_and_synchronous_full(tmp_path: Path) -> None:
    with Ledger(tmp_path / "bench.db") as ledger:
        conn = ledger._connection()  # white-box: the durability settings are the contract here
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # 2 = FULL


def test_same_ok_twice_is_one_row_with_two_attempts(tmp_path: Path) -> None:
    with Ledger(tmp_path / "bench.db") as ledger:
        ledger.record_ok(key(0), {"auc": 0.75}, seconds=1.0, config=CONFIG)
        ledger.record_ok(key(0), {"auc": 0.75}, seconds=2.0, config=CONFIG)
        rows = ledger.rows()
    assert len(rows) == 1
    assert rows[0]["attempts"] == 2 and rows[0]["metrics"] == {"auc": 0.75} and rows[0]["seconds"] == 2.0


def test_error_then_ok_becomes_ok(tmp_path: Path) -> None:
    with Ledger(tmp_path / "bench.db") as ledger:
        ledger.record_error(key(0), "RuntimeError: flaky", seconds=1.0, config=CONFIG)
        ledger.record_ok(key(0), {"auc": 0.5}, seconds=2.0, config=CONFIG)
        (row,) = ledger.rows()
        assert ledger.finished() == {key(0).id}
    assert row["status"] == "ok" and row["error"] is None and row["metrics"] == {"auc": 0.5}
    assert row["attempts"] == 2 and row["seconds"] == 2.0


def test_ok_then_error_keeps_the_result(tmp_path: Path) -> None:
    with Ledger(tmp_path / "bench.db") as ledger:
        ledger.record_ok(key(0), {"auc": 0.5}, seconds=2.0, config=CONFIG)
        before = ledger.rows()[0]
        ledger.record_error(key(0), "RuntimeError: flaky", seconds=9.0, config={"other": 1})  # raises nothing
        (after,) = ledger.rows()
        assert ledger.status(key(0)) == "ok"
    assert after["attempts"] == 2
    assert {k: v for k, v in after.items() if k != "attempts"} == {k: v for k, v in before.items() if k != "attempts"}


def test_rows_are_ordered_and_filtered(tmp_path: Path) -> None:
    units = [key(10, "b", "y"), key(2, "a", "z"), key(1, "b", "x"), key(10, "a", "z"), key(3, "a", "y")]
    with Ledger(tmp_path / "bench.db") as ledger:
        for i, unit in enumerate(units):
            if i == 2:
                ledger.record_error(unit, "ValueError: no", seconds=0.0, config={})
            else:
                ledger.record_ok(unit, {"score": float(i)}, seconds=0.1, config={})
        order = [(r["game"], r["method"], r["seed"]) for r in ledger.rows()]
        assert order == [("a", "y", 3), ("a", "z", 2), ("a", "z", 10), ("b", "x", 1), ("b", "y", 10)]  # seed numeric
        assert [r["seed"] for r in ledger.rows(games=["b"])] == [1, 10]
        assert [r["game"] for r in ledger.rows(games=["b"], status="ok")] == ["b"]
        assert [r["id"] for r in ledger.rows(status="error")] == [units[2].id]
        assert ledger.rows(games=[]) == []
        with pytest.raises(InputTypeError, match="list of names"):
            ledger.rows(games="a")
        with pytest.raises(InputError, match="status"):
            ledger.rows(status="done")


def _filled(path: Path) -> Ledger:
    ledger = Ledger(path)
    ledger.record_ok(key(1, "g1", "m1"), {"auc": 0.9, "recall": 1.0}, seconds=1.0, config={"a": 1})
    ledger.record_ok(key(0, "g1", "m1"), {"auc": 0.8}, seconds=2.0, config={"a": 1})
    ledger.record_error(key(0, "g2", "m1"), "ValueError: <bad> & 'odd'", seconds=3.0, config={"b": [1, 2]})
    ledger.record_ok(key(0, "g2", "m2"), {"mse": 0.25}, seconds=4.0, config={})
    return ledger


def test_to_frame_has_one_row_per_unit_and_metric_columns(tmp_path: Path) -> None:
    with _filled(tmp_path / "bench.db") as ledger:
        frame = ledger.to_frame()
        rows = ledger.rows()
    assert list(frame.columns) == ["id", "game", "method", "seed", "config_hash", "status", "error", "config",
                                   "seconds", "attempts", "updated", "metric:auc", "metric:mse", "metric:recall"]
    assert frame["id"].tolist() == [r["id"] for r in rows]
    assert frame["seed"].tolist() == [0, 1, 0, 0]
    assert frame["metric:auc"].tolist()[:2] == [0.8, 0.9]
    assert math.isnan(frame["metric:recall"].iloc[0]) and frame["metric:recall"].iloc[1] == 1.0
    err = frame[frame["status"] == "error"].iloc[0]
    assert err["error"] == "ValueError: <bad> & 'odd'"
    assert all(math.isnan(err[c]) for c in ("metric:auc", "metric:mse", "metric:recall"))
    assert [json.loads(c) for c in frame["config"]] == [r["config"] for r in rows]
    for column in ("seconds", "updated", "metric:auc"):
        assert frame[column].dtype == "float64"
    assert frame["seed"].dtype == "int64" and frame["attempts"].dtype == "int64"


@pytest.mark.parametrize("filled", [True, False], ids=["filled", "empty"])
def test_parquet_round_trip_equals_to_frame(tmp_path: Path, filled: bool) -> None:
    path = tmp_path / "bench.db"
    with (_filled(path) if filled else Ledger(path)) as ledger:
        ledger.export_parquet(tmp_path / "out" / "bench.parquet")
        frame = ledger.to_frame()
    assert len(frame) == (4 if filled else 0)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "bench.parquet"), frame)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["bench.parquet"]  # no temp file left behind


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_metric_is_refused_and_nothing_written(tmp_path: Path, bad: float) -> None:
    with Ledger(tmp_path / "bench.db") as ledger:
        with pytest.raises(InputError, match="'recall'") as info:
            ledger.record_ok(key(0), {"auc": 0.5, "recall": bad}, seconds=1.0, config={})
        assert isinstance(info.value, ValueError) and isinstance(info.value, SeethroughError)
        assert ledger.rows() == [] and ledger.status(key(0)) is None


def test_bad_arguments_raise_clear_errors_and_write_nothing(tmp_path: Path) -> None:
    with Ledger(tmp_path / "bench.db") as ledger:
        with pytest.raises(InputError, match="no metrics"):
            ledger.record_ok(key(0), {}, seconds=1.0, config={})
        with pytest.raises(InputError, match="JSON"):
            ledger.record_ok(key(0), {"auc": 0.5}, seconds=1.0, config={"fn": print})
        with pytest.raises(InputError, match="seconds"):
            ledger.record_ok(key(0), {"auc": 0.5}, seconds=-1.0, config={})
        with pytest.raises(InputError, match="empty"):
            ledger.record_error(key(0), "  ", seconds=1.0, config={})
        assert ledger.rows() == []
    with pytest.raises(InputError, match="closed"):
        ledger.finished()


def test_not_a_ledger_is_a_load_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LoadError, match="junk.db"):
        Ledger(junk)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE units (x)")
        conn.execute("PRAGMA user_version=7")
    conn.close()
    with pytest.raises(LoadError, match="schema version"):
        Ledger(other)
    foreign = tmp_path / "foreign.db"  # someone else's database, unversioned: refused and left untouched
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE units (x)")
    conn.close()
    with pytest.raises(LoadError, match="columns"):
        Ledger(foreign)
    with sqlite3.connect(foreign) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 1
    conn.close()
    with pytest.raises(LoadError, match="does not exist"):
        Ledger(tmp_path / "missing.db", read_only=True)


def test_a_folder_or_a_path_under_a_file_is_refused_in_one_line(tmp_path: Path) -> None:
    """Issue #10 item 7: --db naming a folder, or a path below a file, is a LoadError naming the path (was
    sqlite's "unable to open database file" and a bare FileExistsError); nothing is created."""
    for read_only in (False, True):
        with pytest.raises(LoadError, match="is a folder") as info:
            Ledger(tmp_path, read_only=read_only)
        assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    with pytest.raises(LoadError, match="cannot create the folder of ledger") as info:
        Ledger(blocker / "sub" / "bench.db")
    assert "choose a path" in str(info.value)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["blocker"] and blocker.read_text() == "a file, not a folder"


# Records units one by one and kills itself with SIGKILL (no cleanup, no atexit, no close) before unit k.
_KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from seethrough.bench.ledger import Ledger, UnitKey
    path, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ledger = Ledger(path)
    for seed in range(n):
        if seed == k:
            os.kill(os.getpid(), signal.SIGKILL)
        ledger.record_ok(UnitKey("g", "m", seed, "h"), {"score": seed / n}, seconds=0.1, config={"seed": seed})
    """)


def test_kill_9_keeps_every_committed_row_and_the_ledger_resumes(tmp_path: Path) -> None:
    path = tmp_path / "bench.db"
    n, k = 10, 6
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path), str(n), str(k)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert Path(f"{path}-wal").exists()  # the rows live in the un-checkpointed WAL: recovery is exercised
    with Ledger(path) as ledger:
        rows = ledger.rows()
        assert [r["seed"] for r in rows] == list(range(k))
        assert [r["metrics"] for r in rows] == [{"score": s / n} for s in range(k)]
        # resume: skip what is finished, record the rest; no row is lost or duplicated
        for seed in range(n):
            unit = UnitKey("g", "m", seed, "h")
            if unit.id not in ledger.finished():
                ledger.record_ok(unit, {"score": seed / n}, seconds=0.1, config={"seed": seed})
        rows = ledger.rows()
    assert [r["seed"] for r in rows] == list(range(n))
    assert all(r["attempts"] == 1 for r in rows)


# Reads the ledger from another process, both through a raw read-only SQLite URI and a read-only Ledger.
_READER = textwrap.dedent("""
    import sqlite3, sys
    from pathlib import Path
    from seethrough.bench.ledger import Ledger
    path = Path(sys.argv[1])
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    raw = conn.execute("SELECT count(*) FROM units WHERE status = 'ok'").fetchone()[0]
    conn.close()
    with Ledger(path, read_only=True) as ledger:
        print(raw, len(ledger.finished()))
    """)


def _read_elsewhere(path: Path) -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-c", _READER, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    raw, via_ledger = done.stdout.split()
    return int(raw), int(via_ledger)


def test_concurrent_reader_sees_committed_rows_while_writer_is_open(tmp_path: Path) -> None:
    path = tmp_path / "bench.db"
    with Ledger(path) as writer:
        for seed in range(3):
            writer.record_ok(key(seed), {"auc": 0.5}, seconds=0.1, config={})
        assert _read_elsewhere(path) == (3, 3)
        writer.record_ok(key(3), {"auc": 0.5}, seconds=0.1, config={})  # the writer goes on after the reader
        writer.record_error(key(4), "ValueError: x", seconds=0.1, config={})
        assert _read_elsewhere(path) == (4, 4)
        with Ledger(path, read_only=True) as reader:  # and a reader in this process cannot write
            assert reader.finished() == writer.finished()
            with pytest.raises(InputError, match="read_only"):
                reader.record_ok(key(9), {"auc": 0.5}, seconds=0.1, config={})
        assert writer.status(key(9)) is None
