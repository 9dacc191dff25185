"""Tests for seethrough.core.io: model specs, safe weights and data loading, atomic artefact writes.

The security tests craft live pickle payloads that create a marker file when unpickled. Each one
checks that our loaders refuse the file and that the marker never appears, then proves the payload
is live by unpickling it unsafely (the marker appears), so a refusal cannot pass by accident.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from seethrough.core import (
    ArrayData,
    LoadError,
    SeethroughError,
    load_data,
    load_factory,
    load_model,
    load_tensors,
    load_weights,
    save_tensors,
)
from seethrough.demo import digits16, digits_cnn

DEMO_SPEC = "seethrough.demo:digits_cnn"


# -- helpers ------------------------------------------------------------------------------


def _write_module(tmp_path: Path, source: str, name: str = "netdef.py") -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_parameters(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def _save_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _good_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((6, 4)).astype(np.float32), "y": np.array([0, 1, 2, 0, 1, 2], dtype=np.int64)}


# -- model specs ----------------------------------------------------------------------------


def test_load_factory_from_file_spec(tmp_path: Path) -> None:
    path = _write_module(tmp_path, "from torch import nn\n\ndef make_net():\n    return nn.Linear(3, 2)\n")
    factory = load_factory(f"{path}:make_net")
    model = factory()
    assert isinstance(model, nn.Linear)
    assert (model.in_features, model.out_features) == (3, 2)


def test_load_factory_from_module_spec() -> None:
    assert load_factory(DEMO_SPEC) is digits_cnn


def test_load_model_from_file_spec_is_in_eval_mode(tmp_path: Path) -> None:
    source = (
        "from torch import nn\n\n"
        "def make_net():\n"
        "    return nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).train()\n"
    )
    path = _write_module(tmp_path, source)
    model = load_model(f"{path}:make_net")
    assert isinstance(model, nn.Sequential)
    assert not model.training
    assert not any(m.training for m in model.modules())


def test_load_model_from_module_spec_matches_factory() -> None:
    model = load_model(DEMO_SPEC)
    _assert_same_parameters(model, _state(digits_cnn()))
    assert not model.training


@pytest.mark.parametrize("spec", ["no_colon_here", "a.py:b:c", ":factory", "netdef.py:", "", "::"])
def test_load_factory_rejects_malformed_spec(spec: str) -> None:
    with pytest.raises(LoadError, match="must look like 'path/to/file.py:factory'") as info:
        load_factory(spec)
    assert repr(spec) in str(info.value)


def test_load_factory_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.py"
    with pytest.raises(LoadError, match="does not exist") as info:
        load_factory(f"{missing}:make_net")
    assert str(missing) in str(info.value)


def test_load_factory_missing_module_names_module() -> None:
    with pytest.raises(LoadError, match="cannot import module 'seethrough_no_such_module_xyz'"):
        load_factory("seethrough_no_such_module_xyz:make_net")


def test_load_factory_file_that_fails_to_import(tmp_path: Path) -> None:
    path = _write_module(tmp_path, "raise RuntimeError('broken at import')\n")
    with pytest.raises(LoadError, match="importing .* failed: RuntimeError: broken at import") as info:
        load_factory(f"{path}:make_net")
    assert isinstance(info.value.__cause__, RuntimeError)


def test_load_factory_missing_attribute_suggests_close_match(tmp_path: Path) -> None:
    path = _write_module(tmp_path, "from torch import nn\n\ndef make_net():\n    return nn.Linear(3, 2)\n")
    with pytest.raises(LoadError, match="no attribute 'make_nett'; did you mean make_net"):
        load_factory(f"{path}:make_nett")


def test_load_factory_missing_attribute_in_package_module() -> None:
    with pytest.raises(LoadError, match="no attribute 'digits_cn'; did you mean digits_cnn"):
        load_factory("seethrough.demo:digits_cn")


def test_load_factory_non_callable_names_type(tmp_path: Path) -> None:
    path = _write_module(tmp_path, "make_net = 3\n")
    with pytest.raises(LoadError, match="is a int, not a callable factory"):
        load_factory(f"{path}:make_net")


def test_load_factory_attribute_bound_to_none_is_not_callable(tmp_path: Path) -> None:
    path = _write_module(tmp_path, "make_net = None\n")
    with pytest.raises(LoadError, match="is a NoneType, not a callable factory"):
        load_factory(f"{path}:make_net")


def test_load_model_factory_raising_is_wrapped(tmp_path: Path) -> None:
    path = _write_module(tmp_path, "def make_net():\n    raise ValueError('bad config')\n")
    with pytest.raises(LoadError, match="calling the factory .* failed: ValueError: bad config") as info:
        load_model(f"{path}:make_net")
    assert isinstance(info.value.__cause__, ValueError)


def test_load_model_factory_returning_non_module(tmp_path: Path) -> None:
    path = _write_module(tmp_path, "def make_net():\n    return {'not': 'a module'}\n")
    with pytest.raises(LoadError, match="returned dict, not a torch.nn.Module"):
        load_model(f"{path}:make_net")


def test_load_error_is_a_value_error_and_seethrough_error() -> None:
    with pytest.raises(LoadError) as info:
        load_factory("nope")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, SeethroughError)


# -- weights: round trips ---------------------------------------------------------------------


def test_safetensors_round_trip_gives_identical_parameters(tmp_path: Path) -> None:
    expected = _state(digits_cnn(seed=1))
    path = tmp_path / "w.safetensors"
    save_file(expected, str(path))
    model = load_model(DEMO_SPEC, weights=path)
    _assert_same_parameters(model, expected)
    # the default factory (seed 0) differs, so the weights really were loaded
    assert not torch.equal(digits_cnn().state_dict()["0.weight"], expected["0.weight"])


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_torch_state_dict_round_trip_gives_identical_parameters(tmp_path: Path, suffix: str) -> None:
    expected = _state(digits_cnn(seed=2))
    path = tmp_path / f"w{suffix}"
    torch.save(expected, path)
    model = load_model(DEMO_SPEC, weights=str(path))
    _assert_same_parameters(model, expected)
    assert not model.training


def test_load_weights_returns_plain_dict_of_tensors(tmp_path: Path) -> None:
    expected = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2, 3])}
    path = tmp_path / "t.safetensors"
    save_file(expected, str(path))
    state = load_weights(path)
    assert type(state) is dict
    assert sorted(state) == ["a", "b"]
    for key, value in expected.items():
        assert torch.equal(state[key], value)
        assert state[key].dtype == value.dtype


# -- weights: error paths -------------------------------------------------------------------


def test_load_weights_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(LoadError, match="weights file .* does not exist") as info:
        load_weights(missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("suffix", [".h5", ".npy", ".ckpt", ""])
def test_load_weights_unknown_suffix(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"weights{suffix}"
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(LoadError, match=re.escape(f"unknown weights format {suffix!r}")) as info:
        load_weights(path)
    assert ".safetensors" in str(info.value)


def test_load_weights_corrupt_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(b"this is not a safetensors header")
    with pytest.raises(LoadError, match="is not a valid safetensors file"):
        load_weights(path)


def test_load_weights_training_checkpoint_hint(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": _state(digits_cnn()), "epoch": 3}, path)
    with pytest.raises(LoadError, match="does not hold a state dict") as info:
        load_weights(path)
    assert "training checkpoint" in str(info.value)
    assert "'state_dict'" in str(info.value)


def test_load_weights_non_mapping_has_no_checkpoint_hint(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(LoadError, match="does not hold a state dict") as info:
        load_weights(path)
    assert "training checkpoint" not in str(info.value)


def test_load_model_missing_keys_are_listed(tmp_path: Path) -> None:
    state = _state(digits_cnn())
    del state["7.bias"]
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    with pytest.raises(LoadError, match=r"do not fit 'seethrough.demo:digits_cnn': missing \['7.bias'\]"):
        load_model(DEMO_SPEC, weights=path)


def test_load_model_unexpected_keys_are_listed(tmp_path: Path) -> None:
    state = _state(digits_cnn())
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    with pytest.raises(LoadError, match=r"unexpected \['extra.weight'\]") as info:
        load_model(DEMO_SPEC, weights=path)
    assert "missing" not in str(info.value)


def test_load_model_shape_mismatch_is_listed(tmp_path: Path) -> None:
    state = _state(digits_cnn())
    state["7.weight"] = torch.zeros(5, 256)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    with pytest.raises(LoadError, match=re.escape("shape mismatch ['7.weight: file (5, 256) vs model (10, 256)']")):
        load_model(DEMO_SPEC, weights=path)


def test_load_model_lists_all_kinds_of_key_problems_at_once(tmp_path: Path) -> None:
    state = _state(digits_cnn())
    del state["0.bias"]
    state["head.weight"] = torch.zeros(1)
    state["3.bias"] = torch.zeros(4)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    with pytest.raises(LoadError) as info:
        load_model(DEMO_SPEC, weights=path)
    message = str(info.value)
    assert "missing ['0.bias']" in message
    assert "unexpected ['head.weight']" in message
    assert "3.bias: file (4,) vs model (16,)" in message


def test_load_model_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="does not exist"):
        load_model(DEMO_SPEC, weights=tmp_path / "absent.pt")


# -- weights and data: malicious pickles are never executed ---------------------------------


class _TouchPayload:
    """Unpickling this object calls ``Path.touch(marker)``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


