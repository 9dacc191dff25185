"""Malformed sites, shapes, dtypes, NaN/inf and empty data get clear errors (issue #2).

Property tests throw generated bad input at `capture`, `patch` and `inspect_model`. Errors
that can be known before the forward pass must come before it (a user pre-hook counts forward
passes); shape errors only the model can find come back as `ForwardError` with the original
torch error chained, never as a bare torch traceback. No call leaves a hook behind.
"""

from __future__ import annotations

import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as s
from models import TinyMLP, TinyTransformer, tokens, vectors

import seethrough as st
from seethrough.core import inspect_model

NAMES = {n for n, _ in TinyMLP().named_modules()}


def _counted(model: torch.nn.Module) -> list[int]:
    count: list[int] = []
    model.register_forward_pre_hook(lambda *a: count.append(1))
    return count


def _no_hooks_of_ours(model: torch.nn.Module) -> bool:
    # the only hook left is the test's own counter on the root
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in list(model.modules())[1:])


@settings(max_examples=60, deadline=None)
@given(path=s.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=12))
def test_any_unknown_path_fails_before_the_forward(path: str) -> None:
    model = TinyMLP()
    count = _counted(model)
    if path in NAMES:
        return
    with pytest.raises(st.SiteNotFoundError, match="close matches"):
        st.capture(model, vectors(), [path])
    with pytest.raises(st.SiteNotFoundError):
        st.patch(model, vectors(), {path: torch.zeros(1)})
    assert count == [] and _no_hooks_of_ours(model)


@settings(max_examples=40, deadline=None)
@given(shape=s.lists(s.integers(1, 6), min_size=1, max_size=4).filter(lambda sh: sh[-1] != 4))
def test_wrong_shapes_become_forward_errors_with_the_torch_cause(shape: list[int]) -> None:
    # (any shape ending in 4 is a valid call of a Linear(4, 8))
    model = TinyMLP()
    x = torch.zeros(shape)
    with pytest.raises(st.ForwardError, match=r"inputs: float32") as info:
        st.capture(model, x, ["fc1"])
    assert info.value.__cause__ is not None
    assert _no_hooks_of_ours(model)


@settings(max_examples=40, deadline=None)
@given(batch=s.integers(1, 5), row=s.data(), bad=s.sampled_from([float("nan"), float("inf"), -float("inf")]))
def test_nan_or_inf_anywhere_is_refused_before_the_forward(batch: int, row: s.DataObject, bad: float) -> None:
    model = TinyMLP()
    count = _counted(model)
    x = torch.zeros(batch, 4)
    x[row.draw(s.integers(0, batch - 1)), row.draw(s.integers(0, 3))] = bad
    with pytest.raises(st.InputError, match="NaN/inf"):
        st.capture(model, x, ["fc1"])
    with pytest.raises(st.InputError, match="NaN/inf"):
        st.patch(model, torch.zeros(batch, 4), {"fc1": torch.full((8,), bad)})
    assert count == [] and _no_hooks_of_ours(model)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_floating_dtype_that_differs_from_the_model_is_refused(dtype: torch.dtype) -> None:
    model = TinyMLP()
    count = _counted(model)
    with pytest.raises(st.InputError, match=r"\.to\(torch.float32\)"):
        st.capture(model, vectors().to(dtype), ["fc1"])
    assert count == []


@pytest.mark.parametrize("inputs, error, message", [
    (torch.zeros(0, 4), st.InputError, "empty batch"),
    (torch.tensor(1.0), st.InputError, "batch dimension"),
    ([torch.zeros(2, 4)], st.InputTypeError, "tuple"),
    ("text", st.InputTypeError, "Tensor"),
    (None, st.InputTypeError, "Tensor"),
    ({1: torch.zeros(2, 4)}, st.InputTypeError, "string keys"),
    ((1, 2), st.InputError, "no tensor"),
])
def test_malformed_inputs_are_refused_before_the_forward(inputs: object, error: type, message: str) -> None:
    model = TinyMLP()
    count = _counted(model)
    # wrong *types* may be caught by the test-time type checker first (a TypeError too); our own
    # messages for them are checked without it in test_own_type_messages_without_the_type_checker
    expected = error if issubclass(error, ValueError) else TypeError
    with pytest.raises(expected, match=message if expected is error else None):
        st.capture(model, inputs, ["fc1"])  # type: ignore[arg-type]  # deliberately wrong types
    if inputs is not None:  # inspect_model(model, None) is the legal "no data" call
        with pytest.raises(expected, match=message if expected is error else None):
            inspect_model(model, inputs)  # type: ignore[arg-type]  # deliberately wrong types
    assert count == []


@pytest.mark.parametrize("sites, error, message", [
    ([], st.SiteError, "no sites"),
    (42, st.InputTypeError, "sites must be"),
    ([3], st.InputTypeError, "each site"),
    ([None], st.InputTypeError, "each site"),
])
def test_malformed_site_arguments(sites: object, error: type, message: str) -> None:
    expected = error if issubclass(error, ValueError) else TypeError
    with pytest.raises(expected, match=message if expected is error else None):
        st.capture(TinyMLP(), vectors(), sites)  # type: ignore[arg-type]  # deliberately wrong types


def test_integer_ids_out_of_vocabulary_become_a_forward_error() -> None:
    x = tokens()
    x["input_ids"] = x["input_ids"] + 100
    with pytest.raises(st.ForwardError, match="input_ids"):
        st.capture(TinyTransformer(), x, ["blocks.0"])


def test_not_a_module_is_refused() -> None:
    with pytest.raises(TypeError):
        st.capture(lambda x: x, vectors(), ["fc1"])  # type: ignore[arg-type]  # deliberately wrong type


_OWN_MESSAGES = '''
import json, torch, seethrough as st
from seethrough.core import inspect_model
model = torch.nn.Sequential(torch.nn.Linear(4, 2))
x = torch.zeros(3, 4)
cases = {
    "list inputs": lambda: st.capture(model, [x], ["0"]),
    "str inputs": lambda: st.capture(model, "text", ["0"]),
    "int inputs": lambda: inspect_model(model, 5),
    "int keys": lambda: st.capture(model, {1: x}, ["0"]),
    "int sites": lambda: st.capture(model, x, 42),
    "int site": lambda: st.capture(model, x, [3]),
    "not a module": lambda: st.capture(lambda v: v, x, ["0"]),
    "hooks not a dict": lambda: st.hooks(model, ["0"]),
    "patch value": lambda: st.patch(model, x, {"0": "zeros"}),
    "site path": lambda: st.Site(3),
}
out = {}
for name, fn in cases.items():
    try:
        fn()
        out[name] = ["no error", ""]
    except Exception as err:
        out[name] = [type(err).__name__, str(err)]
print(json.dumps(out))
'''


def test_own_type_messages_without_the_type_checker() -> None:
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _OWN_MESSAGES], capture_output=True, text=True, timeout=120,
                            check=True)
    got = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {
        "list inputs": "Wrap a list as a tuple", "str inputs": "must be a Tensor", "int inputs": "got int",
        "int keys": "string keys", "int sites": "sites must be a Site", "int site": "each site must be",
        "not a module": "torch.nn.Module", "hooks not a dict": "non-empty dict", "patch value": "give a Tensor",
        "site path": "module path string",
    }
    for name, fragment in expected.items():
        kind, message = got[name]
        assert kind == "InputTypeError" and fragment in message, f"{name}: {kind}: {message}"

