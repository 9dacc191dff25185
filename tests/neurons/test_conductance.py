"""Conductance and guided backpropagation against Captum, closed forms and completeness.

Oracles: Captum's ``LayerConductance`` (every quadrature rule, with and without a baseline),
``NeuronConductance`` summed over input features (the unit's conductance decomposed by input),
``GuidedBackprop``; a linear network (conductance exact, complete); a model with an explicit
orthonormal change of basis, where the conductance of a direction is Captum's conductance of one
coordinate of the rotated layer.
"""

from __future__ import annotations

import pytest
import torch
from captum.attr import GuidedBackprop, LayerConductance, NeuronConductance
from hygiene import assert_unchanged, snapshot
from models import TinyCNN, TinyMLP, TinyTransformer, images, seeded, tokens, vectors
from torch import Tensor, nn

from seethrough import Site, capture
from seethrough.bench.zoo import DigitsCNN, DigitsMLP
from seethrough.core import InputError
from seethrough.neurons.conductance import conductance
from seethrough.neurons.guided import guided_backprop

RULES = ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]


def smooth_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 6), nn.Softplus(), nn.Linear(6, 3))


@pytest.mark.parametrize("method", RULES)
@pytest.mark.parametrize("make, data, path", [(TinyMLP, vectors, "fc1"), (TinyCNN, images, "conv")], ids=["mlp", "cnn"])
def test_agrees_with_captum_layer_conductance(make: object, data: object, path: str, method: str) -> None:
    model, x = make(), data(4)  # type: ignore[operator]
    target = torch.tensor([0, 1, 2, 1])
    baseline = 0.2 * torch.randn((1, *x.shape[1:]), generator=seeded(3))
    for base in (None, baseline):
        got = conductance(model, x, target, site=path, baseline=base, method=method, n_steps=16)
        values, delta = LayerConductance(model, model.get_submodule(path)).attribute(
            x, baselines=base, target=target, method=method, n_steps=16, return_convergence_delta=True)
        torch.testing.assert_close(got.values, values.detach(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got.delta, delta.detach().to(got.delta.dtype), rtol=1e-4, atol=1e-5)


def test_units_are_the_layers_columns_and_neuron_conductance_sums_to_them() -> None:
    model, x = smooth_mlp(), vectors(5)
    layer = conductance(model, x, 2, site="2")
    units = conductance(model, x, 2, site=Site("2", units=[1, 4]))
    torch.testing.assert_close(units.values, layer.values[:, [1, 4]], rtol=1e-5, atol=1e-7)
    # NeuronConductance integrates the exact chain rule; ours sums finite differences: both converge to
    # the same integral, here within 1% at 200 steps
    fine = conductance(model, x, 2, site="2", n_steps=200)
    for unit in (1, 4):
        by_input = NeuronConductance(model, model[2]).attribute(x, neuron_selector=unit, target=2, n_steps=200)
        torch.testing.assert_close(by_input.detach().sum(1), fine.values[:, unit], rtol=1e-2, atol=1e-4)


def test_linear_network_is_exact_and_complete() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 3))
    x, base = torch.randn(3, 5), torch.randn(3, 5)
    got = conductance(model, x, 0, site="0", baseline=base, n_steps=3)
    # y is linear in α and ∂F/∂y = W2[0]: the trapezoid nodes span [0, 1], so conductance = W2[0] (y(x) - y(base))
    expected = model[1].weight.detach()[0] * (model[0](x) - model[0](base)).detach()
    torch.testing.assert_close(got.values, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.delta, torch.zeros(3), rtol=0, atol=1e-5)
    # Gauss-Legendre nodes stop short of 0 and 1: the sum covers y(α_n) - y(α_0) only (the documented caveat)
    gauss = conductance(model, x, 0, site="0", baseline=base, n_steps=3, method="gausslegendre")
    lo, hi = (float(0.5 * (v + 1)) for v in __import__("numpy").polynomial.legendre.leggauss(4)[0][[0, -1]])
    torch.testing.assert_close(gauss.values, (hi - lo) * expected, rtol=1e-5, atol=1e-6)


