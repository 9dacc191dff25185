"""weights.allocate (PackNet) and weights.unit_allocation (issue #15 item 1): no forgetting by construction, planted units."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from seethrough.bench.zoo.task_weights import two_task_network
from seethrough.core.errors import InputError
from seethrough.weights import allocate, train_sequential, unit_allocation

HEADS = [(0, 2), (2, 4)]


def _tasks() -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    wa, wb = torch.randn(8, generator=g), torch.randn(8, generator=g).abs()
    return [(x, (x @ wa > 0).long()), (x, (x.square() @ wb > wb.sum()).long())]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


@pytest.fixture(scope="module")
def packed():
    model, tasks = _mlp(), _tasks()
    settings = {"epochs": 30, "retrain_epochs": 10, "lr": 3e-2, "batch_size": 64}
    return (model, tasks, allocate(model, tasks, heads=HEADS, **settings),
            allocate(model, tasks[:1], heads=HEADS[:1], **settings))


def test_task_a_outputs_are_bit_identical_after_task_b(packed) -> None:
    """PackNet: task A runs on its own frozen weights, so training B cannot change a single output bit."""
    model, tasks, both, only_a = packed
    x = tasks[0][0]
    with torch.no_grad():
        assert torch.equal(both.task_model(0)(x)[:, :2], only_a.task_model(0)(x)[:, :2])
    assert both.accuracy[0] == only_a.accuracy[0]
    # measured (seed 0): task A 1.0 (dense 1.0), task B 0.895 (dense 0.941) with half the weights released
    assert both.accuracy[0] >= 0.98 and both.accuracy[1] > 0.85
    # naive fine-tuning on the same schedule forgets task A
    naive = train_sequential(model, tasks, heads=HEADS, epochs=30, lr=3e-2, batch_size=64)
    assert naive.accuracy[1][0] < both.accuracy[0]


def test_masks_are_disjoint_and_pruned_to_the_asked_fraction(packed) -> None:
    model, _, both, _ = packed
    assert both.overlap(0, 1).jaccard == 0.0 and sum(both.overlap(0, 1).shared) == 0
    trained = dict(both.model.named_parameters())
    for name, p in trained.items():
        owned = both.masks[0][name] | both.masks[1][name]
        assert torch.all(p[~owned] == 0)  # weights no task owns are zero
    # task A kept half of what it trained: every free weight it moved (all of the trunk and head A)
    moved_a = sum(int(m.sum()) for m in both.masks[0].values())
    trainable_a = sum(p.numel() for n, p in model.named_parameters() if n.startswith("0.")) + 2 * 16 + 2
    assert moved_a == pytest.approx(trainable_a / 2, abs=2)
    assert int(both.masks[0]["2.weight"][2:].sum()) == 0  # head B's rows are never task A's


def test_task_parameters_zero_later_tasks_weights(packed) -> None:
    _, _, both, _ = packed
    params = both.task_parameters(0)
    for name, p in params.items():
        assert torch.all(p[both.masks[1][name]] == 0)
    assert both.density()[0] > 0 and sum(both.density()) <= 1.0


def test_unit_allocation_finds_the_planted_blocks() -> None:
    """Planted two-task network: units 0-7 block A, 8-15 block B, 16-23 decoys, 24-27 shared by both heads."""
    planted = two_task_network(0, n_shared=4)
    tasks = [(planted.inputs, planted.labels_a), (planted.inputs, planted.labels_b)]
    block_a, block_b, shared = set(range(8)), set(range(8, 16)), set(range(24, 28))
    for method in ("ablation", "fisher"):
        r = unit_allocation(planted.net, tasks, "0", heads=[(0, 3), (3, 6)], method=method, threshold=0.0)
        assert set(r.units[0]) <= block_a | shared and set(r.units[1]) <= block_b | shared, (method, r.units)
        assert set(r.shared) <= shared and set(r.units[0]) & block_a and set(r.units[1]) & block_b
        for s in r.scores:  # decoys (no outgoing weight, or never firing) have exactly zero score
            assert float(s[16:24].abs().sum()) == 0.0
    exact = two_task_network(0)
    r = unit_allocation(exact.net, [(exact.inputs, exact.labels_a), (exact.inputs, exact.labels_b)], "0",
                        heads=[(0, 3), (3, 6)], threshold=0.0)
    assert r.jaccard[0][1] == 0.0 and r.shared == ()


def test_bad_arguments_are_refused() -> None:
    tasks = _tasks()
    with pytest.raises(InputError, match="nn.Linear"):
        unit_allocation(_mlp(), tasks, "1", heads=HEADS)
    with pytest.raises(InputError):
        unit_allocation(_mlp(), tasks, "0", heads=HEADS, method="gradcam")
    with pytest.raises(InputError):
        allocate(_mlp(), tasks, heads=HEADS, prune=1.5)
    with pytest.raises(InputError):
        allocate(_mlp(), tasks, heads=[(0, 2)])
