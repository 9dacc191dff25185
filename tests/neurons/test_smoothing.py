"""SmoothGrad and VarGrad against Captum's gradients at the same noisy points, closed forms and NoiseTunnel.

Oracles: Captum's ``Saliency`` evaluated one noise sample at a time at the very points ours uses
(the noise is reproduced from the documented seed rule), closed forms (a linear model's SmoothGrad is
its weight row and its VarGrad zero; for ``Σ x²`` the gradient is ``2(x + ε)``), and Captum's own
``NoiseTunnel`` in distribution (many samples, Monte-Carlo tolerance).
"""

from __future__ import annotations

import pytest
import torch
from captum.attr import NoiseTunnel, Saliency
from hygiene import assert_unchanged, snapshot
from models import TinyCNN, TinyMLP, images, seeded, vectors
from torch import Tensor, nn

from seethrough.core import InputError
from seethrough.neurons.smoothing import smoothgrad, vargrad


def noise_like(x: Tensor, n_samples: int, stdev: float, seed: int) -> Tensor:
    """The documented noise: ``stdev * randn((n_samples, *x.shape), generator=Generator().manual_seed(seed))``."""
    return stdev * torch.randn((n_samples, *x.shape), generator=torch.Generator().manual_seed(seed))


def captum_samples(forward: object, x: Tensor, target: object, noise: Tensor) -> Tensor:
    """Captum's signed gradient at each noisy copy, stacked ``(n_samples, *x.shape)``."""
    sal = Saliency(forward)
    return torch.stack([sal.attribute((x + e).detach().requires_grad_(), target=target, abs=False).detach()
                        for e in noise])


