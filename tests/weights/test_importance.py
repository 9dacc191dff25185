"""weights.importance (issue #15): every method against a slow Python-loop reference or its hand formula."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from models import TinyCNN, TinyMLP, images, vectors
from torch import Tensor, nn

from seethrough.core.errors import InputError, InputTypeError
from seethrough.weights import FISHER_VARIANTS, METHODS, Importance, importance

# Per-example gradients through vmap and through a loop sum in different orders: float32 rounding.
TOL = {"rtol": 1e-5, "atol": 1e-6}


def _labels(n: int, n_classes: int = 3) -> Tensor:
    return torch.arange(n) % n_classes


def _grads(model: nn.Module, value: Tensor) -> dict[str, Tensor]:
    """Plain autograd on a private copy: the reference, independent of torch.func."""
    params = dict(model.named_parameters())
    g = torch.autograd.grad(value, list(params.values()), allow_unused=True)
    return {n: torch.zeros_like(p) if gi is None else gi for (n, p), gi in zip(params.items(), g, strict=True)}


def _loop(model: nn.Module, x: Tensor, per_example) -> list[dict[str, Tensor]]:
    ref = copy.deepcopy(model).eval()
    return [_grads(ref, per_example(ref, x[i:i + 1], i)) for i in range(len(x))]


def _mean(dicts: list[dict[str, Tensor]], fn) -> dict[str, Tensor]:
    return {n: torch.stack([fn(d[n]) for d in dicts]).mean(0) for n in dicts[0]}


@pytest.fixture
def setup() -> tuple[nn.Module, Tensor, Tensor]:
    return TinyMLP(), vectors(10), _labels(10)


def test_empirical_fisher_equals_a_loop_of_squared_per_example_gradients(setup) -> None:
    model, x, y = setup
    ref = _mean(_loop(model, x, lambda m, xi, i: F.cross_entropy(m(xi), y[i:i + 1])), torch.square)
    got = importance(model, x, y, method="fisher").scores
    assert got.keys() == ref.keys()
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], **TOL)


def test_exact_fisher_is_the_expectation_over_the_models_own_labels(setup) -> None:
    model, x, _ = setup
    ref_model = copy.deepcopy(model).eval()
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        probs = F.softmax(ref_model(x[i:i + 1]), -1)[0].detach()
        for c in range(3):
            g = _grads(ref_model, -F.log_softmax(ref_model(x[i:i + 1]), -1)[0, c])
            for n in total:
                total[n] += probs[c] * g[n].square() / len(x)
    got = importance(model, x, None, method="fisher", variant="exact").scores
    for n in total:
        torch.testing.assert_close(got[n], total[n], **TOL)


def test_sampled_fisher_is_the_empirical_fisher_at_labels_drawn_from_the_model(setup) -> None:
    model, x, _ = setup
    probs = F.softmax(model(x), -1).detach()
    drawn = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(4)).squeeze(1)
    got = importance(model, x, None, method="fisher", variant="sampled", seed=4).scores
    ref = importance(model, x, drawn, method="fisher").scores
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], **TOL)


def test_batched_fisher_squares_minibatch_gradients(setup) -> None:
    model, x, y = setup
    ref_model = copy.deepcopy(model).eval()
    batches = [(0, 4), (4, 8), (8, 10)]
    grads = [_grads(ref_model, F.cross_entropy(ref_model(x[a:b]), y[a:b])) for a, b in batches]
    ref = _mean(grads, torch.square)
    got = importance(model, x, y, method="fisher", variant="batched", batch_size=4).scores
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], **TOL)
    # the choice matters: mini-batch averaging shrinks the Fisher below the per-example one
    emp = importance(model, x, y, method="fisher").scores
    assert sum(float(v.sum()) for v in got.values()) < sum(float(v.sum()) for v in emp.values())


def test_mas_is_the_mean_absolute_gradient_of_the_squared_output_norm(setup) -> None:
    model, x, _ = setup
    ref = _mean(_loop(model, x, lambda m, xi, i: m(xi).square().sum()), torch.abs)
    got = importance(model, x, None, method="mas").scores
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], **TOL)


def test_snip_taylor_and_magnitude_by_hand(setup) -> None:
    model, x, y = setup
    ref_model = copy.deepcopy(model).eval()
    params = dict(model.named_parameters())
    g = _grads(ref_model, F.cross_entropy(ref_model(x), y))
    per = _loop(model, x, lambda m, xi, i: F.cross_entropy(m(xi), y[i:i + 1]))
    snip = importance(model, x, y, method="snip").scores
    taylor = importance(model, x, y, method="taylor").scores
    magnitude = importance(model, x, y, method="magnitude").scores
    for n, p in params.items():
        torch.testing.assert_close(snip[n], (p.detach() * g[n]).abs(), **TOL)
        torch.testing.assert_close(taylor[n], torch.stack([(p.detach() * d[n]).abs() for d in per]).mean(0), **TOL)
        assert torch.equal(magnitude[n], p.detach().abs())


def test_custom_loss_on_float_targets_and_tuple_inputs() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 1)

        def forward(self, a: Tensor, scale: float) -> Tensor:
            return self.fc(a)[:, 0] * scale

    model = Two()
    x = torch.randn(6, 3)
    t = torch.randn(6)
    got = importance(model, (x, 2.0), t, method="fisher", loss=F.mse_loss).scores
    ref = _mean(_loop(model, x, lambda m, xi, i: F.mse_loss(m(xi, 2.0), t[i:i + 1])), torch.square)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], **TOL)


def test_chunking_and_train_mode_do_not_change_scores() -> None:
    model, x, y = TinyCNN(), images(6), _labels(6)
    whole = importance(model, x, y, method="taylor").scores
    chunked = importance(model, x, y, method="taylor", batch_size=4).scores
    model.train()
    trained = importance(model, x, y, method="taylor").scores
    assert model.training and all(m.training for m in model.modules())  # modes restored
    for n in whole:
        torch.testing.assert_close(chunked[n], whole[n], **TOL)
        assert torch.equal(trained[n], whole[n])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_nonnegative_scores_shaped_like_the_parameters(method: str) -> None:
    model = TinyMLP()
    result = importance(model, vectors(5), _labels(5), method=method)
    for n, p in model.named_parameters():
        assert result.scores[n].shape == p.shape and bool((result.scores[n] >= 0).all())
    assert result.method == method


@pytest.mark.parametrize("bad, error", [
    (dict(method="ewc"), InputError),
    (dict(method="mas", variant="exact"), InputError),
    (dict(method="fisher", variant="true"), InputError),
    (dict(method="fisher", variant="exact", loss=F.mse_loss), InputError),
    (dict(method="fisher", batch_size=0), InputError),
])
def test_bad_options_are_refused(bad: dict, error: type) -> None:
    with pytest.raises(error):
        importance(TinyMLP(), vectors(4), _labels(4), **bad)


@pytest.mark.parametrize("targets, error, fragment", [
    (torch.tensor([0, 1]), InputError, "one row per example"),
    (torch.tensor([0, 1, 2, 3]), InputError, "0..2"),
    (torch.tensor([0.0, 1.0, 2.0, 0.0]), InputError, "class indices"),
    (None, InputError, "needs targets"),
    ("abc", InputTypeError, "tensor or array"),
])
def test_bad_targets_are_refused_in_one_line(targets, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        importance(TinyMLP(), vectors(4), targets, method="fisher")


def test_reductions_top_and_safetensors_round_trip(tmp_path) -> None:
    result = Importance({"fc1.weight": torch.tensor([[1.0, 2.0], [0.0, 4.0]]), "fc1.bias": torch.tensor([3.0, 0.5]),
                         "fc2.weight": torch.tensor([[0.25, 0.25]])}, "magnitude")
    assert [v.tolist() for v in result.per_unit().values()] == [[3.0, 4.0], [3.0, 0.5], [0.5]]
    assert result.per_layer() == {"fc1": 10.5, "fc2": 0.5}
    top = result.top(3 / 8)
    assert top["fc1.weight"].tolist() == [[False, True], [False, True]] and top["fc1.bias"].tolist() == [True, False]
    assert int(sum(t.sum() for t in top.values())) == 3
    result.save(tmp_path / "fisher.safetensors")
    back = Importance.load(tmp_path / "fisher.safetensors")
    assert back.method == "magnitude" and all(torch.equal(back.scores[n], s) for n, s in result.scores.items())
    assert set(FISHER_VARIANTS) == {"empirical", "exact", "sampled", "batched"}