class _ExecPayload:
    """Unpickling this object runs Python source through ``builtins.exec``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).touch()",))


PAYLOADS = {"touch": _TouchPayload, "exec": _ExecPayload}

# How a malicious weights file is written, and the suffix it is given.
EVIL_WEIGHTS = {
    "torch_save_object": ".pt",  # torch.save of the payload itself (zip format)
    "torch_save_in_state_dict": ".pt",  # a real-looking state dict with one poisoned entry
    "torch_save_legacy": ".pth",  # torch's legacy (non-zip) serialization
    "raw_pickle_pt": ".pt",
    "raw_pickle_bin": ".bin",
    "raw_pickle_protocol0": ".pth",
}


def _write_evil_weights(kind: str, path: Path, payload: object) -> None:
    if kind == "torch_save_object":
        torch.save(payload, path)
    elif kind == "torch_save_in_state_dict":
        state: dict[str, object] = dict(_state(digits_cnn()))
        state["7.bias"] = payload
        torch.save(state, path)
    elif kind == "torch_save_legacy":
        torch.save({"0.weight": payload}, path, _use_new_zipfile_serialization=False)
    else:
        with path.open("wb") as f:
            pickle.dump({"0.weight": payload}, f, protocol=0 if kind.endswith("protocol0") else 4)


def _unsafe_load(kind: str, path: Path) -> None:
    """What an unsafe loader would do: used only to prove the payload is live."""
    if kind.startswith("torch_save"):
        torch.load(path, weights_only=False)
    else:
        with path.open("rb") as f:
            pickle.load(f)  # deliberately unsafe, on our own payload


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "PAYLOAD_RAN"
    assert not path.exists()
    return path


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("kind", sorted(EVIL_WEIGHTS))
def test_load_weights_refuses_malicious_pickle(tmp_path: Path, marker: Path, kind: str, payload: str) -> None:
    path = tmp_path / f"evil{EVIL_WEIGHTS[kind]}"
    _write_evil_weights(kind, path, PAYLOADS[payload](marker))
    with pytest.raises(LoadError, match=r"refused by torch.load\(weights_only=True\)") as info:
        load_weights(path)
    assert not marker.exists(), "the pickle payload ran inside load_weights"
    assert "never arbitrary pickles" in str(info.value)
    assert info.value.__cause__ is None  # `from None`: torch's long advice is not chained on
    _unsafe_load(kind, path)
    assert marker.exists(), "control: the payload should run when unpickled unsafely"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("kind", sorted(EVIL_WEIGHTS))
def test_load_model_refuses_malicious_weights(tmp_path: Path, marker: Path, kind: str) -> None:
    path = tmp_path / f"evil{EVIL_WEIGHTS[kind]}"
    _write_evil_weights(kind, path, _TouchPayload(marker))
    with pytest.raises(LoadError, match="refused"):
        load_model(DEMO_SPEC, weights=path)
    assert not marker.exists(), "the pickle payload ran inside load_model"
    _unsafe_load(kind, path)
    assert marker.exists(), "control: the payload should run when unpickled unsafely"


def test_load_weights_refusal_message_is_plain_and_gives_no_unsafe_advice(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save(_TouchPayload(marker), path)
    with pytest.raises(LoadError) as info:
        load_weights(path)
    message = str(info.value)
    assert not re.search(r"[\x00-\x1f\x7f]", message), f"control characters in {message!r}"
    assert "weights_only=False" not in message
    assert not marker.exists()


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_load_data_refuses_object_array_payload(tmp_path: Path, marker: Path, payload: str) -> None:
    path = tmp_path / "evil.npz"
    x = np.empty(2, dtype=object)
    x[0], x[1] = PAYLOADS[payload](marker), 1.0
    np.savez(path, x=x, y=np.zeros(2, dtype=np.int64))  # np.savez pickles object arrays
    with pytest.raises(LoadError, match=r"object arrays \(pickled data\), which are never loaded"):
        load_data(path)
    assert not marker.exists(), "the pickle payload ran inside load_data"
    with np.load(path, allow_pickle=True) as npz:
        npz["x"]
    assert marker.exists(), "control: the payload should run when loaded with allow_pickle=True"


def test_load_data_refuses_raw_pickle_named_npz(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "evil.npz"
    with path.open("wb") as f:
        pickle.dump({"x": _TouchPayload(marker)}, f)
    with pytest.raises(LoadError, match="never loaded"):
        load_data(path)
    assert not marker.exists(), "the pickle payload ran inside load_data"


# -- data: success -------------------------------------------------------------------------


def test_load_data_digits_round_trip(tmp_path: Path) -> None:
    x, y, names = digits16()
    path = _save_npz(tmp_path / "digits.npz", x=x[:30], y=y[:30], class_names=names)
    data = load_data(path)
    assert isinstance(data, ArrayData)
    assert len(data) == 30
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
    assert tuple(data.x.shape) == (30, 1, 16, 16)
    assert torch.equal(data.x, torch.from_numpy(x[:30]))
    assert torch.equal(data.y, torch.from_numpy(y[:30]))
    assert data.class_names == tuple(str(i) for i in range(10))


def test_load_data_converts_dtypes_and_decodes_byte_names(tmp_path: Path) -> None:
    x = np.arange(8, dtype=np.float64).reshape(4, 2)
    y = np.array([1, 0, 1, 1], dtype=np.uint8)
    path = _save_npz(tmp_path / "d.npz", x=x, y=y, class_names=np.array([b"cat", b"dog"]))
    data = load_data(path)
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
    assert torch.equal(data.x, torch.from_numpy(x.astype(np.float32)))
    assert data.y.tolist() == [1, 0, 1, 1]
    assert data.class_names == ("cat", "dog")


def test_load_data_without_class_names(tmp_path: Path) -> None:
    data = load_data(_save_npz(tmp_path / "d.npz", **_good_arrays()))
    assert data.class_names is None
    assert len(data) == 6


# -- data: error paths -----------------------------------------------------------------------


def test_load_data_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="data file .* does not exist"):
        load_data(tmp_path / "absent.npz")


@pytest.mark.parametrize("key", ["x", "y"])
def test_load_data_missing_array(tmp_path: Path, key: str) -> None:
    arrays = _good_arrays()
    del arrays[key]
    path = _save_npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(LoadError, match=f"has no array '{key}'") as info:
        load_data(path)
    assert "np.savez(f, x=..., y=...)" in str(info.value)


def test_load_data_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(LoadError, match="is not a readable .npz file"):
        load_data(path)


def test_load_data_npy_content_is_refused_with_load_error(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    with path.open("wb") as f:
        np.save(f, np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(LoadError, match="npz"):
        load_data(path)


@pytest.mark.parametrize("bad_x", [np.arange(12, dtype=np.int64).reshape(6, 2), np.ones((6, 2), dtype=bool)])
def test_load_data_x_must_be_floating(tmp_path: Path, bad_x: np.ndarray) -> None:
    path = _save_npz(tmp_path / "d.npz", x=bad_x, y=_good_arrays()["y"])
    with pytest.raises(LoadError, match=f"x must be floating point \\(float32\\), got {bad_x.dtype}"):
        load_data(path)


def test_load_data_y_must_be_integer(tmp_path: Path) -> None:
    arrays = _good_arrays()
    path = _save_npz(tmp_path / "d.npz", x=arrays["x"], y=arrays["y"].astype(np.float32))
    with pytest.raises(LoadError, match="y must hold integer class labels \\(int64\\), got float32"):
        load_data(path)


@pytest.mark.parametrize("shape", [(6,), (6, 2, 2), (6, 1, 2, 2, 1)])
def test_load_data_x_wrong_ndim(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = _save_npz(tmp_path / "d.npz", x=np.zeros(shape, dtype=np.float32), y=_good_arrays()["y"])
    with pytest.raises(LoadError, match=re.escape(f"x must have shape (N, D) or (N, C, H, W), got {shape}")):
        load_data(path)


@pytest.mark.parametrize("y", [np.zeros(5, dtype=np.int64), np.zeros(7, dtype=np.int64),
                               np.zeros((6, 1), dtype=np.int64)])
def test_load_data_y_shape_must_match_x(tmp_path: Path, y: np.ndarray) -> None:
    path = _save_npz(tmp_path / "d.npz", x=_good_arrays()["x"], y=y)
    with pytest.raises(LoadError, match=re.escape(f"y must have shape (6,) to match x, got {y.shape}")):
        load_data(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_load_data_non_finite_x(tmp_path: Path, bad: float) -> None:
    arrays = _good_arrays()
    arrays["x"][2, 1] = bad
    arrays["x"][4, 0] = bad
    path = _save_npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(LoadError, match="x contains 2 NaN/inf values"):
        load_data(path)


@pytest.mark.parametrize("shape", [(0, 4), (0, 1, 2, 2)])
def test_load_data_empty_x(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = _save_npz(tmp_path / "d.npz", x=np.zeros(shape, dtype=np.float32), y=np.zeros(0, dtype=np.int64))
    with pytest.raises(LoadError, match="holds no examples"):
        load_data(path)


def test_load_data_negative_labels(tmp_path: Path) -> None:
    arrays = _good_arrays()
    arrays["y"][3] = -1
    with pytest.raises(LoadError, match="negative labels"):
        load_data(_save_npz(tmp_path / "d.npz", **arrays))


def test_load_data_labels_beyond_class_names(tmp_path: Path) -> None:
    arrays = _good_arrays()  # labels 0..2
    path = _save_npz(tmp_path / "d.npz", **arrays, class_names=np.array(["a", "b"]))
    with pytest.raises(LoadError, match="y has label 2 but class_names lists only 2 classes"):
        load_data(path)


@pytest.mark.parametrize("names", [np.array([0, 1, 2]), np.array([["a", "b", "c"]])])
def test_load_data_class_names_must_be_1d_strings(tmp_path: Path, names: np.ndarray) -> None:
    path = _save_npz(tmp_path / "d.npz", **_good_arrays(), class_names=names)
    with pytest.raises(LoadError, match="class_names must be a 1-d array of strings"):
        load_data(path)


# -- artefacts: save_tensors / load_tensors --------------------------------------------------


def test_save_and_load_tensors_round_trip_with_metadata(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "directions": torch.randn(3, 5, generator=gen),
        "counts": torch.arange(4, dtype=torch.int64),
        "strided": torch.randn(4, 6, generator=gen).T,  # non-contiguous input is fine
    }
    metadata = {"site": "blocks.0.mlp", "n_steps": 32, "scores": [0.5, 0.25], "nested": {"seed": 0}}
    path = tmp_path / "out" / "probe.safetensors"  # the parent folder is created
    save_tensors(path, tensors, metadata)
    loaded, meta = load_tensors(path)
    assert sorted(loaded) == sorted(tensors)
    for key, value in tensors.items():
        assert torch.equal(loaded[key], value), key
        assert loaded[key].dtype == value.dtype
    assert meta == metadata
    assert sorted(p.name for p in path.parent.iterdir()) == ["probe.safetensors", "probe.safetensors.json"]


def test_load_tensors_without_sidecar_gives_empty_metadata(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_file({"a": torch.ones(2)}, str(path))
    tensors, meta = load_tensors(path)
    assert meta == {}
    assert torch.equal(tensors["a"], torch.ones(2))


def test_save_tensors_overwrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"a": torch.zeros(2)}, {"version": 1})
    save_tensors(path, {"a": torch.ones(3)}, {"version": 2})
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["a"], torch.ones(3))
    assert meta == {"version": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors", "t.safetensors.json"]


def test_failed_write_leaves_no_temp_file_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"a": torch.zeros(2)}, {"version": 1})
    shared = torch.arange(4.0)
    # safetensors refuses tensors that share memory, so the writer raises midway
    with pytest.raises(RuntimeError, match="share memory"):
        save_tensors(path, {"a": shared, "b": shared}, {"version": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors", "t.safetensors.json"]
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["a"], torch.zeros(2))
    assert meta == {"version": 1}


def test_failed_first_write_leaves_nothing(tmp_path: Path) -> None:
    shared = torch.arange(4.0)
    with pytest.raises(RuntimeError, match="share memory"):
        save_tensors(tmp_path / "t.safetensors", {"a": shared, "b": shared})
    assert list(tmp_path.iterdir()) == []


def test_unserialisable_metadata_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"a": torch.zeros(2)}, {"version": 1})
    with pytest.raises(TypeError, match="not JSON serializable"):
        save_tensors(path, {"a": torch.ones(2)}, {"version": object()})
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["a"], torch.zeros(2)), "tensors and sidecar no longer belong together"
    assert meta == {"version": 1}


# -- issue #10: memory, directories, ranges ------------------------------------------------------


def test_load_data_max_rows_reads_only_the_first_rows(tmp_path: Path) -> None:
    arrays = _good_arrays()
    full = load_data(_save_npz(tmp_path / "d.npz", **arrays))
    head = load_data(tmp_path / "d.npz", max_rows=4)
    assert torch.equal(head.x, full.x[:4]) and torch.equal(head.y, full.y[:4])
    assert len(load_data(tmp_path / "d.npz", max_rows=10_000)) == len(full)
    with pytest.raises(LoadError, match="max_rows must be a positive int"):
        load_data(tmp_path / "d.npz", max_rows=0)


def test_load_data_of_a_huge_compressed_file_reads_only_what_is_asked(tmp_path: Path) -> None:
    """A 1.6 GB array of zeros compresses to ~1.6 MB; showing 8 rows must not expand it all."""
    import resource

    path = tmp_path / "zeros.npz"
    n = 100_000
    np.savez_compressed(path, x=np.zeros((n, 1, 64, 64), dtype=np.float32), y=np.zeros(n, dtype=np.int64))
    assert path.stat().st_size < 8 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    data = load_data(path, max_rows=8)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert tuple(data.x.shape) == (8, 1, 64, 64)
    assert grown_mib < 200, f"peak memory grew by {grown_mib:.0f} MiB to read 8 rows of a 1.6 GB array"


def test_load_data_chunked_reading_equals_numpy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = np.random.default_rng(0)
    x, y = gen.normal(size=(37, 3)).astype(np.float64), gen.integers(0, 4, size=37).astype(np.int32)
    path = _save_npz(tmp_path / "d.npz", x=x, y=y)
    data = load_data(path)
    assert torch.equal(data.x, torch.from_numpy(x.astype(np.float32)))
    assert torch.equal(data.y, torch.from_numpy(y.astype(np.int64)))
    fortran = _save_npz(tmp_path / "f.npz", x=np.asfortranarray(x), y=y)
    assert torch.equal(load_data(fortran).x, data.x)


def test_load_data_refuses_float64_beyond_float32_range(tmp_path: Path) -> None:
    arrays = _good_arrays()
    x = arrays["x"].astype(np.float64)
    x[1, 0] = 1e300
    with pytest.raises(LoadError, match="beyond float32's range .* rescale the data"):
        load_data(_save_npz(tmp_path / "d.npz", x=x, y=arrays["y"]))


def test_load_data_refuses_labels_beyond_int64(tmp_path: Path) -> None:
    arrays = _good_arrays()
    y = arrays["y"].astype(np.uint64)
    y[0] = np.iinfo(np.uint64).max  # would wrap to -1 as int64
    with pytest.raises(LoadError, match="beyond int64's range"):
        load_data(_save_npz(tmp_path / "d.npz", x=arrays["x"], y=y))


def test_directories_are_refused_as_weights_or_data(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.safetensors").write_bytes(b"")
    with pytest.raises(LoadError, match=r"is a directory \(it holds model.safetensors\); give the .safetensors"):
        load_weights(tmp_path / "run")
    with pytest.raises(LoadError, match="is a directory; give the .npz file itself"):
        load_data(tmp_path / "run")
