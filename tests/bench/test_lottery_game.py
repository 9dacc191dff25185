"""The lottery-tickets game and the mask-recovery game's new metrics (issue #15 items 2-4).

Oracles: planted truth. The sparse teacher reads only its support and labels balanced-enough classes;
the game's scoring is checked on a hand-made record (no training); the mask-recovery answer key
scores shared_iou 1 and is validated, the random baseline's masks are not.
"""

from __future__ import annotations

import torch

from seethrough.bench.games import GAMES
from seethrough.bench.games.lottery import LotteryAnswer, LotteryCase, support_scores
from seethrough.bench.games.masks import MaskAnswer, mask_validated
from seethrough.bench.zoo.lottery import sparse_teacher


def test_sparse_teacher_reads_only_its_support() -> None:
    t = sparse_teacher(0)
    outside = torch.ones(t.first.shape[1], dtype=torch.bool)
    outside[t.support] = False
    assert not t.first[:, outside].any() and int((t.first != 0).sum(1).max()) <= 3
    x, y = t.test
    noisy = x.clone()
    noisy[:, outside] = torch.randn(len(x), int(outside.sum()))  # the noise inputs change no logit
    assert torch.equal(torch.relu(noisy @ t.first.T + t.bias) @ t.head.T, torch.relu(x @ t.first.T + t.bias) @ t.head.T)
    assert torch.bincount(y, minlength=4).min() > 0.1 * len(y)  # every class a real share
    assert abs(t.teacher_density - t.n_teacher_weights / (32 * 64 + 64 * 4)) < 1e-12
    assert torch.equal(sparse_teacher(0).student[0].weight, t.student[0].weight)  # seeded


def test_scores_on_a_hand_made_record() -> None:
    t = sparse_teacher(0)
    record = {"dense": 0.85, "ticket": 0.9, "reinit": 0.87, "shuffled": 0.6, "density": 0.1,
              "support": t.support.tolist(), "shuffled_support": list(range(16))}
    case = LotteryCase(t, record)
    game = GAMES["lottery-tickets"]
    ticket = game.checked_scores(game.score(LotteryAnswer(0.9, 0.1, tuple(t.support.tolist()), ticket=True), case))
    assert ticket["support_recall"] == ticket["support_precision"] == 1.0
    assert abs(ticket["accuracy_gap"] + 0.05) < 1e-12 and abs(ticket["margin_over_reinit"] - 0.03) < 1e-12
    control = game.score(LotteryAnswer(0.6, 0.1, tuple(range(16))), case)
    assert "margin_over_reinit" not in control and abs(control["accuracy_gap"] - 0.25) < 1e-12
    recall, precision = support_scores(tuple(range(16)), t.support)
    assert control["support_recall"] == recall and control["support_precision"] == precision == recall * 8 / 16


def test_mask_recovery_answer_key_is_validated_and_random_masks_are_not() -> None:
    game = GAMES["mask-recovery"]
    planted = game.build(game.cases(0, True)[0])
    key = MaskAnswer(planted.task_a, planted.task_b, (planted.task_a,) * 5)
    scores = game.score(key, planted)
    assert scores["shared_iou"] == 1.0 and scores["validated"] == 1.0
    gen = torch.Generator().manual_seed(0)
    random = {n: (torch.rand(m.shape, generator=gen) < 0.35) & m for n, m in planted.nonzero.items()}
    assert mask_validated(planted, random) == 0.0
