"""Gradient attribution (integrated gradients, saliency, gradient × input) against independent oracles.

Oracles: closed forms (linear and polynomial models, which Gauss–Legendre integrates exactly), the
completeness axiom, Captum (``IntegratedGradients``, ``LayerIntegratedGradients``, ``Saliency``,
``InputXGradient``) on the input and on the rest of the network after a site, and a slow reference
that runs one forward/backward per step. Hygiene: no ``.grad``, hooks or mode changes, on success
and on failure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, LayerIntegratedGradients, Saliency
from hygiene import assert_unchanged, snapshot
from hypothesis import given, settings
from hypothesis import strategies as s
from models import InplaceReLU, TinyCNN, TinyMLP, TinyTransformer, images, seeded, tokens, vectors
from torch import Tensor, nn

import seethrough as st
from seethrough import Site
from seethrough.core import ForwardError, InputError, InputTypeError, SiteNotFoundError
from seethrough.neurons import (
    AttributionResult,
    gradient_x_input,
    guided_backprop,
    integrated_gradients,
    saliency,
)

CAPTUM_METHODS = ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]


def captum_ig(forward: Any, x: Tensor, target: Tensor | int | None, *, method: str = "gausslegendre",
              n_steps: int = 50, baseline: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Captum's values and delta, with its trapezoid rule rescaled to weights that sum to 1.

    Captum weights the trapezoid nodes ``linspace(0, 1, n)`` by ``1/n`` (ends halved), which sums to
    ``(n - 1)/n``; the textbook rule (ours) uses ``1/(n - 1)``: the same nodes, so the values differ
    by exactly that factor, and the delta is recomputed from the rescaled values.
    """
    ig = IntegratedGradients(forward)
    values, delta = ig.attribute(x, baselines=baseline, target=target, method=method, n_steps=n_steps,
                                 return_convergence_delta=True)
    if method == "riemann_trapezoid":
        values = values * n_steps / (n_steps - 1)
        base = torch.zeros_like(x) if baseline is None else baseline.expand_as(x)
        delta = ig.compute_convergence_delta(values, base, x, target=target)
    return values.detach(), delta.detach()


def slow_ig(score: Any, x: Tensor, baseline: Tensor, n_steps: int) -> Tensor:
    """The slow reference: one forward and one backward per Gauss–Legendre node."""
    nodes_np, weights_np = np.polynomial.legendre.leggauss(n_steps)
    nodes, weights = (nodes_np + 1) / 2, weights_np / 2
    total = torch.zeros_like(x)
    for alpha, weight in zip(nodes.tolist(), weights.tolist(), strict=True):
        point = (baseline + alpha * (x - baseline)).detach().requires_grad_()
        (grad,) = torch.autograd.grad(score(point).sum(), point)
        total += weight * grad
    return total * (x - baseline)


def _leaf(x: Tensor) -> Tensor:
    """A copy that requires grad (Captum's gradient methods warn about, and set, the flag otherwise)."""
    return x.detach().clone().requires_grad_()


def smooth_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 8), nn.Softplus(), nn.Linear(8, 3))


class Power(nn.Module):
    """``f(x) = Σ_i x_i^p`` per example: a (batch,) output with a closed-form IG ``x^p - baseline^p``."""

    def __init__(self, p: int) -> None:
        super().__init__()
        self.p = p
        self.scale = nn.Linear(1, 1)  # a parameter, so that "no .grad" is tested too

    def forward(self, x: Tensor) -> Tensor:
        return (x ** self.p).flatten(1).sum(1) + 0 * self.scale.weight.sum()


# -- closed forms and axioms -------------------------------------------------------------------


@pytest.mark.parametrize("method", CAPTUM_METHODS)
@pytest.mark.parametrize("n_steps", [2, 3, 50])
def test_linear_model_gets_weight_times_difference_for_any_rule(method: str, n_steps: int) -> None:
    model = nn.Linear(5, 3)
    x, baseline = torch.randn(6, 5, generator=seeded(1)), torch.randn(6, 5, generator=seeded(2))
    target = torch.tensor([0, 1, 2, 2, 1, 0])
    got = integrated_gradients(model, x, target, baseline=baseline, n_steps=n_steps, method=method)
    expected = model.weight.detach()[target] * (x - baseline)
    torch.testing.assert_close(got.values, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.delta, torch.zeros(6), rtol=0, atol=1e-5)


