"""Probes with control tasks (issue #13, item 1): LinearProbe against scikit-learn, probe's split and control."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from models import TinyMLP, TinyTransformer, seeded
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from seethrough import Site, capture
from seethrough.core import InputError, InputTypeError, NotFittedError, SiteNotFoundError
from seethrough.representations import LinearProbe, MLPProbe, ProbeResult, probe

ROOT = Path(__file__).resolve().parents[2]


def _blobs(n: int = 300, d: int = 5, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = seeded(seed)
    y = torch.randint(0, k, (n,), generator=g)
    centres = torch.randn(k, d, generator=g) * 1.5
    return centres[y] + torch.randn(n, d, generator=g) * torch.linspace(0.5, 3.0, d), y


@pytest.mark.parametrize("k", [2, 3])
def test_linear_probe_solves_scikit_learns_logistic_regression_objective(k: int) -> None:
    x, y = _blobs(k=k)
    # both solvers converged far (the default tol, 1e-4, is scikit-learn's default stopping rule, not convergence)
    ours = LinearProbe(C=0.5, standardize=False, tol=1e-10).fit(x.double(), y)
    ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(x.double().numpy(), y.numpy())
    # both minimise the same strictly convex objective; the optimisers stop at slightly different points
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-4)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=1e-4)
    np.testing.assert_allclose(ours.predict_proba(x), ref.predict_proba(x.double().numpy()), atol=1e-5)
    assert (ours.predict(x) == ref.predict(x.double().numpy())).all()


def test_standardized_linear_probe_equals_scaler_plus_logistic_regression() -> None:
    x, y = _blobs(seed=1)
    ours = LinearProbe(C=2.0, tol=1e-10).fit(x.double(), y)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=2.0, tol=1e-10, max_iter=10_000)).fit(x.double().numpy(), y)
    np.testing.assert_allclose(ours.predict_proba(x), ref.predict_proba(x.double().numpy()), atol=1e-5)
    # coef_ is reported in the original feature space: the logits it gives are the model's
    logits = x.double().numpy() @ ours.coef_.T + ours.intercept_
    np.testing.assert_allclose(torch.tensor(logits).softmax(-1).numpy(), ours.predict_proba(x), atol=1e-10)


def test_probe_accuracy_agrees_with_logistic_regression_on_the_same_captured_features() -> None:
    model = TinyMLP().eval()
    x = torch.randn(400, 4, generator=seeded(3))
    labels = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    ours = probe(model, x, labels, "fc1", seed=0)
    sk = probe(model, x, labels, "fc1", seed=0,
               estimator=make_pipeline(StandardScaler(), LogisticRegression(max_iter=10_000)))
    assert abs(ours.accuracy - sk.accuracy) <= 0.01
    assert abs(ours.control_accuracy - sk.control_accuracy) <= 0.03
    # the oracle by hand: the same features, any split by input gives the same picture
    feats = capture(model, x, ["fc1"])["fc1"].detach().numpy()
    hand = LogisticRegression(max_iter=10_000).fit(feats[:300], labels[:300]).score(feats[300:], labels[300:])
    assert abs(ours.accuracy - hand) <= 0.05


def test_selectivity_is_accuracy_minus_control_and_the_control_is_near_chance() -> None:
    model = TinyMLP().eval()
    x = torch.randn(400, 4, generator=seeded(4))
    r = probe(model, x, (x[:, 0] > 0).long(), "fc1", seed=1)
    assert isinstance(r, ProbeResult)
    assert r.selectivity == r.accuracy - r.control_accuracy
    assert r.accuracy >= 0.95
    assert r.control_accuracy <= 0.65  # per-example random labels: nothing to learn (chance 0.5)
    assert r.n_train + r.n_test == 400 and r.n_test == 100


def test_sequence_site_positions_are_examples_and_negative_labels_are_ignored() -> None:
    model = TinyTransformer().eval()
    ids = torch.randint(0, 16, (120, 6), generator=seeded(5))
    labels = (ids % 2).clone()
    labels[:, 0] = -1  # no label at the first position
    r = probe(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, labels, "blocks.1", groups=ids)
    assert r.n_train + r.n_test == 120 * 5
    # padding labelled -1 changes nothing (the padded positions come after the real ones: causal-free
    # blocks see them, so pad at the embedding, which reads each token alone)
    padded = torch.cat([labels, torch.full((120, 2), -1)], 1)
    ids2 = torch.cat([ids, torch.zeros(120, 2, dtype=torch.long)], 1)
    first = probe(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, labels, "embed", groups=ids)
    second = probe(model, {"input_ids": ids2, "attention_mask": torch.ones_like(ids2)}, padded, "embed", groups=ids2)
    assert (second.n_train, second.n_test) == (first.n_train, first.n_test)
    assert second.accuracy == pytest.approx(first.accuracy, abs=1e-9)
    assert second.control_accuracy == pytest.approx(first.control_accuracy, abs=1e-9)


def test_control_task_per_token_exposes_a_memorising_probe() -> None:
    """Hewitt & Liang's point: where token identity is decodable, any per-token label is too."""
    model = nn.Sequential(nn.Embedding(16, 32), nn.Identity())
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(16, 32, generator=seeded(0)))
    ids = torch.randint(0, 16, (150, 6), generator=seeded(1))
    r = probe(model, ids, ids % 2, "1", groups=ids)
    assert r.accuracy >= 0.95  # 16 tokens in 32 dimensions: every labelling is linearly separable
    assert r.control_accuracy >= 0.9
    assert r.selectivity <= 0.1
    per_example = probe(model, ids, ids % 2, "1")  # a random label per position cannot be memorised
    assert per_example.control_accuracy <= 0.65


