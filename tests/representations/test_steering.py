"""Steering along a direction against random directions (issue #13 item 1's second causal follow-up)."""

from __future__ import annotations

import pytest
import torch
from models import seeded
from torch import nn

from seethrough.core import InputError
from seethrough.representations import Steering, probe, steer


def _reader(d: int = 4) -> nn.Module:
    """x (d) → identity hidden ``0`` → class-1 logit x0, class-0 logit 0: predicts 1 where x0 > 0."""
    model = nn.Sequential(nn.Linear(d, d), nn.Linear(d, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(d))
        model[0].bias.zero_()
        model[1].weight.zero_()
        model[1].weight[1, 0] = 1.0
        model[1].bias.zero_()
    return model.eval()


def test_the_flip_rate_of_a_step_along_the_read_coordinate_is_its_closed_form() -> None:
    model = _reader()
    x = torch.randn(500, 4, generator=seeded(0))
    r = steer(model, x, torch.tensor([2.0, 0.0, 0.0, 0.0]), "0", strength=0.5, n_controls=19)
    assert isinstance(r, Steering)
    sd = float(x[:, 0].double().std(unbiased=False))
    assert r.step == pytest.approx(0.5 * sd, rel=1e-9)
    # the prediction is x0 > 0; adding s to x0 flips exactly the inputs with -s < x0 <= 0
    x0 = x[:, 0].double()
    expected = float(((x0 > -r.step) & (x0 <= 0)).double().mean())
    assert r.change == pytest.approx(expected, abs=1 / 500 + 1e-12)  # float32 rounding at the boundary
    assert r.used and r.p_value == pytest.approx(1 / 20)  # a random unit direction moves x0 by less


def test_a_decodable_but_unused_probe_direction_does_not_steer_the_model() -> None:
    model = _reader(16)  # in 16 dimensions a random unit direction has little of coordinate 0
    x = torch.randn(400, 16, generator=seeded(1))
    noise = torch.randn(400, 2, generator=seeded(11)) * 0.3  # noisy labels: not separable, a quick fit
    used = probe(model, x, (x[:, 0] + noise[:, 0] > 0).long(), "0")
    unused = probe(model, x, (x[:, 3] + noise[:, 1] > 0).long(), "0")
    assert used.accuracy > 0.85 and unused.accuracy > 0.85  # both decodable
    steered_used = steer(model, x, used.coef[0], "0", n_controls=19)
    steered_unused = steer(model, x, unused.coef[0], "0", n_controls=19)
    assert steered_used.used and steered_used.change > 0.3
    assert not steered_unused.used and steered_unused.change < 0.05


def test_a_list_of_batches_equals_the_in_memory_result_and_sequence_positions_step() -> None:
    model = _reader()
    x = torch.randn(300, 4, generator=seeded(2))
    direction = torch.tensor([1.0, 0.5, 0.0, 0.0])
    memory = steer(model, x, direction, "0", n_controls=5, batch_size=64)
    listed = steer(model, [x[:120], x[120:]], direction, "0", n_controls=5)
    assert listed.change == pytest.approx(memory.change, abs=1e-12) and listed.step == pytest.approx(memory.step)
    torch.testing.assert_close(listed.control_changes, memory.control_changes, rtol=0, atol=1e-12)
    emb = nn.Sequential(nn.Embedding(10, 4), nn.Identity(), nn.Linear(4, 3)).eval()
    ids = torch.randint(0, 10, (20, 5), generator=seeded(3))
    r = steer(emb, ids, torch.ones(4), "1", n_controls=3)  # every position moves
    assert len(r.control_changes) == 3 and 0.0 <= r.change <= 1.0


def test_bad_directions_are_refused_before_any_forward_pass() -> None:
    model = _reader()
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(InputError, match="non-zero"):
        steer(model, torch.zeros(4, 4), torch.zeros(4), "0")
    with pytest.raises(InputError, match="n_controls"):
        steer(model, torch.zeros(4, 4), torch.ones(4), "0", n_controls=0)
    assert not calls
    with pytest.raises(InputError, match="direction has 3 entries"):
        steer(model, torch.zeros(4, 4), torch.ones(3), "0")
