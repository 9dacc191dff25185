"""Oracles for the functional graphs (numpy correlations, closed forms, a slow loop) and for train_modular."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score
from torch import nn

from seethrough import InputError, capture, hooks
from seethrough.core import zero_ablation
from seethrough.subnetworks import (
    clusterability,
    connection_cost,
    functional_graph,
    functional_partition,
    lesion_test,
    partition,
    train_modular,
)


def _net(seed: int = 0) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return net


def _x(n: int = 40, d: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_coactivation_is_numpy_corrcoef() -> None:
    net, x = _net(), _x()
    graph = functional_graph(net, x)
    acts = capture(net, x, ["0", "2", "4"])
    a = torch.cat([acts[p] for p in ["0", "2", "4"]], 1).detach().double().numpy()
    expected = np.abs(np.corrcoef(a.T))
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(graph.adjacency, expected, atol=1e-10)
    assert graph.units[0] == ("0", 0) and graph.units[-1] == ("4", 1) and graph.dead == []


def test_ablation_graph_closed_form_on_a_linear_net() -> None:
    """out = W2 (W1 x): zeroing hidden unit i moves output j by |W2[j, i] h_i|; E[i, j] = mean |W2[j, i] h_i| / std(out_j)."""
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    x = _x()
    graph = functional_graph(net, x, method="ablation")
    h = net[0](x).detach().double()
    out = net(x).detach().double()
    w2 = net[1].weight.detach().double()
    for i in range(4):
        for j in range(2):
            e_ij = (w2[j, i] * h[:, i]).abs().mean() / out[:, j].std()
            # the graph is symmetrised: (E[i, j] + E[j, i]) / 2, and an output's ablation moves no hidden unit
            assert graph.adjacency[i, 4 + j] == pytest.approx(float(e_ij) / 2, rel=1e-5)
    assert np.allclose(graph.adjacency[:4, :4], 0) and np.allclose(graph.adjacency[4:, 4:], 0)


def test_ablation_graph_equals_a_slow_loop() -> None:
    net, x = _net(2), _x()
    paths = ["0", "2", "4"]
    graph = functional_graph(net, x, method="ablation")
    clean = capture(net, x, paths)
    clean = {p: v.detach().double() for p, v in clean.items()}
    stds = torch.cat([clean[p].std(0) for p in paths])
    rows = []
    for p in paths:
        for u in range(clean[p].shape[1]):
            seen: dict[str, torch.Tensor] = {}

            def keep(value: torch.Tensor, site, p=p, u=u, seen=seen):  # noqa: ANN001, ANN202 - a test callback
                new = zero_ablation([u])(value, site) if site.path == p else value
                seen[site.path] = new.detach().double()
                return new

            with hooks(net, dict.fromkeys(paths, keep)) as ctx:
                ctx.call(x)
            rows.append(torch.cat([(seen[q] - clean[q]).abs().mean(0) for q in paths]) / stds)
    effects = torch.stack(rows).numpy()
    np.fill_diagonal(effects, 0)
    live = stds.numpy() > 1e-12
    expected = ((effects + effects.T) / 2)[np.ix_(live, live)]
    np.testing.assert_allclose(graph.adjacency, expected, rtol=1e-5, atol=1e-7)  # float32 forwards


def _block_net(cross: float) -> nn.Sequential:
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 4))
    with torch.no_grad():
        w1 = torch.randn(12, 8, generator=gen)
        w1[:6, 4:] *= cross
        w1[6:, :4] *= cross
        w2 = torch.randn(4, 12, generator=gen)
        w2[:2, 6:] *= cross
        w2[2:, :6] *= cross
        net[0].weight.copy_(w1)
        net[2].weight.copy_(w2)
    return net


@pytest.mark.parametrize("method", ["coactivation", "ablation"])
def test_functional_partition_recovers_planted_modules(method: str) -> None:
    net = _block_net(0.0)
    found = functional_partition(net, torch.randn(200, 8, generator=torch.Generator().manual_seed(3)), 2,
                                 method=method)
    truth = np.r_[np.repeat([0, 1], 6), np.repeat([0, 1], 2)]
    assert adjusted_rand_score(truth, np.r_[found.labels["0"], found.labels["2"]]) == 1.0
    if method == "ablation":  # ablating a unit of one module never moves the other: no edge between them
        assert found.ncut == pytest.approx(0.0, abs=1e-9)
    else:  # sample correlations of independent units are not exactly 0, but far below those of a dense net
        dense = functional_partition(_block_net(1.0), torch.randn(200, 8, generator=torch.Generator().manual_seed(3)), 2)
        assert found.ncut < 0.5 * dense.ncut


def test_dead_units_are_left_out_of_the_functional_graph() -> None:
    net = _net()
    with torch.no_grad():
        net[0].weight[1].zero_()
        net[0].bias[1] = 0.0
    graph = functional_graph(net, _x())
    assert ("0", 1) in graph.dead and ("0", 1) not in graph.units
    assert functional_partition(net, _x(), 2).labels["0"][1] == -1


def test_functional_graph_refuses_bad_input() -> None:
    with pytest.raises(InputError, match="method"):
        functional_graph(_net(), _x(), method="weights")
    with pytest.raises(InputError, match="3 examples"):
        functional_graph(_net(), _x(n=2))


def test_connection_cost_by_hand() -> None:
    net = nn.Sequential(nn.Linear(2, 4, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(8.0).view(4, 2) - 3)
    # outputs at 1/8, 3/8, 5/8, 7/8; inputs at 1/4, 3/4
    pos_out, pos_in = np.array([1, 3, 5, 7]) / 8, np.array([1, 3]) / 4
    w = np.abs(np.arange(8.0).reshape(4, 2) - 3)
    assert connection_cost(net) == pytest.approx(float((w * np.abs(pos_out[:, None] - pos_in[None])).sum()))


def _two_digit_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    y = torch.stack([(x[:, :4].sum(1) > 0).long(), (x[:, 4:].sum(1) > 0).long()], 1)
    return x, y


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out.view(-1, 2, 2).reshape(-1, 2), y.reshape(-1))


def test_train_modular_leaves_the_model_and_lowers_the_cost() -> None:
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    before = copy.deepcopy(net.state_dict())
    x, y = _two_digit_task(512, 0)
    xt, yt = _two_digit_task(400, 1)
    metrics = {f"half {h}": (lambda out, h=h: (out.view(-1, 2, 2)[:, h].argmax(-1) == yt[:, h].repeat(
        len(out) // len(yt))).double()) for h in range(2)}
    result = train_modular(net, x, y, strength=0.05, n_steps=400, loss=_loss, metrics=metrics, test_inputs=xt,
                           n_shuffles=5)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert result.cost_after < 0.5 * result.cost_before and result.after.ncut < result.before.ncut
    # the measurements are the public functions' own numbers on each model
    assert result.before.ncut == clusterability(net, 2, n_shuffles=5).ncut
    assert result.lesions_after is not None and result.lesions_before is not None
    assert result.lesions_after.verdict == "specialised" and result.lesions_before.verdict == "not specialised"
    again = lesion_test(result.model, {"0": partition(result.model, 2).labels["0"]}, xt, metrics)
    assert again.ratio == pytest.approx(result.lesions_after.ratio)


def test_train_modular_refuses_conv_and_unmatched_metrics() -> None:
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 2))
    with pytest.raises(InputError, match="conv"):
        train_modular(conv, torch.zeros(4, 1, 6, 6), torch.zeros(4, dtype=torch.long))
    x, y = _two_digit_task(16, 0)
    with pytest.raises(InputError, match="test_inputs"):
        train_modular(nn.Sequential(nn.Linear(8, 4)), x, y[:, 0], metrics={"a": lambda out: out[:, 0]})