def test_held_out_split_is_by_input_whole_sentences() -> None:
    # each input's positions all carry one label drawn per input: a split by position would leak it
    model = nn.Sequential(nn.Embedding(50, 8), nn.Identity())
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(50, 8, generator=seeded(0)))
    ids = torch.arange(50).repeat_interleave(1).view(50, 1).expand(50, 4).clone()
    labels = torch.randint(0, 2, (50,), generator=seeded(1))[:, None].expand(50, 4).clone()
    r = probe(model, ids, labels, "1", groups=ids, seed=0)
    # sentence i is token i repeated: held-out sentences are unseen tokens, so nothing generalises
    assert r.accuracy <= 0.8
    assert r.n_test % 4 == 0


def test_mlp_probe_has_more_capacity_than_the_linear_probe() -> None:
    x = torch.randn(400, 2, generator=seeded(6))
    y = ((x[:, 0] * x[:, 1]) > 0).long()  # XOR: not linearly decodable
    assert LinearProbe().fit(x, y).score(x, y) < 0.65
    assert MLPProbe(d_hidden=32, epochs=400).fit(x, y).score(x, y) > 0.9


def test_estimator_contract() -> None:
    p = LinearProbe(C=3.0)
    assert p.get_params() == {"C": 3.0, "standardize": True, "max_iter": 500, "tol": 1e-4}
    with pytest.raises(NotFittedError):
        p.predict(torch.zeros(2, 2))
    x, y = _blobs()
    assert p.fit(x, y) is p
    assert p.coef_.shape == (3, 5) and list(p.classes_) == [0, 1, 2]
    p.fit(x[:, :2], (y > 0).long())  # forgets the earlier fit
    assert p.coef_.shape == (1, 2)
    with pytest.raises(InputError, match="single class"):
        LinearProbe().fit(x, torch.zeros(len(x), dtype=torch.long))


def test_bad_arguments_are_refused_before_any_forward_pass() -> None:
    model = TinyMLP().eval()
    x = torch.randn(20, 4)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(SiteNotFoundError):
        probe(model, x, torch.zeros(20, dtype=torch.long), "fc9")
    with pytest.raises(InputError, match="test_fraction"):
        probe(model, x, torch.zeros(20, dtype=torch.long), "fc1", test_fraction=1.5)
    with pytest.raises(InputTypeError, match="class indices"):
        probe(model, x, torch.zeros(20, dtype=torch.float32), Site("fc1"))
    assert not calls


def test_same_seed_same_result_other_seed_other_split() -> None:
    model = TinyMLP().eval()
    x = torch.randn(200, 4, generator=seeded(7))
    labels = (x[:, 1] > 0).long()
    assert probe(model, x, labels, "fc1", seed=3) == probe(model, x, labels, "fc1", seed=3)


def _padded_batches() -> tuple[list[dict], list[torch.Tensor], list[torch.Tensor]]:
    """Three batches of token sequences padded to different lengths; labels -1 at padding."""
    g = seeded(8)
    batches, labels, groups = [], [], []
    for n, length in ((30, 4), (25, 7), (40, 5)):
        ids = torch.randint(0, 16, (n, length), generator=g)
        real = torch.randint(2, length + 1, (n,), generator=g)
        mask = (torch.arange(length)[None] < real[:, None]).long()
        ids = ids * mask  # padding token 0
        y = torch.where(mask.bool(), (ids % 3 == 0).long(), torch.full_like(ids, -1))
        batches.append({"input_ids": ids, "attention_mask": mask})
        labels.append(y)
        groups.append(ids)
    return batches, labels, groups


