"""Tests for the ``seethrough`` command line: ``inspect`` output, and clean one-line errors.

Expected parameter counts and output shapes of the demo CNN are worked out by hand from its
layers (the closed-form oracle), not read back from `inspect_model`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import Result
from typer.testing import CliRunner

from seethrough.cli import app
from seethrough.demo import digits16, digits_cnn

DEMO_SPEC = "seethrough.demo:digits_cnn"

# digits_cnn: Conv2d(1→8, 3×3), ReLU, MaxPool(2), Conv2d(8→16, 3×3), ReLU, MaxPool(2), Flatten, Linear(256→10)
CONV1_PARAMS = 1 * 8 * 3 * 3 + 8  # 80
CONV2_PARAMS = 8 * 16 * 3 * 3 + 16  # 1168
HEAD_PARAMS = 16 * 4 * 4 * 10 + 10  # 2570
TOTAL_PARAMS = CONV1_PARAMS + CONV2_PARAMS + HEAD_PARAMS  # 3818

EXPECTED_ROWS = {  # site -> (type, total params)
    "(model)": ("Sequential", TOTAL_PARAMS),
    "0": ("Conv2d", CONV1_PARAMS),
    "1": ("ReLU", 0),
    "2": ("MaxPool2d", 0),
    "3": ("Conv2d", CONV2_PARAMS),
    "4": ("ReLU", 0),
    "5": ("MaxPool2d", 0),
    "6": ("Flatten", 0),
    "7": ("Linear", HEAD_PARAMS),
}


def _shapes(b: int) -> dict[str, str]:
    """Output shape of every site for a batch of ``b`` 1×16×16 images."""
    return {
        "(model)": f"[{b}, 10]",
        "0": f"[{b}, 8, 16, 16]", "1": f"[{b}, 8, 16, 16]", "2": f"[{b}, 8, 8, 8]",
        "3": f"[{b}, 16, 8, 8]", "4": f"[{b}, 16, 8, 8]", "5": f"[{b}, 16, 4, 4]",
        "6": f"[{b}, 256]", "7": f"[{b}, 10]",
    }


def _table_rows(output: str) -> dict[str, list[str]]:
    """The body rows of the rich table, keyed by the site cell."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
            rows[cells[0]] = cells[1:]
    return rows


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def _assert_clean_error(result: Result, fragment: str) -> None:
    """Exit code 2 through typer.Exit, one ``error:`` line on stderr naming ``fragment``, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert fragment in lines[0], lines[0]


@pytest.fixture
def digits_npz(tmp_path: Path) -> Path:
    x, y, names = digits16()
    path = tmp_path / "digits.npz"
    np.savez(path, x=x[:20], y=y[:20], class_names=names)
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "PAYLOAD_RAN"
    assert not path.exists()
    return path


class _TouchPayload:
    """Unpickling this object calls ``Path.touch(marker)``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


@pytest.fixture
def evil_weights(tmp_path: Path, marker: Path) -> Path:
    """A real-looking state dict of the demo CNN with one poisoned entry."""
    state: dict[str, object] = {k: v.clone() for k, v in digits_cnn().state_dict().items()}
    state["7.bias"] = _TouchPayload(marker)
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    return path


# -- help and inspect ------------------------------------------------------------------------


def test_help_lists_inspect() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0, result.output
    assert "inspect" in result.stdout
    assert "Usage" in result.stdout


def test_inspect_help_lists_options() -> None:
    result = _invoke("inspect", "--help")
    assert result.exit_code == 0, result.output
    for option in ("--model", "--weights", "--data", "--batch-size"):
        assert option in result.stdout


def test_inspect_prints_sites_types_and_parameter_counts() -> None:
    result = _invoke("inspect", "--model", DEMO_SPEC)
    assert result.exit_code == 0, result.output
    assert f"Sequential: {TOTAL_PARAMS:,} parameters" in result.stdout
    rows = _table_rows(result.stdout)
    assert list(rows) == list(EXPECTED_ROWS)  # "(model)", then sites "0".."7" in model order
    for site, (kind, params) in EXPECTED_ROWS.items():
        assert rows[site][0] == kind, site
        assert rows[site][1] == f"{params:,}", site
        assert len(rows[site]) == 3, "no output-shape column without --data"