class Square(nn.Module):
    """``f(x) = Σ x²`` per example: gradient ``2x``."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Linear(1, 1)  # a parameter, so "no .grad" is tested too

    def forward(self, x: Tensor) -> Tensor:
        return (x**2).flatten(1).sum(1) + 0 * self.scale.weight.sum()


@pytest.mark.parametrize("make, data", [(TinyMLP, vectors), (TinyCNN, images)], ids=["mlp", "cnn"])
def test_agrees_with_captum_gradients_at_the_same_noisy_points(make: object, data: object) -> None:
    model, x = make(), data(4)  # type: ignore[operator]
    target = torch.tensor([0, 1, 2, 1])
    noise = noise_like(x, 9, 0.3, seed=5)
    grads = captum_samples(model, x, target, noise)
    got = smoothgrad(model, x, target, n_samples=9, stdev=0.3, seed=5)
    torch.testing.assert_close(got.values, grads.mean(0), rtol=1e-5, atol=1e-7)
    absolute = smoothgrad(model, x, target, n_samples=9, stdev=0.3, seed=5, absolute=True)
    torch.testing.assert_close(absolute.values, grads.abs().mean(0), rtol=1e-5, atol=1e-7)
    var = vargrad(model, x, target, n_samples=9, stdev=0.3, seed=5)
    torch.testing.assert_close(var.values, grads.var(0, unbiased=False), rtol=1e-4, atol=1e-8)
    assert got.delta is None and bool((var.values >= 0).all())


def test_at_a_site_and_along_a_direction() -> None:
    model, x = TinyMLP(), vectors(5)
    hidden = model.fc1(x).detach()
    noise = noise_like(hidden, 6, 0.5, seed=1)
    grads = captum_samples(model.forward_from_hidden, hidden, 2, noise)
    torch.testing.assert_close(smoothgrad(model, x, 2, site="fc1", n_samples=6, stdev=0.5, seed=1).values,
                               grads.mean(0), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(vargrad(model, x, 2, site="fc1", n_samples=6, stdev=0.5, seed=1).values,
                               grads.var(0, unbiased=False), rtol=1e-4, atol=1e-8)
    # along a direction u the attributed tensor is the coordinate c = <h, u>, noised as (batch,)
    u = torch.randn(8, generator=seeded(3))
    u = u / u.norm()
    c = hidden @ u
    eps = noise_like(c, 6, 0.5, seed=1)
    expected = torch.stack([
        Saliency(lambda z: model.forward_from_hidden(hidden + (z - c[:, None]) * u)).attribute(
            (c + e)[:, None].detach().requires_grad_(), target=2, abs=False).detach()[:, 0] for e in eps])
    got = smoothgrad(model, x, 2, site="fc1", n_samples=6, stdev=0.5, seed=1, direction=3 * u)
    torch.testing.assert_close(got.values, expected.mean(0), rtol=1e-5, atol=1e-7)


def test_closed_forms() -> None:
    linear = nn.Linear(5, 3)
    x = torch.randn(4, 5, generator=seeded(2))
    torch.testing.assert_close(smoothgrad(linear, x, 1).values, linear.weight.detach()[1].expand(4, 5))
    assert float(vargrad(linear, x, 1).values.abs().max()) < 1e-10
    eps = noise_like(x, 20, 0.2, seed=7)
    torch.testing.assert_close(smoothgrad(Square(), x, None, n_samples=20, stdev=0.2, seed=7).values,
                               2 * (x + eps.mean(0)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(vargrad(Square(), x, None, n_samples=20, stdev=0.2, seed=7).values,
                               4 * eps.var(0, unbiased=False), rtol=1e-4, atol=1e-6)


def test_matches_captum_noise_tunnel_in_distribution() -> None:
    # Captum draws its own noise from the global RNG: agreement up to Monte-Carlo error (n = 4000).
    model, x = Square(), torch.randn(2, 3, generator=seeded(4))
    torch.manual_seed(0)
    theirs = NoiseTunnel(Saliency(model)).attribute(x.clone().requires_grad_(), nt_type="vargrad",
                                                    nt_samples=4000, stdevs=0.5, abs=False)
    ours = vargrad(model, x, None, n_samples=4000, stdev=0.5)
    torch.testing.assert_close(ours.values, theirs.detach(), rtol=0.1, atol=0)  # both ≈ 4σ² = 1
    torch.testing.assert_close(ours.values, torch.full_like(x, 1.0), rtol=0.1, atol=0)


def test_chunking_seed_and_global_rng() -> None:
    model, x = TinyCNN(), images(3)
    whole = smoothgrad(model, x, 1, n_samples=7)
    for size in (1, 4, 10, 1000):
        torch.testing.assert_close(smoothgrad(model, x, 1, n_samples=7, internal_batch_size=size).values,
                                   whole.values, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(vargrad(model, x, 1, n_samples=7, internal_batch_size=size).values,
                                   vargrad(model, x, 1, n_samples=7).values, rtol=1e-4, atol=1e-9)
    state = torch.get_rng_state()
    assert torch.equal(smoothgrad(model, x, 1, n_samples=7).values, whole.values)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(smoothgrad(model, x, 1, n_samples=7, seed=1).values, whole.values)
    assert torch.equal(smoothgrad(model, x, 1, n_samples=7, stdev=0.0).values,
                       Saliency(model).attribute(x.clone().requires_grad_(), target=1, abs=False))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"n_samples": 0}, InputError, "n_samples"),
    ({"stdev": -0.1}, InputError, "stdev"),
    ({"stdev": float("nan")}, InputError, "stdev"),
    ({"seed": 1.5}, TypeError, "seed"),
    ({"internal_batch_size": 0}, InputError, "internal_batch_size"),
    ({"direction": torch.ones(8)}, InputError, "give site="),
    ({"site": "fc1", "direction": torch.zeros(8)}, InputError, "non-zero"),
])
def test_bad_arguments_fail_before_any_forward(kwargs: dict, error: type, message: str) -> None:
    model = TinyMLP()
    count: list[int] = []
    model.register_forward_pre_hook(lambda *a: count.append(1))
    for fn in (smoothgrad, vargrad):
        args = dict(kwargs)
        with pytest.raises(error, match=message):
            fn(model, vectors(), 1, **args)
    assert count == []


@pytest.mark.parametrize("site", [None, "fc1"])
def test_leaves_no_trace(site: str | None) -> None:
    model, x = TinyMLP().train(), vectors()
    before = snapshot(model)
    for fn in (smoothgrad, vargrad):
        fn(model, x, 1, site=site, n_samples=4)
        assert_unchanged(before, snapshot(model), fn.__name__)
