"""LEACE erasure and the "used" verdict (issue #13, item 1's causal follow-up)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import seeded
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from torch import nn

from seethrough.core import InputTypeError, NotFittedError
from seethrough.representations import Erasure, INLPEraser, LeaceEraser, erase


def _correlated(n: int = 600, d: int = 6, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = seeded(seed)
    y = torch.randint(0, k, (n,), generator=g)
    mix = torch.randn(d, d, generator=g)
    return (torch.randn(n, d, generator=g) + torch.randn(k, d, generator=g)[y] * 2) @ mix, y


def test_erased_features_have_zero_covariance_with_the_labels() -> None:
    x, y = _correlated()
    erased = LeaceEraser().fit(x, y).transform(x)
    z = torch.nn.functional.one_hot(y).double()
    cov = (erased - erased.mean(0)).T @ (z - z.mean(0)) / len(y)
    assert float(cov.abs().max()) <= 1e-6  # LEACE's defining property
    before = (x.double() - x.double().mean(0)).T @ (z - z.mean(0)) / len(y)
    assert float(before.abs().max()) > 0.5


def test_after_erasure_no_linear_classifier_beats_the_constant_predictor() -> None:
    x, y = _correlated(seed=1)
    eraser = LeaceEraser().fit(x, y)
    assert eraser.rank_ == 2  # k - 1 classes' worth of directions
    erased = eraser.transform(x).numpy()
    prior = np.bincount(y.numpy()) / len(y)
    constant = log_loss(y.numpy(), np.tile(prior, (len(y), 1)))
    fitted = LogisticRegression(C=1e4, max_iter=10_000, tol=1e-10).fit(erased, y.numpy())
    # in-sample, the best linear predictor's loss equals the constant predictor's (Belrose et al., thm 3.1)
    assert log_loss(y.numpy(), fitted.predict_proba(erased)) == pytest.approx(constant, abs=1e-4)
    # the reason: at w = 0 with the prior's intercept the log-loss gradient -n Cov(x, z) vanishes
    z = np.eye(3)[y.numpy()]
    gradient = erased.T @ (np.tile(prior, (len(y), 1)) - z) / len(y)
    assert np.abs(gradient).max() <= 1e-6
    unerased = LogisticRegression(max_iter=10_000).fit(x.numpy(), y.numpy())
    assert unerased.score(x.numpy(), y.numpy()) > 0.8


def test_one_feature_erasure_is_the_mean_and_erasure_is_idempotent() -> None:
    x = torch.tensor([[0.0], [1.0], [3.0], [4.0]])
    y = torch.tensor([0, 0, 1, 1])
    erased = LeaceEraser().fit(x, y).transform(x)
    torch.testing.assert_close(erased, torch.full((4, 1), 2.0, dtype=torch.float64), rtol=0, atol=1e-12)
    x2, y2 = _correlated(seed=2)
    e = LeaceEraser().fit(x2, y2)
    once = e.transform(x2)
    torch.testing.assert_close(e.transform(once), once, rtol=0, atol=1e-9)


def test_the_eraser_leaves_directions_uncorrelated_with_the_concept_alone() -> None:
    # independent coordinates; the concept lives in coordinate 0 only: only coordinate 0 moves
    g = seeded(3)
    x = torch.randn(2000, 4, generator=g)
    y = (x[:, 0] > 0).long()
    x = x - x.mean(0)
    erased = LeaceEraser().fit(x, y).transform(x)
    moved = (erased - x.double()).abs().mean(0)
    assert moved[0] > 0.3 and float(moved[1:].max()) < 0.05


def _reader(used: int) -> nn.Module:
    """x (4) → identity hidden → a head that reads only coordinate ``used``."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4))
        model[0].bias.zero_()
        model[1].weight.zero_()
        model[1].weight[1, used] = 1.0
        model[1].bias.zero_()
    return model.eval()


def test_erase_separates_used_from_decodable_but_unused() -> None:
    model = _reader(0)
    x = torch.randn(400, 4, generator=seeded(4))
    used = erase(model, x, (x[:, 0] > 0).long(), "0", n_controls=19)
    unused = erase(model, x, (x[:, 3] > 0).long(), "0", n_controls=19)
    assert isinstance(used, Erasure)
    assert used.used and used.change > 0.3 and used.p_value == pytest.approx(1 / 20)
    assert not unused.used and unused.change < 0.05
    assert used.residual_covariance <= 1e-6 and unused.residual_covariance <= 1e-6