def test_inspect_with_data_prints_output_shapes(digits_npz: Path) -> None:
    result = _invoke("inspect", "--model", DEMO_SPEC, "--data", str(digits_npz))
    assert result.exit_code == 0, result.output
    rows = _table_rows(result.stdout)
    assert {site: cells[-1] for site, cells in rows.items()} == _shapes(8)  # default --batch-size 8
    assert "shapes from one batch of inputs: float32 (8, 1, 16, 16)" in result.stdout


@pytest.mark.parametrize(("batch_size", "expected"), [(3, 3), (50, 20)])  # the file holds 20 rows
def test_inspect_batch_size_sets_shapes(digits_npz: Path, batch_size: int, expected: int) -> None:
    result = _invoke("inspect", "--model", DEMO_SPEC, "--data", str(digits_npz), "--batch-size", str(batch_size))
    assert result.exit_code == 0, result.output
    rows = _table_rows(result.stdout)
    assert {site: cells[-1] for site, cells in rows.items()} == _shapes(expected)


def test_inspect_with_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(digits_cnn(seed=3).state_dict(), str(path))
    result = _invoke("inspect", "--model", DEMO_SPEC, "--weights", str(path))
    assert result.exit_code == 0, result.output
    assert f"Sequential: {TOTAL_PARAMS:,} parameters" in result.stdout


def test_inspect_file_spec(tmp_path: Path) -> None:
    path = tmp_path / "netdef.py"
    path.write_text("from torch import nn\n\ndef make_net():\n    return nn.Sequential(nn.Linear(3, 4), nn.ReLU())\n")
    result = _invoke("inspect", "--model", f"{path}:make_net")
    assert result.exit_code == 0, result.output
    rows = _table_rows(result.stdout)
    assert rows["0"][:2] == ["Linear", f"{3 * 4 + 4}"]
    assert rows["1"][:2] == ["ReLU", "0"]


# -- errors: one line, non-zero exit, no traceback -------------------------------------------


def test_bad_spec_is_a_clean_error() -> None:
    _assert_clean_error(_invoke("inspect", "--model", "not-a-spec"), "must look like 'path/to/file.py:factory'")


def test_unknown_module_is_a_clean_error() -> None:
    result = _invoke("inspect", "--model", "seethrough_no_such_module_xyz:net")
    _assert_clean_error(result, "cannot import module 'seethrough_no_such_module_xyz'")


def test_missing_attribute_is_a_clean_error() -> None:
    _assert_clean_error(_invoke("inspect", "--model", "seethrough.demo:digits_cn"), "did you mean digits_cnn")


def test_missing_weights_file_is_a_clean_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.safetensors"
    result = _invoke("inspect", "--model", DEMO_SPEC, "--weights", str(missing))
    _assert_clean_error(result, f"weights file {str(missing)!r} does not exist")


def test_malicious_pickle_weights_never_run(evil_weights: Path, marker: Path) -> None:
    result = _invoke("inspect", "--model", DEMO_SPEC, "--weights", str(evil_weights))
    _assert_clean_error(result, "refused by torch.load(weights_only=True)")
    assert not marker.exists(), "the pickle payload ran during `seethrough inspect`"
    torch.load(evil_weights, weights_only=False)
    assert marker.exists(), "control: the payload should run when unpickled unsafely"


def test_missing_data_file_is_a_clean_error(tmp_path: Path) -> None:
    result = _invoke("inspect", "--model", DEMO_SPEC, "--data", str(tmp_path / "absent.npz"))
    _assert_clean_error(result, "does not exist")


def test_data_with_nan_is_a_clean_error(tmp_path: Path) -> None:
    x, y, _ = digits16()
    x = x[:10].copy()
    x[0, 0, 3, 3] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, x=x, y=y[:10])
    _assert_clean_error(_invoke("inspect", "--model", DEMO_SPEC, "--data", str(path)), "x contains 1 NaN/inf")