def test_a_list_or_iterator_of_padded_batches_equals_the_in_memory_result() -> None:
    """Streaming (issue #13 item 1): the same labelled examples in the same order give the same probe."""
    model = TinyTransformer().eval()
    batches, labels, groups = _padded_batches()
    width = max(b["input_ids"].shape[1] for b in batches)

    def pad(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    # in memory: every batch padded to the longest; the embedding reads each token alone
    ids = torch.cat([pad(b["input_ids"], 0) for b in batches])
    memory = probe(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                   torch.cat([pad(y, -1) for y in labels]), "embed", groups=torch.cat([pad(g, 0) for g in groups]),
                   batch_size=17)
    listed = probe(model, batches, labels, "embed", groups=groups)
    once = probe(model, iter(batches), iter(labels), "embed", groups=iter(groups))
    for r in (listed, once):
        assert (r.n_train, r.n_test) == (memory.n_train, memory.n_test)
        assert r.n_train + r.n_test == sum(int((y >= 0).sum()) for y in labels)
        assert r.accuracy == memory.accuracy and r.control_accuracy == memory.control_accuracy
    # a batch without any label changes nothing (it is read and dropped)
    blank = {"input_ids": torch.zeros(5, 3, dtype=torch.long), "attention_mask": torch.ones(5, 3, dtype=torch.long)}
    skipped = probe(model, [batches[0], blank, *batches[1:]], [labels[0], torch.full((5, 3), -1), *labels[1:]], "embed",
                    groups=[groups[0], torch.zeros(5, 3, dtype=torch.long), *groups[1:]])
    assert (skipped.accuracy, skipped.control_accuracy) == (listed.accuracy, listed.control_accuracy)
    # batch size does not change the in-memory result either
    ones = torch.ones_like(ids)
    whole = probe(model, {"input_ids": ids, "attention_mask": ones}, torch.cat([pad(y, -1) for y in labels]),
                  "embed", groups=torch.cat([pad(g, 0) for g in groups]), batch_size=1000)
    assert whole.accuracy == memory.accuracy and whole.control_accuracy == memory.control_accuracy


def test_a_list_of_batches_needs_one_label_array_per_batch() -> None:
    model = TinyTransformer().eval()
    batches, labels, _ = _padded_batches()
    with pytest.raises(InputError, match="one label array per batch"):
        probe(model, batches, labels[:2], "embed")
    with pytest.raises(InputTypeError, match="list or iterator of label arrays"):
        probe(model, batches, torch.cat([y.flatten() for y in labels]), "embed")


def _reader() -> nn.Module:
    """x (4) → identity hidden ``0`` → a head whose class-1 logit is x0 (coordinate 3 decodable, unused)."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4))
        model[0].bias.zero_()
        model[1].weight.zero_()
        model[1].weight[1, 0] = 1.0
        model[1].bias.zero_()
    return model.eval()


def test_probe_findings_are_validated_by_projecting_the_direction_out() -> None:
    """Decodable and used are separate verdicts: validate projects the probe direction out vs random directions."""
    from seethrough.evidence import Finding, validate

    model = _reader()
    x = torch.randn(400, 4, generator=seeded(9))
    held_out = torch.randn(200, 4, generator=seeded(10))
    verdicts, steered = {}, {}
    for coordinate in (0, 3):
        r = probe(model, x, (x[:, coordinate] > 0).long(), "0")
        assert r.accuracy >= 0.95  # both decodable
        (finding,) = r.to_findings(target=1)
        assert isinstance(finding, Finding) and finding.kind == "direction"
        cosine = float(finding.direction[coordinate].abs() / finding.direction.norm())
        assert cosine > 0.95  # the probe found the planted coordinate
        chosen = held_out[held_out[:, coordinate] > 0]  # inputs that have the property
        verdicts[coordinate] = validate(finding, model, chosen, n_controls=30, seed=1)
        # steering instead: a step along the (unit) direction on inputs without the property
        unit = Finding("direction", finding.claim, site=finding.site, direction=finding.direction / finding.direction.norm(),
                       target=1)
        steered[coordinate] = validate(unit, model, held_out[held_out[:, coordinate] <= 0], n_controls=30, steer=1.0,
                                       seed=1)
    assert verdicts[0].validated and verdicts[0].effect > 0.1
    assert not verdicts[3].validated and abs(verdicts[3].effect) < 0.02  # the head never reads coordinate 3
    assert steered[0].validated and not steered[3].validated
    with pytest.raises(InputError, match="no linear weights"):
        probe(model, x, (x[:, 0] > 0).long(), "0", estimator=MLPProbe(d_hidden=4, epochs=5)).to_findings()
