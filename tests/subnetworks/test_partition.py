"""Oracles for partition and clusterability: hand-computed n-cuts, a brute force, scikit-learn's spectral clustering."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.cluster import SpectralClustering
from sklearn.metrics import adjusted_rand_score
from torch import nn

from seethrough import InputError
from seethrough.subnetworks import clusterability, ncut, partition


def _chain(*weights: torch.Tensor) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, w in enumerate(weights):
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.zero_()
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _adjacency(weights: list[np.ndarray]) -> np.ndarray:
    """The unit graph written out by hand: inputs, then each layer; |W| between consecutive layers."""
    sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    starts = np.cumsum([0] + sizes)
    adj = np.zeros((starts[-1], starts[-1]))
    for i, w in enumerate(weights):
        for out_unit, in_unit in itertools.product(range(w.shape[0]), range(w.shape[1])):
            a, b = starts[i] + in_unit, starts[i + 1] + out_unit
            adj[a, b] = adj[b, a] = abs(w[out_unit, in_unit])
    return adj


def _block_weights(rng: np.random.Generator, sizes: list[int], n_modules: int, eps: float) -> list[np.ndarray]:
    out = []
    for n_in, n_out in itertools.pairwise(sizes):
        same = (np.arange(n_out)[:, None] % n_modules) == (np.arange(n_in)[None, :] % n_modules)
        out.append(rng.uniform(0.5, 1.5, (n_out, n_in)) * np.where(same, 1.0, eps) * rng.choice([-1, 1], (n_out, n_in)))
    return out


def test_two_by_two_ncut_by_hand() -> None:
    eps = 0.1
    w = torch.tensor([[1.0, eps], [eps, 1.0]])
    res = partition(_chain(w, w), 2)
    # modules {a0, h0, o0} and {a1, h1, o1}: each cuts 4 edges of weight eps; each volume is 4 + 4 eps
    assert res.ncut == pytest.approx(2 * 4 * eps / (4 + 4 * eps), abs=1e-7)  # eps is stored as float32
    assert res.labels["0"][0] == res.labels["2"][0] == res.input_labels[0] != res.labels["0"][1]


def test_six_node_brute_force() -> None:
    w1 = torch.tensor([[1.0, 0.3], [0.05, 0.9]])
    w2 = torch.tensor([[0.2, 1.1], [0.8, 0.1]])
    res = partition(_chain(w1, w2), 2)
    adj = _adjacency([w1.numpy(), w2.numpy()])
    best = min(ncut(adj, np.array(labels)) for labels in itertools.product([0, 1], repeat=6) if len(set(labels)) == 2)
    found = np.concatenate([res.input_labels, res.labels["0"], res.labels["2"]])
    assert res.ncut == pytest.approx(best, abs=1e-12)
    assert ncut(adj, found) == pytest.approx(best, abs=1e-12)


def test_ncut_by_hand() -> None:
    adj = np.array([[0, 1, 0.1], [1, 0, 0], [0.1, 0, 0]])
    # {0, 1}: cut 0.1, volume 2.1; {2}: cut 0.1, volume 0.1
    assert ncut(adj, np.array([0, 0, 1])) == pytest.approx(0.1 / 2.1 + 1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_scikit_learn_spectral_clustering(seed: int) -> None:
    rng = np.random.default_rng(seed)
    weights = _block_weights(rng, [6, 12, 12, 6], 3, 0.05)
    res = partition(_chain(*(torch.tensor(w, dtype=torch.float32) for w in weights)), 3, seed=seed)
    adj = _adjacency([np.float32(w).astype(np.float64) for w in weights])
    reference = SpectralClustering(3, affinity="precomputed", random_state=seed).fit_predict(adj)
    found = np.concatenate([res.input_labels, *res.labels.values()])
    assert adjusted_rand_score(reference, found) == 1.0
    planted = np.concatenate([np.arange(n) % 3 for n in (6, 12, 12, 6)])
    assert adjusted_rand_score(planted, found) == 1.0


def test_block_diagonal_is_clusterable() -> None:
    rng = np.random.default_rng(0)
    weights = _block_weights(rng, [8, 16, 16, 4], 2, 0.05)
    model = _chain(*(torch.tensor(w, dtype=torch.float32) for w in weights))
    res = clusterability(model, 2, n_shuffles=10, seed=0)
    assert res.shuffled.shape == (10,)
    assert res.z_score < -5
    assert res.z_score == pytest.approx((res.ncut - res.shuffled.mean()) / res.shuffled.std(ddof=1))
    assert res.ncut == pytest.approx(partition(model, 2).ncut)


def test_dead_units_are_removed_first() -> None:
    rng = np.random.default_rng(3)
    w1, w2, w3 = (rng.normal(size=s) for s in [(5, 4), (5, 5), (3, 5)])
    w1[2] = 0.0  # hidden unit 0.2 gets no input: dead
    w3[:, 4] = 0.0  # hidden unit 2.4 sends nothing: dead
    w2[:, 1] = 0.0  # hidden unit 0.1 sends nothing: dead
    w2[1, :] = 0.0  # hidden unit 2.1 gets nothing ...
    w3[:, 1] = 0.0  # ... and sends nothing: listed once
    model = _chain(*(torch.tensor(w, dtype=torch.float32) for w in (w1, w2, w3)))
    res = partition(model, 2)
    assert res.dead == [("0", 1), ("0", 2), ("2", 1), ("2", 4)]
    assert all(res.labels[path][unit] == -1 for path, unit in res.dead)
    assert (res.labels["4"] >= 0).all() and len(res.input_labels) == 4
    # the same graph without the dead units, built by hand
    keep0, keep2 = [0, 3, 4], [0, 2, 3]
    pruned = _chain(*(torch.tensor(w, dtype=torch.float32) for w in
                      (w1[keep0], w2[np.ix_(keep2, keep0)], w3[:, keep2])))
    assert res.ncut == pytest.approx(partition(pruned, 2).ncut, abs=1e-9)
    assert clusterability(model, 2, n_shuffles=3).dead == res.dead


def test_iteratively_dead() -> None:
    w1 = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.5]])
    w2 = torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, 0.0]])  # hidden 2.1 reads only the dead 0.1
    w3 = torch.tensor([[1.0, 1.0], [1.0, 0.2]])
    res = partition(_chain(w1, w2, w3), 2)
    assert res.dead == [("0", 1), ("2", 1)]  # 2.1 dies once 0.1 is removed
    assert res.labels["2"][0] >= 0 and (res.labels["4"] >= 0).all()


def test_conv_channels_use_kernel_sums() -> None:
    torch.manual_seed(1)
    conv = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3))
    summed = [m.weight.detach().abs().sum((2, 3)) for m in (conv[0], conv[2])]
    lin = _chain(*summed)
    a, b = partition(conv, 2), partition(lin, 2)
    assert a.ncut == pytest.approx(b.ncut, abs=1e-6)  # the reference sums the kernels in float32
    assert adjusted_rand_score(np.concatenate(list(a.labels.values())), np.concatenate(list(b.labels.values()))) == 1


def test_flattened_conv_features_group_by_channel() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    by_channel = model[3].weight.detach().abs().view(2, 3, 16).sum(-1)
    reference = _chain(model[0].weight.detach().abs().sum((2, 3)), by_channel)
    assert partition(model, 2).ncut == pytest.approx(partition(reference, 2).ncut, abs=1e-6)  # float32 sums


def test_layers_that_do_not_chain_read_the_latest_fitting_layer_or_new_inputs() -> None:
    torch.manual_seed(4)
    a, b, c = nn.Linear(4, 5), nn.Linear(5, 3), nn.Linear(5, 2)  # c reads a's units (b gives 3, not 5)
    branched = nn.ModuleDict({"a": a, "b": b, "c": c})
    res = partition(branched, 2)
    assert set(res.labels) == {"a", "b", "c"}
    adj = np.zeros((4 + 5 + 3 + 2,) * 2)  # by hand: inputs, a, b, c; b and c both read a
    for start, dst, layer in [(0, 4, a), (4, 9, b), (4, 12, c)]:  # (source offset, layer offset, layer)
        w = layer.weight.detach().abs().double().numpy()
        adj[start:start + w.shape[1], dst:dst + w.shape[0]] = w.T
    adj = adj + adj.T
    found = np.concatenate([res.input_labels, res.labels["a"], res.labels["b"], res.labels["c"]])
    assert res.ncut == pytest.approx(ncut(adj, found), abs=1e-12)
    with pytest.warns(UserWarning, match="'2' become unlabelled input nodes|inputs of layer '2'"):
        res = partition(nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(6, 2)), 2)
    assert len(res.labels["2"]) == 2 and len(res.input_labels) == 4
    with pytest.raises(InputError, match="n_modules"):
        partition(nn.Sequential(nn.Linear(3, 2)), 1)
    with pytest.raises(InputError, match="n_shuffles"):
        clusterability(nn.Sequential(nn.Linear(3, 2)), 2, n_shuffles=1)


def test_seed_determinism() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 4))
    a, b = clusterability(model, 2, n_shuffles=4, seed=5), clusterability(model, 2, n_shuffles=4, seed=5)
    np.testing.assert_array_equal(a.shuffled, b.shuffled)
    assert a.z_score == b.z_score


# -- attention heads as node groups (issue #12 item 2) ---------------------------------------------


def _zoo_transformer(n_layers: int = 1, d_model: int = 8, n_heads: int = 2) -> nn.Module:
    from seethrough.bench.zoo import TinyTransformer

    return TinyTransformer(6, 4, d_model=d_model, n_layers=n_layers, n_heads=n_heads, seed=3)


def _residual_adjacency(model: nn.Module) -> tuple[np.ndarray, list[str]]:
    """The residual unit graph by hand for the zoo's TinyTransformer: stream inputs, then per block q, k, v, o,
    mlp.0, mlp.2, then unembed; readers of the stream join every earlier writer."""
    def w(path: str) -> np.ndarray:
        return model.get_submodule(path).weight.detach().abs().double().numpy().T  # (n_in, n_out)

    order: list[tuple[str, np.ndarray]] = []
    d = model.unembed.in_features
    order.append(("inputs", np.zeros((0, d))))
    edges: list[tuple[int, int, np.ndarray]] = []
    writers = [0]
    for i in range(len(model.blocks)):
        b = f"blocks.{i}"
        for name in ("attn.q", "attn.k", "attn.v"):
            order.append((f"{b}.{name}", w(f"{b}.{name}")))
            edges += [(src, len(order) - 1, w(f"{b}.{name}")) for src in writers]
        order.append((f"{b}.attn.o", w(f"{b}.attn.o")))
        edges.append((len(order) - 2, len(order) - 1, w(f"{b}.attn.o")))
        writers.append(len(order) - 1)
        order.append((f"{b}.mlp.0", w(f"{b}.mlp.0")))
        edges += [(src, len(order) - 1, w(f"{b}.mlp.0")) for src in writers]
        order.append((f"{b}.mlp.2", w(f"{b}.mlp.2")))
        edges.append((len(order) - 2, len(order) - 1, w(f"{b}.mlp.2")))
        writers.append(len(order) - 1)
    order.append(("unembed", w("unembed")))
    edges += [(src, len(order) - 1, w("unembed")) for src in writers]
    sizes = [d] + [m.shape[1] for _, m in order[1:]]
    starts = np.cumsum([0] + sizes)
    adj = np.zeros((starts[-1], starts[-1]))
    for src, dst, block in edges:
        adj[starts[src]:starts[src + 1], starts[dst]:starts[dst + 1]] += block
    return adj + adj.T, [p for p, _ in order[1:]]


def test_transformer_graph_by_hand_and_heads_move_together() -> None:
    model = _zoo_transformer(n_layers=2)
    res = partition(model, 3, seed=1)
    adj, paths = _residual_adjacency(model)
    assert list(res.labels) == paths
    found = np.concatenate([res.input_labels] + [res.labels[p] for p in paths])
    assert res.ncut == pytest.approx(ncut(adj, found), abs=1e-9)
    for i in range(2):
        heads = res.head_labels[f"blocks.{i}.attn"]
        for name in ("q", "k", "v"):
            np.testing.assert_array_equal(res.labels[f"blocks.{i}.attn.{name}"], np.repeat(heads, 4))  # d_head 4


def test_planted_heads_are_recovered() -> None:
    """Two halves of the stream: head 0, MLP units 0-15 and logits 0-2 use dims 0-3; head 1 and the rest dims 4-7."""
    model = _zoo_transformer(n_layers=1)
    half = {8: np.arange(8) // 4, 32: np.arange(32) // 16, 6: np.arange(6) // 3}
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                rows, cols = half[module.out_features], half[module.in_features]
                if name.endswith(("attn.q", "attn.k", "attn.v")):
                    rows = np.arange(8) // 4  # head h = units 4h..4h+3
                same = torch.as_tensor(rows[:, None] == cols[None, :])
                module.weight.copy_(torch.where(same, module.weight.abs() + 0.5, module.weight * 0.01))
    res = partition(model, 2)
    truth = np.concatenate([half[8]] + [half[len(v)] for v in res.labels.values()])
    found = np.concatenate([res.input_labels] + list(res.labels.values()))
    assert adjusted_rand_score(truth, found) == 1.0
    assert res.head_labels["blocks.0.attn"][0] != res.head_labels["blocks.0.attn"][1]
    assert clusterability(model, 2, n_shuffles=10).z_score < -5


def test_multihead_attention_is_read_with_heads() -> None:
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2, enable_nested_tensor=False)
    res = partition(enc, 2)
    linears = {n for n, m in enc.named_modules() if isinstance(m, nn.Linear)}
    assert set(res.labels) == linears and set(res.head_labels) == {"layers.0.self_attn", "layers.1.self_attn"}


def test_unsupported_attention_is_refused_or_warned() -> None:
    from models import TinyTransformer  # fused qkv: not a supported layout

    with pytest.raises(InputError, match="not supported"):
        partition(TinyTransformer(), 2, heads=True)
    with pytest.warns(UserWarning, match="not supported"):
        partition(TinyTransformer(), 2)
    with pytest.raises(InputError, match="no supported attention"):
        partition(nn.Sequential(nn.Linear(3, 4)), 2, heads=True)
    assert partition(_zoo_transformer(), 2, heads=False).head_labels == {}


@pytest.mark.parametrize("eps", [0.1, 1.0])
def test_bipartite_shortcut_equals_the_dense_eigendecomposition(monkeypatch: pytest.MonkeyPatch, eps: float) -> None:
    """Large layered graphs take their eigenvectors from one side's Gram matrix: same partition as dense eigh."""
    import sys

    module = sys.modules["seethrough.subnetworks._spectral"]
    rng = np.random.default_rng(7)
    model = _chain(*[torch.as_tensor(w, dtype=torch.float32) for w in _block_weights(rng, [12, 18, 18, 6], 3, eps)])
    monkeypatch.setattr(module, "BIPARTITE_FROM", 10**9)
    dense = partition(model, 3)
    monkeypatch.setattr(module, "BIPARTITE_FROM", 0)
    assert module.two_colouring(np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])) is None  # a triangle is not bipartite
    fast = partition(model, 3)
    assert fast.ncut == pytest.approx(dense.ncut, abs=1e-9)
    assert adjusted_rand_score(np.concatenate(list(dense.labels.values())),
                               np.concatenate(list(fast.labels.values()))) == 1.0
    residual = partition(_zoo_transformer(), 2)  # the residual graph is not bipartite here: dense path, same answer
    monkeypatch.setattr(module, "BIPARTITE_FROM", 10**9)
    assert partition(_zoo_transformer(), 2).ncut == pytest.approx(residual.ncut, abs=1e-9)
