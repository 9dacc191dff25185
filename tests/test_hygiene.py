"""Every public method leaves the model as it found it (issue #2).

Parametrised over the table in tests/hygiene.py: after success and after injected failures
(a forward that raises, a raising callback, an invalid target) no hook is left, the user's own
hooks still fire, parameters are bit-identical, modes and grad flags are unchanged and no
``.grad`` appears; results are batch invariant and deterministic; the model can be collected.
A planted-bug test shows these checks do fail on a method that leaks.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import pkgutil
import re
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hygiene import EXEMPT, TABLE, Case, assert_unchanged, same, snapshot
from models import TinyMLP, vectors
from torch import nn

import seethrough

SRC = Path(seethrough.__file__).parent


def _prepare(case: Case) -> tuple[nn.Module, Any]:
    model = case.model()
    model.train(case.train_mode)
    return model, case.inputs()


def _public_objects() -> dict[int, tuple[str, Any]]:
    found: dict[int, tuple[str, Any]] = {}
    for info in pkgutil.walk_packages(seethrough.__path__, "seethrough."):
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and not issubclass_safe(obj, BaseException):
                found.setdefault(id(obj), (f"{info.name}.{name}", obj))
    return found


def issubclass_safe(obj: Any, cls: type) -> bool:
    return inspect.isclass(obj) and issubclass(obj, cls)


def test_every_public_method_is_in_the_table_or_exempt() -> None:
    covered = {id(c.target) for c in TABLE} | {id(o) for o in EXEMPT}
    missing = sorted(name for key, (name, _) in _public_objects().items() if key not in covered)
    assert not missing, f"public names missing from tests/hygiene.py (add a Case, or EXEMPT with a reason): {missing}"


@pytest.mark.parametrize("case", TABLE, ids=lambda c: c.name)
def test_success_leaves_no_trace_and_user_hooks_still_fire(case: Case) -> None:
    model, x = _prepare(case)
    fired: list[str] = []
    handle = model.register_forward_hook(lambda *a: fired.append("user"))
    before = snapshot(model)
    case.call(model, x)
    assert_unchanged(before, snapshot(model), case.name)
    if case.runs_forward:
        assert fired, f"{case.name}: the user's own forward hook did not fire"
    handle.remove()


@pytest.mark.parametrize("case", [c for c in TABLE if c.runs_forward], ids=lambda c: c.name)
def test_forward_that_raises_leaves_no_trace(case: Case) -> None:
    model, x = _prepare(case)
    leaf = [m for m in model.modules() if not list(m.children())][-1]

    def boom(*args: Any) -> None:
        raise RuntimeError("injected failure inside the forward pass")

    handle = leaf.register_forward_hook(boom)
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="injected failure"):
        case.call(model, x)
    assert_unchanged(before, snapshot(model), f"{case.name} after a failing forward")
    handle.remove()


@pytest.mark.parametrize("case", [c for c in TABLE if c.invalid], ids=lambda c: c.name)
def test_invalid_calls_raise_and_leave_no_trace(case: Case) -> None:
    model, x = _prepare(case)
    before = snapshot(model)
    for i, bad in enumerate(case.invalid):
        with pytest.raises(Exception) as info:  # noqa: B017 - each bad call must fail; the kind is tested elsewhere
            bad(model, x)
        assert str(info.value), f"{case.name} invalid call {i}: an error without a message"
        assert_unchanged(before, snapshot(model), f"{case.name} invalid call {i}")


@pytest.mark.parametrize("case", [c for c in TABLE if c.per_example], ids=lambda c: c.name)
def test_batch_of_n_equals_n_batches_of_one(case: Case) -> None:
    from seethrough.core.inputs import batch_size_of, slice_inputs

    model, x = _prepare(case)
    assert case.per_example is not None
    model.eval()  # batch invariance is a property of the eval-mode function (no dropout noise)
    whole = case.per_example(case.call(model, x))
    parts = torch.cat([case.per_example(case.call(model, slice_inputs(x, i, i + 1))) for i in range(batch_size_of(x))])
    # batched and unbatched matmuls may round differently in the last bits
    torch.testing.assert_close(whole, parts, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", TABLE, ids=lambda c: c.name)
def test_same_seed_same_result(case: Case) -> None:
    model, x = _prepare(case)
    torch.manual_seed(123)
    first = case.call(model, x)
    torch.manual_seed(123)
    second = case.call(model, x)
    assert same(first, second), f"{case.name}: two runs with the same seed differ"


@pytest.mark.parametrize("case", TABLE, ids=lambda c: c.name)
def test_model_can_be_garbage_collected(case: Case) -> None:
    model, x = _prepare(case)
    case.call(model, x)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None, f"{case.name} kept a reference to the model alive"


# -- the checks themselves must be able to fail -----------------------------------------------

def _leaks_hook(model: nn.Module, x: torch.Tensor) -> None:
    model.fc1.register_forward_hook(lambda *a: None)


def _flips_mode(model: nn.Module, x: torch.Tensor) -> None:
    model.train()


def _nudges_weight(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        model.fc2.weight[0, 0] += 1e-6


def _freezes(model: nn.Module, x: torch.Tensor) -> None:
    model.fc1.bias.requires_grad_(False)


def _leaves_grad(model: nn.Module, x: torch.Tensor) -> None:
    model(x).sum().backward()


def _leaks_tensor_hook(model: nn.Module, x: torch.Tensor) -> None:
    model.fc1.weight.register_hook(lambda g: g)


def _draws_torch_rng(model: nn.Module, x: torch.Tensor) -> None:
    torch.rand(1)


def _draws_numpy_rng(model: nn.Module, x: torch.Tensor) -> None:
    np.random.rand()


@pytest.mark.parametrize("planted, message", [
    (_draws_torch_rng, "global torch/numpy RNG"),
    (_draws_numpy_rng, "global torch/numpy RNG"),
    (_leaks_hook, "hooks changed"),
    (_flips_mode, "modes changed"),
    (_nudges_weight, "fc2.weight changed"),
    (_freezes, "requires_grad"),
    (_leaves_grad, ".grad"),
    (_leaks_tensor_hook, "tensor hooks"),
])
def test_harness_catches_a_planted_bug(planted: Any, message: str) -> None:
    model = TinyMLP().eval()
    before = snapshot(model)
    planted(model, vectors())
    with pytest.raises(AssertionError, match=re.escape(message)):
        assert_unchanged(before, snapshot(model), planted.__name__)


def test_no_hook_registration_outside_core_hooks() -> None:
    pattern = re.compile(r"register_(forward|full_backward|backward)(_pre)?_hook|\.register_hook\(")
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if p.name != "hooks.py" and pattern.search(p.read_text())]
    assert not offenders, f"hooks registered outside core/hooks.py: {offenders}"