def test_data_that_does_not_fit_the_model_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "rgb.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((4, 3, 16, 16), dtype=np.float32), y=np.zeros(4, dtype=np.int64))
    result = _invoke("inspect", "--model", DEMO_SPEC, "--data", str(path))
    _assert_clean_error(result, "Sequential's forward failed on inputs: float32 (4, 3, 16, 16)")


def test_npy_content_as_data_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    with path.open("wb") as f:
        np.save(f, np.zeros((4, 1, 16, 16), dtype=np.float32))
    _assert_clean_error(_invoke("inspect", "--model", DEMO_SPEC, "--data", str(path)), "npz")


def test_invalid_batch_size_is_rejected_without_traceback(digits_npz: Path) -> None:
    result = _invoke("inspect", "--model", DEMO_SPEC, "--data", str(digits_npz), "--batch-size", "0")
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "--batch-size" in result.stderr


def test_missing_model_option_is_rejected() -> None:
    result = _invoke("inspect")
    assert result.exit_code == 2
    assert "--model" in result.stderr


# -- the installed console script ---------------------------------------------------------------


def _console_script() -> Path:
    script = Path(sys.executable).parent / "seethrough"
    assert script.is_file(), f"console script not installed at {script}; run `pip install -e .`"
    return script


def test_console_script_help_exits_zero() -> None:
    proc = subprocess.run([str(_console_script()), "--help"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "inspect" in proc.stdout


def test_console_script_refuses_malicious_weights(evil_weights: Path, marker: Path) -> None:
    proc = subprocess.run([str(_console_script()), "inspect", "--model", DEMO_SPEC, "--weights", str(evil_weights)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not marker.exists(), "the pickle payload ran in the seethrough process"


# -- issue #10 item 7: every bad input refused in one line, before work; nothing half-written ------------

_TINY = '''
import os
import signal

import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


class _Calls(nn.Module):
    def __init__(self, on_call):
        super().__init__()
        self.net, self.calls, self.on_call = build(), 0, on_call

    def forward(self, x):
        self.calls += 1
        self.on_call(self.calls)
        return self.net(x)


def _raise_on_6th(calls):
    if calls == 6:
        raise RuntimeError("[/x] [bold]boom[/bold] on the 6th call")


def flaky():
    return _Calls(_raise_on_6th)


def _sigint_on_20th(calls):
    if calls == 20:
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, in the middle of the scan


def ctrl_c():
    return _Calls(_sigint_on_20th)


def broken():
    raise RuntimeError("[/x] factory [bold]failed[/bold]")


def marked_up():
    model = nn.Sequential()
    model.add_module("[red]x[/red]", nn.Linear(2, 2))
    return model
'''


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A 4 → 3 vector classifier (and variants) in a model file: audits of it take seconds."""
    path = tmp_path / "tiny.py"
    path.write_text(_TINY)
    return path


def _vectors(path: Path, n: int = 40, *, width: int = 4, y: np.ndarray | None = None, **extra: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, n) if y is None else y
    np.savez(path, x=rng.random((n, width), dtype=np.float32), y=labels, **extra)
    return path


@pytest.fixture
def vectors_npz(tmp_path: Path) -> Path:
    return _vectors(tmp_path / "vectors.npz")


def _audit(tiny: Path, factory: str, data: Path, out: Path, *extra: str) -> Result:
    return _invoke("audit", "--model", f"{tiny}:{factory}", "--data", str(data), "--out", str(out), "--steps", "10",
                   *extra)


@pytest.fixture
def no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if the audit's trigger search starts: the refusal must come before any work (the
    checks of the inputs, the labels and the model's outputs run first, inside `seethrough.audit.scan`)."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the scan started before the bad input was refused")

    monkeypatch.setattr("seethrough.audit.verdict.neural_cleanse", refuse)


@pytest.mark.parametrize("name", ["a[/x]", "[bold]evil[/bold]"])
def test_markup_in_a_path_is_printed_literally(tmp_path: Path, name: str) -> None:
    """Issue #10 item 7: `[/x]` in a path crashed the error printer (Rich markup) and `[bold]evil[/bold].py`
    named the wrong file; user text is printed literally."""
    spec = f"{tmp_path}/{name}.py:build"
    _assert_clean_error(_invoke("inspect", "--model", spec), f"{name}.py' does not exist")


def test_markup_in_an_exception_and_in_module_names_is_printed_literally(tiny: Path) -> None:
    _assert_clean_error(_invoke("inspect", "--model", f"{tiny}:broken"), "RuntimeError: [/x] factory [bold]failed[/bold]")
    result = _invoke("inspect", "--model", f"{tiny}:marked_up")
    assert result.exit_code == 0, result.output
    assert _table_rows(result.stdout)["[red]x[/red]"][:2] == ["Linear", "6"]


def test_inspect_reads_only_the_rows_it_shows(tmp_path: Path) -> None:
    """`inspect --data` reads --batch-size rows (issue #10 item 7: it read and copied the whole file); a NaN in
    row 10 is never read by a batch of 8 (the oracle), and is refused when the batch reaches it."""
    x, y, _ = digits16()
    x = x[:20].copy()
    x[10, 0, 0, 0] = np.nan
    path = tmp_path / "nan_in_row_10.npz"
    np.savez(path, x=x, y=y[:20])
    result = _invoke("inspect", "--model", DEMO_SPEC, "--data", str(path))
    assert result.exit_code == 0, result.output
    assert "shapes from one batch of inputs: float32 (8, 1, 16, 16)" in result.stdout
    _assert_clean_error(_invoke("inspect", "--model", DEMO_SPEC, "--data", str(path), "--batch-size", "11"),
                        "x contains 1 NaN/inf")


def test_weights_that_are_a_directory_are_a_clean_error(tmp_path: Path) -> None:
    """Issue #10 item 7: a directory given as --weights said "does not exist"; it names the folder and the fix."""
    from safetensors.torch import save_file

    save_file(digits_cnn().state_dict(), str(tmp_path / "model.safetensors"))
    result = _invoke("inspect", "--model", DEMO_SPEC, "--weights", str(tmp_path))
    _assert_clean_error(result, f"weights {str(tmp_path)!r} is a directory (it holds model.safetensors)")


def test_float64_data_beyond_float32_is_one_line_without_a_numpy_warning(tmp_path: Path) -> None:
    """Issue #10 item 7: float64 data above float32's range leaked a numpy overflow warning (a subprocess, so
    no warning filter of pytest's can hide one)."""
    path = tmp_path / "huge.npz"
    np.savez(path, x=np.full((4, 1, 16, 16), 1e39), y=np.zeros(4, dtype=np.int64))
    proc = subprocess.run([str(_console_script()), "inspect", "--model", DEMO_SPEC, "--data", str(path)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["error: x holds values beyond float32's range (largest |x| = 1e+39); "
                                                "rescale the data."]


def test_audit_data_that_does_not_fit_the_model_is_one_line(tiny: Path, tmp_path: Path, no_scan: None) -> None:
    """Issue #10 item 7: data of the wrong width gave a 59-line traceback from the scan's forward."""
    data = _vectors(tmp_path / "wide.npz", width=5)
    result = _audit(tiny, "build", data, tmp_path / "out")
    _assert_clean_error(result, "Sequential's forward failed during the audit's first pass over the data on inputs: float32 (40, 5): "
                                "RuntimeError: mat1 and mat2")
    assert not (tmp_path / "out").exists()


def test_audit_forward_failing_midway_is_one_line(tiny: Path, tmp_path: Path, vectors_npz: Path) -> None:
    """Issue #10 item 7: a forward raising on its 6th call (inside the scan) was a raw traceback, exit 1."""
    result = _audit(tiny, "flaky", vectors_npz, tmp_path / "out")
    _assert_clean_error(result, "RuntimeError: [/x] [bold]boom[/bold] on the 6th call")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("seed", [str(2**70), "-1"])
def test_audit_seed_out_of_range_is_one_line(tiny: Path, tmp_path: Path, vectors_npz: Path, seed: str,
                                             no_scan: None) -> None:
    """Issue #10 item 7: a seed of 2**70 gave a traceback from torch's generator."""
    result = _audit(tiny, "build", vectors_npz, tmp_path / "out", "--seed", seed)
    _assert_clean_error(result, f"--seed must be an int in 0..{2**63 - 1}, got {seed}")


@pytest.mark.parametrize(("labels", "fragment"), [
    (np.array([0, 1, 2, 7] * 10), "label 7 (row 3) is not a class of the model, which has 3 outputs (classes 0-2)"),
    (np.array([0, 1, 2, 2**64 - 1] * 10, dtype=np.uint64), f"y holds the value {2**64 - 1}, beyond int64's range"),
])
def test_repair_labels_outside_the_model_classes_fail_before_the_scan(tiny: Path, tmp_path: Path, labels: np.ndarray,
                                                                      fragment: str, no_scan: None) -> None:
    """Issue #10 item 7: `--repair` with labels the model has no output for crashed after the whole audit (a raw
    IndexError; uint64 labels of 2**64-1 wrapped to -1)."""
    data = _vectors(tmp_path / "labels.npz", y=labels)
    _assert_clean_error(_audit(tiny, "build", data, tmp_path / "out", "--repair"), fragment)
    assert not (tmp_path / "out").exists()


def test_unwritable_out_is_refused_before_the_audit(tiny: Path, tmp_path: Path, vectors_npz: Path,
                                                    no_scan: None) -> None:
    """Issue #10 item 7: --out was checked only after the audit."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    _assert_clean_error(_audit(tiny, "build", vectors_npz, blocker / "out"),
                        f"--out {str(blocker / 'out')!r} cannot be created: {str(blocker)!r} is a file")
    _assert_clean_error(_audit(tiny, "build", vectors_npz, blocker), f"--out {str(blocker)!r} is a file, not a folder")
    assert blocker.read_text() == "a file"


def test_audit_replaces_the_artefacts_of_an_earlier_run(tiny: Path, tmp_path: Path, vectors_npz: Path) -> None:
    """Issue #10 item 7: re-auditing into a used --out left the previous model's repaired.safetensors beside
    "nothing to repair"; this run's artefacts replace the earlier ones, other files are left alone."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("repaired.safetensors", "findings.json", "report.html", "mine.txt"):
        (out / name).write_text("from an earlier run")
    result = _audit(tiny, "build", vectors_npz, out, "--repair")
    assert result.exit_code == 0, result.output
    findings = json.loads((out / "findings.json").read_text())
    assert findings["findings"] == [] and findings["repair"]["status"].startswith("nothing to repair")
    assert sorted(p.name for p in out.iterdir()) == ["findings.json", "mine.txt", "report.html"]
    assert (out / "mine.txt").read_text() == "from an earlier run"
    assert "from an earlier run" not in (out / "report.html").read_text()


def test_findings_json_is_written_last_and_a_failed_write_leaves_no_artefact(tiny: Path, tmp_path: Path,
                                                                            vectors_npz: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #10 item 7: an interrupted run must be recognisably incomplete: findings.json comes after every other
    artefact, and a failure while writing removes what the run wrote (and the --out it created)."""
    import seethrough.report.artefacts as report_audit  # save_audit writes the page through this name

    real = report_audit.write_audit_report
    seen: list[list[str]] = []

    def spy(directory: Path, *args: object, **kwargs: object) -> Path:
        seen.append(sorted(p.name for p in Path(directory).iterdir()))
        return real(directory, *args, **kwargs)  # type: ignore[arg-type]  # passed through unchanged

    monkeypatch.setattr(report_audit, "write_audit_report", spy)
    out = tmp_path / "out"
    out.mkdir()
    (out / "findings.json").write_text("{}")  # an earlier run's: gone before anything new is written
    assert _audit(tiny, "build", vectors_npz, out).exit_code == 0
    assert seen == [[]] and sorted(p.name for p in out.iterdir()) == ["findings.json", "report.html"]

    def disk_full(directory: Path, *args: object, **kwargs: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_audit, "write_audit_report", disk_full)
    _assert_clean_error(_audit(tiny, "build", vectors_npz, out), "No space left on device")
    assert list(out.iterdir()) == []  # the earlier run's artefacts are stale, this run's incomplete: none stay
    _assert_clean_error(_audit(tiny, "build", vectors_npz, tmp_path / "new" / "out"), "No space left on device")
    assert not (tmp_path / "new").exists()


def test_non_finite_numbers_never_reach_findings_json(tiny: Path, tmp_path: Path, vectors_npz: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #10 item 7: findings.json held NaN literals (not JSON); strict JSON, else one line and nothing written."""
    from seethrough.audit import AuditResult

    monkeypatch.setattr(AuditResult, "to_dict", lambda self: {"verdict": "clean", "anomaly_score": float("nan"),
                                                              "findings": []})
    _assert_clean_error(_audit(tiny, "build", vectors_npz, tmp_path / "out"), "non-finite numbers")
    assert not (tmp_path / "out").exists()


def test_ctrl_c_while_writing_exits_130_and_leaves_no_out(tiny: Path, tmp_path: Path, vectors_npz: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: object, **kwargs: object) -> Path:
        raise KeyboardInterrupt

    monkeypatch.setattr("seethrough.report.artefacts.write_audit_report", interrupt)
    result = _audit(tiny, "build", vectors_npz, tmp_path / "out" / "deep")
    assert result.exit_code == 130, result.output
    assert result.stderr.strip().splitlines() == [f"error: interrupted (Ctrl-C); no audit was written to "
                                                  f"{str(tmp_path / 'out' / 'deep')!r}."]
    assert not (tmp_path / "out").exists()


def test_ctrl_c_during_the_audit_exits_130_with_one_line(tiny: Path, tmp_path: Path, vectors_npz: Path) -> None:
    """Issue #10 item 7: Ctrl-C exited silently or with a traceback and left an empty --out (a real SIGINT, sent
    by the model's forward to its own process in the middle of the scan, through the installed script)."""
    out = tmp_path / "out"
    proc = subprocess.run([str(_console_script()), "audit", "--model", f"{tiny}:ctrl_c", "--data", str(vectors_npz),
                           "--out", str(out), "--steps", "10"], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: interrupted (Ctrl-C); no audit was written to {str(out)!r}."]
    assert proc.stdout == "" and not out.exists()


def test_audit_reads_at_most_max_rows(tiny: Path, tmp_path: Path) -> None:
    """The audit reads only --max-rows rows (issue #10 item 7: a 2 GB npz peaked at 14.2 GB): a NaN in row 50 is
    never read with --max-rows 40 (the oracle), and the capped read is said."""
    rng = np.random.default_rng(0)
    x = rng.random((60, 4), dtype=np.float32)
    x[50, 0] = np.nan
    data = tmp_path / "nan_in_row_50.npz"
    np.savez(data, x=x, y=rng.integers(0, 3, 60))
    result = _audit(tiny, "build", data, tmp_path / "out", "--max-rows", "40")
    assert result.exit_code == 0, result.output
    assert f"audited the first 40 rows of {data} (--max-rows)" in result.stdout
    _assert_clean_error(_audit(tiny, "build", data, tmp_path / "out2"), "x contains 1 NaN/inf")


@pytest.mark.parametrize("budget", ["-0.1", "1.5", "nan"])
def test_bad_max_accuracy_drop_is_refused_before_the_audit(tiny: Path, tmp_path: Path, vectors_npz: Path,
                                                           budget: str, no_scan: None) -> None:
    """Issue #11 item 5: the repair's clean-accuracy budget is a fraction in [0, 1], refused in one line first."""
    result = _audit(tiny, "build", vectors_npz, tmp_path / "out", "--repair", "--max-accuracy-drop", budget)
    _assert_clean_error(result, "--max-accuracy-drop must be a finite number")
    assert not (tmp_path / "out").exists()


def test_max_accuracy_drop_reaches_the_repair(tiny: Path, tmp_path: Path, vectors_npz: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #11 item 5: `--max-accuracy-drop` is parsed and passed to `seethrough.audit.repair`."""
    seen: list[float] = []

    def record(*args: object, max_accuracy_drop: float, **kwargs: object) -> None:
        seen.append(max_accuracy_drop)

    monkeypatch.setattr("seethrough.audit.repair", record)
    result = _audit(tiny, "build", vectors_npz, tmp_path / "out", "--repair", "--max-accuracy-drop", "0.05")
    assert result.exit_code == 0, result.output
    assert seen == [0.05] and "nothing to repair" in result.stdout
