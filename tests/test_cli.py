"""Tests for the ``seethrough`` command line: ``inspect`` output, and clean one-line errors.

Expected parameter counts and output shapes of the demo CNN are worked out by hand from its
layers (the closed-form oracle), not read back from `inspect_model`.
"""

from __future__ import annotations

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
