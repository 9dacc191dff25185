"""Pruning masks, sparsity curves and lottery tickets (issue #15, item 3: frivolous weights).

Oracles: hand-computed masks; a Python-loop reference of global and per-layer ranking; a hand-written
Adam step for the sparse trainer; invariants of IMP (nested masks, densities (1 - rate)^r, rewinding
to the initialisation at step 0) and the model passed in left untouched.
"""

from __future__ import annotations

import torch
from torch import nn

from seethrough.core.errors import InputError
from seethrough.weights import (
    LotteryTicket,
    PruningMask,
    lottery_ticket,
    prunable_parameters,
    prune,
    reinitialised,
    shuffled_masks,
    sparsity_curve,
    train_sparse,
)


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def _loop_prune(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Reference: list every (score, position) pair, sort with ties by position, drop the k lowest."""
    entries = []
    for name, s in scores.items():
        for i, v in enumerate(s.flatten().tolist()):
            entries.append((v, len(entries), name, i))
    k = round(sparsity * len(entries))
    out = {n: torch.ones(s.numel(), dtype=torch.bool) for n, s in scores.items()}
    for _, _, name, i in sorted(entries)[:k]:
        out[name][i] = False
    return {n: m.reshape(scores[n].shape) for n, m in out.items()}


def test_unstructured_global_and_layer_match_a_loop_reference() -> None:
    model = _mlp()
    gen = torch.Generator().manual_seed(3)
    scores = {n: torch.rand(p.shape, generator=gen) for n, p in model.named_parameters() if n.endswith("weight")}
    for sparsity in (0.0, 0.3, 0.77, 1.0):
        got = prune(model, scores, sparsity=sparsity)
        want = _loop_prune(scores, sparsity)
        assert all(torch.equal(got.masks[n], want[n]) for n in scores)
        per_layer = prune(model, scores, sparsity=sparsity, scope="layer")
        for n, s in scores.items():
            assert torch.equal(per_layer.masks[n], _loop_prune({n: s}, sparsity)[n])
        total = sum(s.numel() for s in scores.values())
        assert got.density == sum(int(m.sum()) for m in want.values()) / total


def test_ties_break_in_parameter_order_and_by_hand() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    scores = {"0.weight": torch.tensor([[1.0, 1.0], [1.0, 5.0]]), "2.weight": torch.tensor([[1.0, 0.0]])}
    mask = prune(model, scores, sparsity=0.5).masks  # 3 of 6 go: the 0, then the first two 1s
    assert mask["0.weight"].tolist() == [[False, False], [True, True]]
    assert mask["2.weight"].tolist() == [[True, False]]


def test_structured_units_prune_rows_and_their_biases() -> None:
    model = _mlp()
    scores = {"0.weight": torch.arange(24.0).reshape(6, 4).flip(0)}  # row totals fall: rows 4, 5 lowest
    result = prune(model, scores, sparsity=1 / 3, structure="units", parameters=["0.weight"])
    assert result.masks["0.weight"].all(1).tolist() == [True, True, True, True, False, False]
    assert not result.masks["0.weight"][4:].any()
    assert result.masks["0.bias"].tolist() == [True, True, True, True, False, False]
    pruned = result.apply(model)
    x = torch.randn(5, 4)
    assert torch.equal(pruned[0](x)[:, 4:], torch.zeros(5, 2))
    assert not torch.equal(model[0].weight[4:], torch.zeros(2, 4))  # the model passed in is untouched


def test_structured_conv_channels_and_default_parameters() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    assert prunable_parameters(model) == ["0.weight", "3.weight"]
    assert prunable_parameters(model, structure="units") == ["0.weight"]  # the output layer's rows stay
    scores = {"0.weight": torch.tensor([3.0, 1.0, 2.0, 0.5]).reshape(4, 1, 1, 1).expand(4, 1, 3, 3).clone()}
    mask = prune(model, scores, sparsity=0.5, structure="units").masks
    assert mask["0.weight"].flatten(1).all(1).tolist() == [True, False, True, False]
    assert mask["0.bias"].tolist() == [True, False, True, False]


def test_global_units_rank_across_layers() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    scores = {"0.weight": torch.tensor([[1.0, 1.0], [9.0, 9.0]]), "2.weight": torch.tensor([[5.0, 5.0], [0.0, 1.0]])}
    mask = prune(model, scores, sparsity=0.5, structure="units").masks  # totals 2, 18, 10, 1: drop 1 and 2
    assert mask["0.weight"].all(1).tolist() == [False, True]
    assert mask["2.weight"].all(1).tolist() == [True, False]


def test_mask_apply_ablate_save_load(tmp_path) -> None:
    model = _mlp()
    scores = {n: p.detach().abs() for n, p in model.named_parameters() if n.endswith("weight")}
    result = prune(model, scores, sparsity=0.6)
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    kept, ablated = result.apply(model), result.ablate(model)
    for n, m in result.masks.items():
        w = dict(model.named_parameters())[n].detach()
        assert torch.equal(dict(kept.named_parameters())[n].detach(), w * m)
        assert torch.equal(dict(ablated.named_parameters())[n].detach(), w * ~m)
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    result.save(tmp_path / "m.safetensors")
    back = PruningMask.load(tmp_path / "m.safetensors")
    assert back.to_dict() == result.to_dict()


def test_bad_input_is_refused_before_work() -> None:
    model = _mlp()
    scores = {n: p.detach().abs() for n, p in model.named_parameters()}
    for call in (lambda: prune(model, scores, sparsity=1.5), lambda: prune(model, scores, sparsity=0.5, scope="unit"),
                 lambda: prune(model, {"0.weight": scores["0.weight"]}, sparsity=0.5),
                 lambda: prune(model, {**scores, "0.weight": torch.ones(2, 2)}, sparsity=0.5),
                 lambda: lottery_ticket(model, torch.randn(8, 4), torch.zeros(8, dtype=torch.long), rewind_step=9,
                                        steps=5)):
        try:
            call()
        except InputError:
            continue
        raise AssertionError("bad input accepted")


def test_sparsity_curve_matches_applying_each_mask() -> None:
    model = _mlp(1)
    x = torch.randn(128, 4)
    y = model(x).argmax(1)
    scores = {n: p.detach().abs() for n, p in model.named_parameters()}
    curve = sparsity_curve(model, x, y, scores, sparsities=(0.9, 0.0, 0.5))
    assert curve.sparsity == (0.0, 0.5, 0.9) and curve.dense_accuracy == 1.0 and curve.accuracy[0] == 1.0
    for s, a in zip(curve.sparsity, curve.accuracy, strict=True):
        pruned = prune(model, scores, sparsity=s).apply(model)
        assert a == float((pruned(x).argmax(1) == y).float().mean())
    assert curve.largest_sparsity(0.0) >= 0.0 and len(curve.to_frame()) == 3


def test_train_sparse_is_one_hand_written_adam_step_with_the_mask() -> None:
    model = _mlp(2)
    x, y = torch.randn(16, 4), torch.arange(16) % 3
    mask = {"0.weight": torch.rand(6, 4, generator=torch.Generator().manual_seed(0)) > 0.5}
    trained = train_sparse(model, mask, x, y, steps=1, lr=0.1, batch_size=16)
    # reference: zero the pruned weights, one Adam step on the full batch (one batch = every row), re-zero
    ref = reinitialised(model, seed=0)
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        ref[0].weight.mul_(mask["0.weight"])
    opt = torch.optim.Adam(ref.parameters(), lr=0.1)
    nn.functional.cross_entropy(ref(x), y).backward()  # batch order does not matter for a full-batch mean
    ref[0].weight.grad.mul_(mask["0.weight"])
    opt.step()
    with torch.no_grad():
        ref[0].weight.mul_(mask["0.weight"])
    for (n, a), b in zip(trained.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=n)
    assert not trained[0].weight[~mask["0.weight"]].any()


def test_controls_keep_counts_and_leave_the_rng() -> None:
    masks = {"a": torch.rand(5, 7) > 0.6, "b": torch.rand(3) > 0.2}
    model = _mlp()
    state = torch.get_rng_state()
    shuffled = shuffled_masks(masks, seed=4)
    fresh = reinitialised(model, seed=5)
    assert torch.equal(state, torch.get_rng_state())
    assert all(int(shuffled[n].sum()) == int(m.sum()) and shuffled[n].shape == m.shape for n, m in masks.items())
    assert torch.equal(reinitialised(model, seed=5)[0].weight, fresh[0].weight)
    assert fresh[0].weight.abs().max() <= 0.5 and not torch.equal(fresh[0].weight, model[0].weight)


def test_lottery_ticket_invariants() -> None:
    model = _mlp(3)
    x = torch.randn(96, 4)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    state = torch.get_rng_state()
    t = lottery_ticket(model, x, y, rounds=3, rate=0.5, steps=30, batch_size=32, rewind_step=0)
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    total = 4 * 6 + 6 * 3
    # half the kept weights go each round, rounded half to even: 21 pruned, then 10 (10.5), then 6 (5.5)
    assert [round(d * total) for d in t.density] == [42, 21, 11, 5]
    for earlier, later in zip(t.masks, t.masks[1:], strict=False):
        assert all(not (later[n] & ~earlier[n]).any() for n in later)  # pruned weights stay pruned
    assert all(torch.equal(t.rewind[n], before[n]) for n in t.rewind)  # step 0: the initialisation
    assert not t.weights["0.weight"][~t.masks[-1]["0.weight"]].any()
    again = lottery_ticket(model, x, y, rounds=3, rate=0.5, steps=30, batch_size=32, rewind_step=0)
    assert again.accuracy == t.accuracy  # deterministic
    # the ticket's last round retrained by train_sparse from the rewound weights is IMP's last round
    retrained = train_sparse(t.ticket(model), t.masks[-1], x, y, steps=30, batch_size=32)
    assert all(torch.equal(p.detach(), t.weights[n]) for n, p in retrained.named_parameters())


def test_lottery_ticket_rewinds_to_an_early_iterate_and_saves(tmp_path) -> None:
    model = _mlp(4)
    x = torch.randn(64, 4)
    y = (x[:, 2] > 0).long()
    t = lottery_ticket(model, x, y, rounds=1, rate=0.2, steps=10, batch_size=64, rewind_step=4)
    early = train_sparse(model, {}, x, y, steps=4, batch_size=64)
    assert all(torch.equal(t.rewind[n], p.detach()) for n, p in early.named_parameters())
    t.save(tmp_path / "t.safetensors")
    back = LotteryTicket.load(tmp_path / "t.safetensors")
    assert back.density == t.density and back.accuracy == t.accuracy and back.rewind_step == 4
    assert all(torch.equal(back.masks[1][n], t.masks[1][n]) for n in t.masks[1])
