"""Methods on a model in training mode leave its buffers bit-identical (issue #10).

A forward pass in training mode updates BatchNorm's running mean, variance and batch count;
integrated gradients pushes n_steps × batch interpolated inputs through them. Oracle: the
buffers before the call, and a plain train-mode forward of an untouched copy (the method still
sees training-mode behaviour: batch statistics).
"""

from __future__ import annotations

import copy

import pytest
import torch
from hygiene import assert_unchanged, snapshot
from models import BatchNormCNN, images

import seethrough as st
from seethrough.neurons import ablate, integrated_gradients


def _calls() -> dict:
    return {
        "capture": lambda m, x: st.capture(m, x, ["bn", "head"])["head"],
        "patch": lambda m, x: st.patch(m, x, {"bn": lambda value, site: value * 0.5}),
        "integrated_gradients": lambda m, x: integrated_gradients(m, x, 0, n_steps=8).values,
        "ablate": lambda m, x: ablate(m, x, "bn", [0, 2]),
    }


@pytest.mark.parametrize("name", list(_calls()))
def test_train_mode_buffers_are_left_bit_identical(name: str) -> None:
    model = BatchNormCNN().train()
    x = images(batch=6)
    before = snapshot(model)
    _calls()[name](model, x)
    assert_unchanged(before, snapshot(model), name)
    assert int(model.bn.num_batches_tracked) == 7


def test_capture_in_train_mode_still_sees_batch_statistics() -> None:
    model = BatchNormCNN().train()
    x = images(batch=6)
    reference = copy.deepcopy(model)(x)  # a plain training-mode forward (it moves the copy's stats)
    got = st.capture(model, x, ["head"])["head"]
    torch.testing.assert_close(got, reference, rtol=0, atol=0)
    eval_out = copy.deepcopy(model).eval()(x)
    assert not torch.allclose(got, eval_out)  # the running stats were not used instead


def test_buffers_are_restored_when_the_forward_fails() -> None:
    model = BatchNormCNN().train()
    before = snapshot(model)

    def boom(value: torch.Tensor, site: st.Site) -> None:
        raise RuntimeError("injected after the BatchNorm ran")

    with pytest.raises(RuntimeError, match="injected"):
        st.patch(model, images(batch=6), {"head": boom})
    assert_unchanged(before, snapshot(model), "failed patch")