@pytest.mark.parametrize("n_steps", [1, 2, 5])
def test_gauss_legendre_is_exact_for_a_quadratic_and_a_cubic(n_steps: int) -> None:
    # IG_i = x_i^p - b_i^p; the integrand has degree p - 1 and n Gauss-Legendre nodes are exact to 2n - 1.
    x, baseline = torch.randn(4, 3, generator=seeded(3)), torch.randn(4, 3, generator=seeded(4))
    for p in (2, 3):
        got = integrated_gradients(Power(p), x, None, baseline=baseline, n_steps=n_steps)
        if 2 * n_steps - 1 >= p - 1:
            torch.testing.assert_close(got.values, x**p - baseline**p, rtol=1e-5, atol=1e-5)
    with pytest.raises(AssertionError):  # one node is not exact for the cubic: the oracle can fail
        torch.testing.assert_close(integrated_gradients(Power(3), x, None, baseline=baseline, n_steps=1).values,
                                   x**3 - baseline**3)


def test_completeness_on_a_smooth_model() -> None:
    model, x = smooth_mlp(), vectors(8)
    baseline = torch.randn(4, generator=seeded(5))
    got = integrated_gradients(model, x, 2, baseline=baseline)
    with torch.no_grad():
        gap = model(x)[:, 2] - model(baseline.expand_as(x))[:, 2]
    torch.testing.assert_close(got.values.sum(1), gap, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(got.delta, got.values.sum(1) - gap, rtol=0, atol=1e-5)
    assert got.delta.abs().max() <= 1e-3 * gap.abs().max()


@pytest.mark.parametrize("method", ["riemann_middle", "riemann_trapezoid", "riemann_right"])
def test_riemann_completeness_improves_with_steps_on_a_relu_net(method: str) -> None:
    model, x = TinyMLP(seed=1), vectors(16, seed=1) * 3
    errors = [integrated_gradients(model, x, 1, n_steps=n, method=method).delta.abs().max().item()
              for n in (4, 32, 256)]
    assert errors[2] < errors[1] < errors[0], errors
    assert errors[2] < errors[0] / 20, errors  # O(1/n) at the ReLU kinks: 64x the steps


# -- Captum, on inputs and at sites ------------------------------------------------------------


@pytest.mark.parametrize("method", CAPTUM_METHODS)
@pytest.mark.parametrize("make, data", [(TinyMLP, vectors), (TinyCNN, images)], ids=["mlp", "cnn"])
def test_agrees_with_captum_on_inputs(make: Any, data: Any, method: str) -> None:
    model, x = make(), data(5)
    target = torch.tensor([0, 2, 1, 1, 0])
    baseline = 0.1 * torch.randn((1, *x.shape[1:]), generator=seeded(7))  # Captum needs the batch dim
    for base in (None, baseline):
        got = integrated_gradients(model, x, target, baseline=base, method=method, n_steps=20)
        values, delta = captum_ig(model, x, target, method=method, n_steps=20, baseline=base)
        torch.testing.assert_close(got.values, values, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got.delta, delta.to(got.delta.dtype), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make, data, path", [(TinyMLP, vectors, "fc1"), (TinyCNN, images, "conv")],
                         ids=["mlp", "cnn"])
def test_layer_ig_agrees_with_captum_layer_ig(make: Any, data: Any, path: str) -> None:
    # Captum's LayerIntegratedGradients starts the path at the layer's value on a baseline *input*;
    # give ours that same value as the site baseline.
    model, x = make(), data(4)
    base_input = 0.3 * torch.randn(x.shape, generator=seeded(8))
    layer_baseline = st.capture(model, base_input, [path])[path].detach()
    got = integrated_gradients(model, x, 1, site=path, baseline=layer_baseline)
    lig = LayerIntegratedGradients(model, model.get_submodule(path))
    values, delta = lig.attribute(x, baselines=base_input, target=1, return_convergence_delta=True)
    torch.testing.assert_close(got.values, values.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got.delta, delta.detach().float(), rtol=1e-4, atol=1e-5)


def test_layer_ig_with_zero_baseline_is_captum_ig_on_the_rest_of_the_network() -> None:
    model, x = TinyMLP(), vectors(6)
    hidden = model.fc1(x).detach()
    got = integrated_gradients(model, x, torch.tensor([0, 1, 2, 0, 1, 2]), site="fc1")
    values, delta = captum_ig(model.forward_from_hidden, hidden, torch.tensor([0, 1, 2, 0, 1, 2]))
    torch.testing.assert_close(got.values, values, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got.delta, delta.float(), rtol=1e-4, atol=1e-5)

    cnn, im = TinyCNN(), images(3)
    conv = cnn.conv(im).detach()
    got = integrated_gradients(cnn, im, 2, site=Site("conv"))
    values, _ = captum_ig(lambda h: cnn.head(torch.relu(h).mean(dim=(2, 3))), conv, 2)
    torch.testing.assert_close(got.values, values, rtol=1e-4, atol=1e-6)


def test_unit_site_attributes_to_the_selected_units_only() -> None:
    model, x = TinyMLP(), vectors(5)
    hidden = model.fc1(x).detach()
    units = [1, 5]

    def rest(u: Tensor) -> Tensor:  # Captum calls it on n_steps stacked copies of the batch
        return model.forward_from_hidden(hidden.repeat(len(u) // len(hidden), 1).index_copy(1, torch.tensor(units), u))

    got = integrated_gradients(model, x, 0, site=Site("fc1", units=units))
    assert got.values.shape == (5, 2)
    torch.testing.assert_close(got.values, captum_ig(rest, hidden[:, units], 0)[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("absolute", [True, False])
def test_saliency_and_gradient_x_input_agree_with_captum(absolute: bool) -> None:
    for model, x in ((TinyMLP(), vectors(5)), (TinyCNN(), images(3))):
        target = torch.arange(len(x)) % 3
        torch.testing.assert_close(saliency(model, x, target, absolute=absolute).values,
                                   Saliency(model).attribute(_leaf(x), target=target, abs=absolute), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(gradient_x_input(model, x, target).values,
                                   InputXGradient(model).attribute(_leaf(x), target=target).detach(), rtol=1e-5, atol=1e-7)
    model, x = TinyMLP(), vectors(4)
    hidden = model.fc1(x).detach()
    sal = saliency(model, x, 1, site="fc1", absolute=absolute)
    torch.testing.assert_close(sal.values, Saliency(model.forward_from_hidden).attribute(_leaf(hidden), target=1,
                                                                                         abs=absolute))
    assert sal.delta is None
    torch.testing.assert_close(gradient_x_input(model, x, 1, site="fc1").values,
                               InputXGradient(model.forward_from_hidden).attribute(_leaf(hidden), target=1).detach())


# -- slow references, chunking, batching, determinism --------------------------------------------


def test_batched_equals_one_step_per_forward() -> None:
    model, x = smooth_mlp(1), vectors(5)
    baseline = torch.randn(5, 4, generator=seeded(9))
    target = torch.tensor([2, 0, 1, 1, 2])
    got = integrated_gradients(model, x, target, baseline=baseline, n_steps=16)
    expected = slow_ig(lambda p: model(p).gather(1, target[:, None]), x, baseline, 16)
    torch.testing.assert_close(got.values, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("internal_batch_size", [1, 5, 13, 40, 10_000])
def test_chunking_over_steps_equals_one_pass(internal_batch_size: int) -> None:
    model, x = TinyCNN(), images(5)
    whole = integrated_gradients(model, x, 1, n_steps=9)
    parts = integrated_gradients(model, x, 1, n_steps=9, internal_batch_size=internal_batch_size)
    torch.testing.assert_close(parts.values, whole.values, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts.delta, whole.delta, rtol=1e-5, atol=1e-6)
    tr, t = TinyTransformer(), tokens()
    kwargs: dict[str, Any] = {"site": "blocks.0", "metric": lambda out: out[:, -1, 3], "n_steps": 7}
    torch.testing.assert_close(integrated_gradients(tr, t, None, internal_batch_size=internal_batch_size,
                                                    **kwargs).values,
                               integrated_gradients(tr, t, None, **kwargs).values, rtol=1e-5, atol=1e-6)


def test_batch_of_n_equals_n_batches_of_one_and_same_seed_same_result() -> None:
    model, x = TinyCNN(), images(4)
    target = torch.tensor([0, 1, 2, 1])
    whole = integrated_gradients(model, x, target, site="conv")
    for i in range(4):
        one = integrated_gradients(model, x[i:i + 1], target[i:i + 1], site="conv")
        torch.testing.assert_close(one.values, whole.values[i:i + 1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(one.delta, whole.delta[i:i + 1], rtol=1e-5, atol=1e-6)
    again = integrated_gradients(model, x, target, site="conv")
    assert torch.equal(again.values, whole.values) and torch.equal(again.delta, whole.delta)


def test_int_target_zero_dim_tensor_and_tensor_target_agree() -> None:
    model, x = TinyMLP(), vectors(5)
    by_int = integrated_gradients(model, x, 2)
    assert torch.equal(by_int.values, integrated_gradients(model, x, torch.tensor(2)).values)
    assert torch.equal(by_int.values, integrated_gradients(model, x, torch.full((5,), 2)).values)
    assert torch.equal(saliency(model, x, 2).values, saliency(model, x, torch.full((5,), 2)).values)


@settings(max_examples=25, deadline=None)
@given(batch=s.integers(1, 4), d=s.integers(1, 6), classes=s.integers(1, 4), n_steps=s.integers(1, 8),
       seed=s.integers(0, 2**16))
def test_linear_closed_form_for_any_shape(batch: int, d: int, classes: int, n_steps: int, seed: int) -> None:
    torch.manual_seed(seed)
    model = nn.Linear(d, classes)
    x, baseline = torch.randn(batch, d), torch.randn(d)
    target = torch.randint(0, classes, (batch,))
    got = integrated_gradients(model, x, target, baseline=baseline, n_steps=n_steps)
    torch.testing.assert_close(got.values, model.weight.detach()[target] * (x - baseline), rtol=1e-4, atol=1e-5)


# -- sites with dict inputs ------------------------------------------------------------------------


def test_layer_ig_on_a_transformer_with_keyword_inputs() -> None:
    model, t = TinyTransformer(), tokens(batch=3, seq=5)
    mask = t["attention_mask"]

    def rest(h: Tensor) -> Tensor:  # the network after blocks.0, written by hand (on stacked copies too)
        return model.unembed(model.blocks[1](h, mask=mask.repeat(len(h) // len(mask), 1)))[:, -1, 3]

    hidden = st.capture(model, t, ["blocks.0"])["blocks.0"].detach()
    got = integrated_gradients(model, t, None, site="blocks.0", metric=lambda out: out[:, -1, 3])
    assert got.values.shape == (3, 5, 8) and got.delta.shape == (3,)
    values, delta = captum_ig(rest, hidden, None)
    torch.testing.assert_close(got.values, values, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got.delta, delta.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.values, slow_ig(rest, hidden, torch.zeros_like(hidden), 50), rtol=1e-4,
                               atol=1e-6)
    # a position selection attributes to that position only
    last = integrated_gradients(model, t, None, site=Site("blocks.0", positions=[-1]),
                                metric=lambda out: out[:, -1, 3])
    assert last.values.shape == (3, 1, 8)


def test_inplace_op_after_the_site_is_fine() -> None:
    model, x = InplaceReLU(), vectors(4)
    hidden = model.fc(x).detach()
    got = integrated_gradients(model, x, 1, site="fc")
    torch.testing.assert_close(got.values, captum_ig(lambda h: torch.relu(h), hidden, 1)[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(saliency(model, x, 1, site="fc", absolute=False).values,
                               Saliency(lambda h: torch.relu(h)).attribute(_leaf(hidden), target=1, abs=False))


# -- hygiene ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("site", [None, "fc1"])
@pytest.mark.parametrize("train", [False, True])
def test_leaves_no_trace(site: str | None, train: bool) -> None:
    model, x = TinyMLP().train(train), vectors()
    model.fc2.bias.requires_grad_(False)
    before = snapshot(model)
    for fn in (integrated_gradients, saliency, gradient_x_input):
        fn(model, x, 1, site=site)
        assert_unchanged(before, snapshot(model), fn.__name__)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("site", [None, "fc1"])
def test_a_forward_that_raises_leaves_no_trace(site: str | None) -> None:
    model, x = TinyMLP(), vectors()
    calls: list[int] = []

    def boom(*args: Any) -> None:
        calls.append(1)
        if len(calls) >= 2:  # the endpoint pass succeeds, the gradient pass fails mid-forward
            raise RuntimeError("injected failure inside the forward pass")

    handle = model.fc2.register_forward_hook(boom)
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="injected failure"):
        integrated_gradients(model, x, 1, site=site)
    assert_unchanged(before, snapshot(model), "integrated_gradients after a failing forward")
    handle.remove()


def test_a_failing_metric_propagates_unchanged() -> None:
    model, x = TinyMLP(), vectors()
    before = snapshot(model)

    def metric(out: Tensor) -> Tensor:
        raise KeyError("injected metric failure")

    with pytest.raises(KeyError, match="injected metric failure"):
        integrated_gradients(model, x, None, site="fc1", metric=metric)
    assert_unchanged(before, snapshot(model), "failing metric")


def test_works_under_no_grad_and_inference_mode() -> None:
    model, x = TinyMLP(), vectors()
    expected = integrated_gradients(model, x, 1, site="fc1").values
    with torch.no_grad():
        torch.testing.assert_close(integrated_gradients(model, x, 1, site="fc1").values, expected)
    with torch.inference_mode():
        x_inf = vectors()
        got = integrated_gradients(model, x_inf, 1, site="fc1").values
        got_input = integrated_gradients(model, x_inf, 1).values
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_input, integrated_gradients(model, x, 1).values)


# -- bad arguments ---------------------------------------------------------------------------------


def _counted(model: nn.Module) -> list[int]:
    count: list[int] = []
    model.register_forward_pre_hook(lambda *a: count.append(1))
    return count


@pytest.mark.parametrize("kwargs, error, message", [
    ({"n_steps": 0}, InputError, "n_steps must be at least 1"),
    ({"n_steps": 1, "method": "riemann_trapezoid"}, InputError, "at least 2"),
    ({"method": "simpson"}, InputError, "method must be one of"),
    ({"internal_batch_size": 0}, InputError, "internal_batch_size"),
    ({"target": -1}, InputError, "negative"),
    ({"target": torch.tensor([0, 1])}, InputError, "one class per example"),
    ({"target": torch.tensor([0.0, 1, 2, 0, 1])}, TypeError, "int64"),
    ({"x": vectors() * float("nan")}, InputError, "NaN/inf"),
    ({"baseline": torch.full((4,), float("inf"))}, InputError, "NaN/inf"),
    ({"baseline": torch.zeros(3)}, InputError, "does not broadcast"),
    ({"baseline": torch.zeros(4, dtype=torch.float64)}, InputError, "float64"),
    ({"site": "fc9"}, SiteNotFoundError, "close matches"),
    ({"metric": lambda out: out[:, 0]}, InputError, "either target"),
    ({"x": {"x": vectors()}}, InputTypeError, "dict of keyword arguments"),
    ({"x": torch.zeros(5, 4, dtype=torch.long)}, InputError, "no gradient"),
])
def test_bad_arguments_fail_before_any_forward(kwargs: dict[str, Any], error: type, message: str) -> None:
    model = TinyMLP()
    count = _counted(model)
    args = {"x": vectors(), "target": 1} | kwargs
    x, target = args.pop("x"), args.pop("target")
    with pytest.raises(error, match=message):
        integrated_gradients(model, x, target, **args)
    assert count == []


#: Other models, built once here: building one draws on the global RNG, which the snapshot in the
#: test checks the *call* leaves alone.
_POWER, _TRANSFORMER = Power(2), TinyTransformer()


@pytest.mark.parametrize("call, message", [
    (lambda m, x: integrated_gradients(m, x, 3), r"class 3 but the model has 3 outputs"),
    (lambda m, x: integrated_gradients(m, x, None), "pass target"),
    (lambda m, x: integrated_gradients(m, x, None, metric=lambda out: out), r"one score per row, shape \(10,\)"),
    (lambda m, x: integrated_gradients(_POWER, x, 0), "pass target=None"),
    (lambda m, x: saliency(_TRANSFORMER, tokens(), 0, site="blocks.0"), "metric"),
    (lambda m, x: saliency(_TRANSFORMER, tokens(), 0, site="embed", metric=None), "metric"),
    (lambda m, x: saliency(_TRANSFORMER, tokens(), None, site=Site("embed", point="input"),
                           metric=lambda out: out[:, 0, 0]), "no gradient"),
])
def test_errors_that_need_the_output(call: Any, message: str) -> None:
    model, x = TinyMLP(), vectors()
    before = snapshot(model)
    with pytest.raises(InputError, match=message):
        call(model, x)
    assert_unchanged(before, snapshot(model), "error after a forward")


# -- the result object -------------------------------------------------------------------------------


def test_result_frame_plot_and_html() -> None:
    from matplotlib.figure import Figure

    res = integrated_gradients(TinyCNN(), images(2), 1, n_steps=4)
    assert isinstance(res, AttributionResult) and res.site is None
    frame = res.to_frame()
    assert list(frame.columns) == ["example", "feature", "attribution", "delta"] and len(frame) == 2 * 36
    torch.testing.assert_close(torch.tensor(frame.groupby("example")["attribution"].sum().to_numpy()),
                               res.values.flatten(1).sum(1).double())
    for result in (res, saliency(TinyMLP(), vectors(3), 0), integrated_gradients(Power(2), vectors(3), None),
                   integrated_gradients(TinyTransformer(), tokens(), None, site="blocks.0",
                                        metric=lambda out: out[:, 0, 0], n_steps=2)):
        assert isinstance(result.plot(), Figure)
    assert frame["delta"].notna().all() and saliency(TinyMLP(), vectors(3), 0).to_frame()["delta"].isna().all()
    hostile = AttributionResult(res.values, res.delta, "<script>alert(1)</script>")
    assert "<script>" not in hostile._repr_html_() and "&lt;script&gt;" in hostile._repr_html_()


# -- direction targets ---------------------------------------------------------------------------


def test_direction_target_is_attribution_to_the_coordinate_along_it() -> None:
    # Oracle: the rest of the network as a function of the coordinate c = <h, u>, with h - c u held
    # fixed, written by hand; Captum's IG/Saliency/InputXGradient on c (shape (batch, 1)).
    model, x = TinyMLP(), vectors(6)
    hidden = model.fc1(x).detach()
    u = torch.randn(8, generator=seeded(11))
    u = u / u.norm()
    c = (hidden @ u)[:, None]

    def rest(z: Tensor) -> Tensor:  # Captum calls it on stacked copies of the batch
        k = len(z) // len(hidden)
        return model.forward_from_hidden(hidden.repeat(k, 1) + (z - c.repeat(k, 1)) * u)

    target = torch.tensor([0, 1, 2, 0, 1, 2])
    values, delta = captum_ig(rest, c, target)
    got = integrated_gradients(model, x, target, site="fc1", direction=u)
    torch.testing.assert_close(got.values, values[:, 0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got.delta, delta.float(), rtol=1e-4, atol=1e-5)
    # normalised, and the sign cancels: along -u the coordinate is -c and its gradient -dF/dc
    torch.testing.assert_close(integrated_gradients(model, x, target, site="fc1", direction=-4 * u).values,
                               got.values, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(saliency(model, x, target, site="fc1", direction=u, absolute=False).values,
                               Saliency(rest).attribute(_leaf(c), target=target, abs=False)[:, 0])
    torch.testing.assert_close(gradient_x_input(model, x, target, site="fc1", direction=u).values,
                               InputXGradient(rest).attribute(_leaf(c), target=target).detach()[:, 0])
    # a direction along a unit axis is that unit
    e3 = torch.zeros(8)
    e3[3] = 1.0
    torch.testing.assert_close(integrated_gradients(model, x, target, site="fc1", direction=e3).values,
                               integrated_gradients(model, x, target, site=Site("fc1", units=[3])).values[:, 0],
                               rtol=1e-5, atol=1e-7)


def test_direction_on_channels_and_on_sequence_models() -> None:
    cnn, im = TinyCNN(), images(3)
    u = torch.tensor([1.0, 0.0, 0.0, 0.0])
    along = integrated_gradients(cnn, im, 1, site="conv", direction=u)
    assert along.values.shape == (3, 6, 6)  # the channel axis is the unit axis
    torch.testing.assert_close(along.values, integrated_gradients(cnn, im, 1, site=Site("conv", units=[0])).values[:, 0],
                               rtol=1e-5, atol=1e-7)
    tr = TinyTransformer()
    got = saliency(tr, tokens(), None, site="blocks.0", direction=torch.ones(8), metric=lambda out: out[:, -1, 3])
    assert got.values.shape == (3, 5)
    with pytest.raises(InputError, match="one entry per unit"):
        saliency(tr, tokens(), None, site="blocks.0", direction=torch.ones(5), metric=lambda out: out[:, -1, 3])
    with pytest.raises(InputError, match="give site="):
        integrated_gradients(TinyMLP(), vectors(), 0, direction=torch.ones(4))


def test_guided_backprop_wraps_the_models_own_failure_as_forward_error() -> None:
    """Issue #10 item 7: guided backprop raised the model's own error instead of a ForwardError naming the inputs."""
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(ForwardError, match=r"Sequential's forward failed on inputs: float32 \(2, 5\)") as info:
        guided_backprop(model, torch.ones(2, 5), 0)
    assert isinstance(info.value.__cause__, RuntimeError)  # the model's own error is chained