def test_completeness_improves_with_steps_on_a_relu_net() -> None:
    model, x = TinyMLP(seed=2), 3 * vectors(8, seed=2)
    errors = [conductance(model, x, 1, site="fc1", n_steps=n, method="riemann_trapezoid").delta.abs().max().item()
              for n in (4, 64)]
    assert errors[1] < errors[0] / 4, errors


class Rotated(nn.Module):
    """``smooth_mlp`` with an orthonormal change of basis after layer ``2``: ``z = Qᵀ y``, then ``y = Q z``."""

    def __init__(self, base: nn.Sequential, q: Tensor) -> None:
        super().__init__()
        self.base = base
        self.rotate = nn.Linear(6, 6, bias=False)
        self.back = nn.Linear(6, 6, bias=False)
        with torch.no_grad():
            self.rotate.weight.copy_(q.T)
            self.back.weight.copy_(q)

    def forward(self, x: Tensor) -> Tensor:
        b = self.base
        return b[4](b[3](self.back(self.rotate(b[2](b[1](b[0](x)))))))


def test_direction_is_one_coordinate_of_a_rotated_layer() -> None:
    model, x = smooth_mlp(), vectors(5)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=seeded(4)))
    rotated = Rotated(model, q)
    theirs = LayerConductance(rotated, rotated.rotate).attribute(x, target=1, method="riemann_trapezoid")[:, 0].detach()
    got = conductance(model, x, 1, site="2", direction=2.5 * q[:, 0])  # normalised: the scale does not matter
    assert got.values.shape == (5,)
    torch.testing.assert_close(got.values, theirs, rtol=1e-4, atol=1e-6)
    # the conductances of a full orthonormal basis add up to the layer's total
    total = sum(conductance(model, x, 1, site="2", direction=q[:, j]).values for j in range(6))
    torch.testing.assert_close(total, conductance(model, x, 1, site="2").values.sum(1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("size", [1, 7, 13, 10_000])
def test_chunking_equals_one_pass(size: int) -> None:
    model, x = TinyCNN(), images(3)
    whole = conductance(model, x, 2, site="conv", n_steps=10)
    parts = conductance(model, x, 2, site="conv", n_steps=10, internal_batch_size=size)
    torch.testing.assert_close(parts.values, whole.values, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(parts.delta, whole.delta, rtol=1e-5, atol=1e-6)


def test_bad_arguments() -> None:
    model = TinyMLP()
    count: list[int] = []
    model.register_forward_pre_hook(lambda *a: count.append(1))
    with pytest.raises(InputError, match="n_steps"):
        conductance(model, vectors(), 1, site="fc1", n_steps=0)
    with pytest.raises(InputError, match="does not broadcast"):
        conductance(model, vectors(), 1, site="fc1", baseline=torch.zeros(3))
    with pytest.raises(TypeError, match="inputs"):  # InputTypeError, or beartype's check under pytest
        conductance(model, tokens(), 1, site="fc1")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="close matches"):
        conductance(model, vectors(), 1, site="fc9")
    assert count == []
    with pytest.raises(InputError, match="entries"):
        conductance(model, vectors(), 1, site="fc1", direction=torch.ones(3))


def _from_embeddings(model: TinyTransformer):  # type: ignore[no-untyped-def]
    """TinyTransformer from its embeddings on, written by hand: Captum's forward for token models."""

    def forward(embeddings: Tensor, attention_mask: Tensor) -> Tensor:
        x = embeddings
        for block in model.blocks:
            x = block(x, mask=attention_mask)
        return model.unembed(x)[:, -1]

    return forward


@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslegendre"])
def test_token_model_path_through_the_embeddings_agrees_with_captum(method: str) -> None:
    """Issue #10: conductance takes dict inputs with path_site (the path runs through the embeddings)."""
    model, inputs = TinyTransformer().eval(), tokens(3, 5)
    inputs["attention_mask"][2, 3:] = 0
    embeddings = capture(model, inputs, ["embed"])["embed"]
    baseline = 0.3 * torch.randn(1, 5, 8, generator=seeded(4))
    before = snapshot(model)
    for path in ("blocks.0", Site("blocks.1.mlp", units=[0, 3])):
        for base in (None, baseline):
            got = conductance(model, inputs, None, site=path, path_site="embed", baseline=base, n_steps=8,
                              method=method, metric=lambda out: out[:, -1, 3])
            layer = model.get_submodule(path if isinstance(path, str) else path.path)
            values, delta = LayerConductance(_from_embeddings(model), layer).attribute(
                embeddings, baselines=base, target=3, additional_forward_args=(inputs["attention_mask"],),
                n_steps=8, method=method, return_convergence_delta=True)
            values = values if isinstance(path, str) else values[..., [0, 3]]
            torch.testing.assert_close(got.values, values.detach(), rtol=1e-4, atol=1e-6)
            if isinstance(path, str):  # Captum's delta is over the whole layer
                torch.testing.assert_close(got.delta, delta.detach(), rtol=1e-4, atol=1e-5)
    assert_unchanged(before, snapshot(model), "conductance through the embeddings")


def test_path_site_is_the_site_itself_or_refused() -> None:
    model, inputs = TinyTransformer().eval(), tokens(2, 4)
    # at the path's own site, conductance is a left Riemann sum of integrated gradients' integrand: it
    # tends to integrated gradients there (the same path) as the steps grow
    from seethrough.neurons import integrated_gradients

    own = conductance(model, inputs, None, site="embed", path_site="embed", n_steps=400, metric=lambda o: o[:, -1, 3])
    ig = integrated_gradients(model, inputs, None, site="embed", n_steps=64, metric=lambda o: o[:, -1, 3])
    assert float((own.values - ig.values).abs().max()) < 0.05 * float(ig.values.abs().max())
    with pytest.raises(InputError, match="selects part of the path's own site"):
        conductance(model, inputs, None, site=Site("embed", units=[0]), path_site="embed",
                    metric=lambda o: o[:, -1, 3])
    with pytest.raises(InputError, match="path_site .* selects"):
        conductance(model, inputs, None, site="blocks.0", path_site=Site("embed", units=[0]),
                    metric=lambda o: o[:, -1, 3])
    with pytest.raises(KeyError, match="close matches"):
        conductance(model, inputs, None, site="blocks.0", path_site="embedd", metric=lambda o: o[:, -1, 3])


def test_guided_backprop_agrees_with_captum() -> None:
    for model, x in ((DigitsMLP(seed=0), torch.rand(4, 1, 16, 16, generator=seeded(1))),
                     (DigitsCNN(seed=1), torch.rand(4, 1, 16, 16, generator=seeded(2))), (TinyCNN(), images(3))):
        model.eval()
        target = torch.arange(len(x)) % 3
        theirs = GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=target).detach()
        torch.testing.assert_close(guided_backprop(model, x, target).values, theirs, rtol=1e-5, atol=1e-8)
    with pytest.raises(InputError, match="no nn.ReLU"):
        guided_backprop(smooth_mlp(), vectors(), 0)


class _ReusedReLU(nn.Module):
    """One ReLU module called twice (ResNet style) and one declared but never called."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)
        self.relu, self.unused = nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.relu(self.a(self.relu(x))))


def test_guided_backprop_guides_every_call_of_a_reused_relu() -> None:
    model, x = _ReusedReLU().eval(), torch.randn(5, 4, generator=seeded(3))
    target = torch.arange(5) % 3
    theirs = GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=target).detach()
    torch.testing.assert_close(guided_backprop(model, x, target).values, theirs, rtol=1e-5, atol=1e-8)


def test_leave_no_trace() -> None:
    model, x = TinyMLP().train(), vectors()
    before = snapshot(model)
    conductance(model, x, 1, site="fc1", n_steps=4)
    guided_backprop(model, x, 1)
    assert_unchanged(before, snapshot(model), "conductance / guided_backprop")