def test_erase_with_a_metric_and_on_sequence_positions() -> None:
    emb = nn.Embedding(10, 6)
    with torch.no_grad():
        emb.weight.copy_(torch.randn(10, 6, generator=seeded(5)))
    model = nn.Sequential(emb, nn.Identity(), nn.Linear(6, 3)).eval()
    ids = torch.randint(0, 10, (40, 5), generator=seeded(6))
    labels = (ids >= 5).long()
    labels[:, -1] = -1
    r = erase(model, ids, labels, "1", groups=ids, metric=lambda out: out[:, -1, 0], n_controls=5)
    assert r.change >= 0 and len(r.control_changes) == 5
    assert r.residual_covariance <= 1e-6


def test_unfitted_eraser_refuses() -> None:
    with pytest.raises(NotFittedError):
        LeaceEraser().transform(torch.zeros(2, 2))


def test_inlp_is_an_orthogonal_projection_after_which_no_classifier_decodes() -> None:
    data, labels = _correlated(n=1200, d=6, seed=7)
    x, y, fresh_x, fresh_y = data[:600], labels[:600], data[600:], labels[600:]
    e = INLPEraser(n_iterations=20).fit(x, y)
    p = e.proj_
    torch.testing.assert_close(p, p.T, rtol=0, atol=1e-10)  # orthogonal projection: symmetric, idempotent
    torch.testing.assert_close(p @ p, p, rtol=0, atol=1e-8)
    assert e.rank_ == round(float(torch.trace(p)))
    assert e.rank_ >= 2 and e.accuracies_[0] > 0.8  # three classes: at least two directions removed
    # it stops when nothing decodes any more or nothing is left: here the classifiers keep finding
    # signal until the whole space is gone (INLP removes far more than LEACE's rank 2)
    assert e.accuracies_[-1] - e.majority_ < 0.01 or e.rank_ == 6
    # the oracle: scikit-learn's classifier, trained on the erased data, is at the majority rate on fresh data
    clf = LogisticRegression(max_iter=10_000).fit(e.transform(x).numpy(), y.numpy())
    majority = float(np.bincount(fresh_y.numpy()).max()) / len(fresh_y)
    assert clf.score(e.transform(fresh_x).numpy(), fresh_y.numpy()) <= majority + 0.05
    unerased = LogisticRegression(max_iter=10_000).fit(x.numpy(), y.numpy())
    assert unerased.score(fresh_x.numpy(), fresh_y.numpy()) > 0.8


def test_inlp_removes_the_planted_coordinate_only() -> None:
    g = seeded(3)
    x = torch.randn(2000, 4, generator=g)
    y = (x[:, 0] > 0).long()
    e = INLPEraser().fit(x, y)
    assert e.rank_ == 1 and float(e.proj_[0, 0]) > 0.99  # the removed direction is coordinate 0
    moved = (e.transform(x) - x.double()).abs().mean(0)
    assert moved[0] > 0.5 and float(moved[1:].max()) < 0.05


def test_erase_with_inlp_separates_used_from_decodable_but_unused() -> None:
    model = _reader(0)
    x = torch.randn(400, 4, generator=seeded(4))
    used = erase(model, x, (x[:, 0] > 0).long(), "0", n_controls=19, eraser=INLPEraser())
    unused = erase(model, x, (x[:, 3] > 0).long(), "0", n_controls=19, eraser=INLPEraser())
    assert used.used and used.change > 0.3
    assert not unused.used and unused.change < 0.05


def test_erase_on_a_list_of_batches_equals_the_in_memory_result() -> None:
    model = _reader(0)
    x = torch.randn(300, 4, generator=seeded(11))
    labels = (x[:, 0] + 0.3 * x[:, 1] > 0).long()
    memory = erase(model, x, labels, "0", n_controls=5, batch_size=64)
    cuts = [0, 100, 170, 300]
    parts = [x[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=False)]
    listed = erase(model, parts, [labels[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=False)], "0", n_controls=5)
    assert listed.change == pytest.approx(memory.change, abs=1e-12)
    torch.testing.assert_close(listed.control_changes, memory.control_changes, rtol=0, atol=1e-12)
    with pytest.raises(InputTypeError, match="one-shot iterator"):
        erase(model, iter(parts), [labels[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=False)], "0")
