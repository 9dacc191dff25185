"""The known-task-weights game and its planted two-task network (issue #15): the answer key is right."""

from __future__ import annotations

import pytest
import torch

from seethrough.bench.games import GAMES
from seethrough.bench.games.weights import task_auroc
from seethrough.bench.zoo.task_weights import two_task_network


def _zeroed(planted, keep: dict[str, torch.Tensor]) -> torch.nn.Module:
    import copy

    net = copy.deepcopy(planted.net)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.mul_(keep[name].to(p.dtype))
    return net


@pytest.mark.parametrize("seed", [0, 1])
def test_only_block_a_computes_task_a_and_the_decoy_is_larger(seed: int) -> None:
    planted = two_task_network(seed)
    out = planted.net(planted.inputs)[:, :3]
    only_a = _zeroed(planted, planted.task_a)
    torch.testing.assert_close(only_a(planted.inputs)[:, :3], out, rtol=0, atol=0)  # exact: nothing else reaches head A
    without_a = _zeroed(planted, {n: ~m for n, m in planted.task_a.items()})
    assert float((without_a(planted.inputs)[:, :3].argmax(1) == planted.labels_a).float().mean()) < 0.7
    weights = dict(planted.net.named_parameters())
    size = {key: torch.cat([weights[n].detach()[m[n]].abs() for n in m]).mean()
            for key, m in (("a", planted.task_a), ("b", planted.task_b), ("decoy", planted.decoy))}
    assert size["a"] < size["b"] < size["decoy"]
    for mask in (planted.task_a, planted.task_b, planted.decoy):  # the key marks only connections
        assert all(bool((planted.nonzero[n] | ~m).all()) for n, m in mask.items())


def test_every_unit_of_block_a_fires_on_some_input() -> None:
    planted = two_task_network(0)
    hidden = torch.relu(planted.net[0](planted.inputs))
    assert bool((hidden[:, :8] > 0).any(0).all())
    assert not bool((hidden[:, 20:] > 0).any())  # the dead decoy units never fire


def test_scores_fisher_perfect_and_magnitude_below_chance_on_exact_blocks() -> None:
    game = GAMES["known-task-weights"]
    case = game.cases(0, True)[0]
    assert case["leak"] == 0.0
    assert game.play("fisher", case) == {"task_a_auroc": 1.0, "task_b_auroc": 1.0}
    assert game.play("magnitude", case)["task_a_auroc"] < 0.5


def test_task_auroc_ignores_weights_outside_the_population() -> None:
    scores = {"w": torch.tensor([3.0, 9.0, 1.0, 2.0])}
    truth = {"w": torch.tensor([True, False, False, True])}
    assert task_auroc(scores, truth, {"w": torch.tensor([True, True, True, True])}) == 0.5
    assert task_auroc(scores, truth, {"w": torch.tensor([True, False, True, True])}) == 1.0


# -- planted irrelevance (pruning) ------------------------------------------------------------------------


def test_planted_irrelevant_weights_change_no_output() -> None:
    from seethrough.bench.zoo.irrelevance import planted_irrelevance

    planted = planted_irrelevance(0)
    kept = _zeroed(planted, {n: ~m for n, m in planted.irrelevant.items()})
    torch.testing.assert_close(kept(planted.inputs), planted.net(planted.inputs), rtol=0, atol=0)
    assert 0.2 < float(torch.bincount(planted.labels).min()) / len(planted.labels)  # balanced classes
    weights = dict(planted.net.named_parameters())
    irrelevant = torch.cat([weights[n].detach()[m].abs() for n, m in planted.irrelevant.items()])
    relevant = torch.cat([weights[n].detach()[planted.nonzero[n] & ~m].abs() for n, m in planted.irrelevant.items()])
    assert irrelevant.mean() > 2 * relevant.mean()  # the decoy magnitude pruning must fall for


def test_largest_sparsity_with_the_answer_key_prunes_every_irrelevant_weight() -> None:
    from seethrough.bench.games.pruning import largest_sparsity
    from seethrough.bench.zoo.irrelevance import planted_irrelevance

    planted = planted_irrelevance(1)
    oracle = {n: (~m).float() for n, m in planted.irrelevant.items()}  # irrelevant scored 0, the rest 1
    fraction = sum(int(m.sum()) for m in planted.irrelevant.values()) / sum(int(m.sum()) for m in planted.nonzero.values())
    assert largest_sparsity(planted, oracle) >= fraction
    inverse = {n: m.float() for n, m in planted.irrelevant.items()}  # prunes the teacher first
    assert largest_sparsity(planted, inverse) < 0.1


def test_pruning_game_scores_the_oracle_and_magnitude() -> None:
    game = GAMES["planted-irrelevance"]
    case = game.cases(0, True)[0]
    taylor = game.play("taylor", case)
    assert taylor["irrelevant_auroc"] == 1.0 and taylor["prunable_ratio"] >= 1.0 and taylor["beats_random_pruning"] == 1.0
    assert game.play("magnitude", case)["irrelevant_auroc"] < 0.5


# -- mask recovery ----------------------------------------------------------------------------------------


def test_shared_block_is_in_both_keys_and_only_the_key_computes_each_head() -> None:
    planted = two_task_network(0, n_shared=4)
    both = {n: planted.task_a[n] & planted.task_b[n] for n in planted.task_a}
    assert int(both["0.weight"][-4:].sum()) == int(planted.nonzero["0.weight"][-4:].sum()) > 0  # shared inputs
    assert int(both["2.weight"].sum()) == 0 and int(both["0.weight"][:-4].sum()) == 0
    for task, key in (("a", planted.task_a), ("b", planted.task_b)):
        head = planted.head(task)
        only = _zeroed(planted, key)
        cols = slice(0, 3) if task == "a" else slice(3, 6)
        torch.testing.assert_close(only(planted.inputs)[:, cols], head(planted.inputs), rtol=0, atol=0)
    plain = two_task_network(0)  # n_shared=0 draws nothing more: the known-task-weights network is unchanged
    assert torch.equal(plain.net[0].weight, two_task_network(0, n_shared=0).net[0].weight)


def test_mask_game_scores_the_answer_key_perfectly() -> None:
    from seethrough.bench.games.masks import MaskAnswer

    game = GAMES["mask-recovery"]
    case = game.cases(0, True)[0]
    planted = game.build(case)
    key = MaskAnswer(planted.task_a, planted.task_b, (planted.task_a,) * 5)
    scores = game.score(key, planted)
    assert scores["task_a_iou"] == 1.0 and scores["stability"] == 1.0 and scores["task_a_accuracy"] == 1.0
    assert scores["shared_fraction_error"] == 0.0 and scores["task_b_accuracy_under_mask_a"] < 0.6
