"""Oracles for find_circuit and faithfulness on the contract's tiny residual model.

"exact" equals hand-written path patching (a forward pass written out with the edge's corrupted
term swapped in); "eap" equals gradient × difference computed by hand with autograd on that
forward; on a linear network EAP is exact; EAP-IG with one step is EAP; ACDC's first test is an
exact edge patch; faithfulness is 1 for every edge and 0 for none.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seethrough import InputError
from seethrough.subnetworks import faithfulness, find_circuit

WRITERS = ["embed", "blocks.0", "blocks.1", "blocks.2"]
READERS = ["blocks.0", "blocks.1", "blocks.2", "head"]


class Residual(nn.Module):
    """embed writes the stream; blocks read it (their input) and write back; head reads it (contract_check's model)."""

    def __init__(self, seed: int = 0, act: bool = True) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.embed = nn.Linear(4, 8)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.ReLU() if act else nn.Identity())
                                    for _ in range(3))
        self.head = nn.Linear(8, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.6)

    def forward(self, x):
        h = self.embed(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


def _metric(out):
    return torch.log_softmax(out, -1)[:, 0]


def _outputs(model: Residual, x: torch.Tensor) -> dict[str, torch.Tensor]:
    outs = {"embed": model.embed(x)}
    h = outs["embed"]
    for i, block in enumerate(model.blocks):
        outs[f"blocks.{i}"] = block(h)
        h = h + outs[f"blocks.{i}"]
    return outs


def _hand_forward(model: Residual, clean, corrupted, removed=frozenset(), leaves=None, corr=None):
    """Path patching written out: reader r sums its writers' terms, the corrupted term for a removed edge."""
    corr = _outputs(model, corrupted) if corr is None else corr
    terms = {"embed": model.embed(clean)}

    def reader_input(r: str) -> torch.Tensor:
        total = sum(corr[w] if (w, r) in removed else t for w, t in terms.items())
        return total + leaves[r] if leaves is not None else total

    for i, block in enumerate(model.blocks):
        terms[f"blocks.{i}"] = block(reader_input(f"blocks.{i}"))
    return model.head(reader_input("head"))


def _data(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen)


def _edges():
    order = {p: i for i, p in enumerate(["embed", "blocks.0", "blocks.1", "blocks.2", "head"])}
    return [(w, r) for r in READERS for w in WRITERS if order[w] < order[r]]


def test_exact_equals_hand_written_path_patching() -> None:
    model = Residual().eval()
    clean, corrupted = _data()
    res = find_circuit(model, clean, corrupted, _metric, writers=WRITERS, readers=READERS, method="exact")
    assert sorted(res.edge_scores) == sorted(_edges())
    with torch.no_grad():
        base = _metric(model(clean)).double().mean()
        for edge in _edges():
            patched = _metric(_hand_forward(model, clean, corrupted, {edge})).double().mean()
            assert res.edge_scores[edge] == pytest.approx(abs(float(patched - base)), abs=1e-6), edge


def test_eap_equals_gradient_times_difference_by_hand() -> None:
    model = Residual().eval()
    clean, corrupted = _data(2)
    res = find_circuit(model, clean, corrupted, _metric, writers=WRITERS, readers=READERS, method="eap")
    leaves = {r: torch.zeros(8, 8, requires_grad=True) for r in READERS}
    grads = dict(zip(READERS, torch.autograd.grad(_metric(_hand_forward(model, clean, corrupted, leaves=leaves)).sum(),
                                                  [leaves[r] for r in READERS]), strict=True))
    with torch.no_grad():
        a, b = _outputs(model, clean), _outputs(model, corrupted)
    for w, r in _edges():
        expected = abs(float(((b[w] - a[w]) * grads[r]).sum(1).mean()))
        assert res.edge_scores[(w, r)] == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_eap_is_exact_on_a_linear_network() -> None:
    model = Residual(act=False).eval()
    clean, corrupted = _data(3)

    def linear_metric(out):  # linear in the output, so first order is exact
        return out[:, 0] - 2 * out[:, 1]

    eap = find_circuit(model, clean, corrupted, linear_metric, writers=WRITERS, readers=READERS, method="eap")
    exact = find_circuit(model, clean, corrupted, linear_metric, writers=WRITERS, readers=READERS, method="exact")
    for edge, score in exact.edge_scores.items():
        assert eap.edge_scores[edge] == pytest.approx(score, rel=1e-4, abs=1e-5)


def test_eap_ig_one_step_is_eap_and_interpolates_the_first_writer() -> None:
    model = Residual().eval()
    clean, corrupted = _data(4)
    kwargs = {"writers": WRITERS, "readers": READERS}
    eap = find_circuit(model, clean, corrupted, _metric, method="eap", **kwargs)
    ig1 = find_circuit(model, clean, corrupted, _metric, method="eap-ig", n_steps=1, **kwargs)
    for edge, score in eap.edge_scores.items():
        assert ig1.edge_scores[edge] == pytest.approx(score, rel=1e-5, abs=1e-7)
    # two steps by hand: the embedding output at corrupted + k/2 (clean - corrupted), gradients averaged
    ig2 = find_circuit(model, clean, corrupted, _metric, method="eap-ig", n_steps=2, **kwargs)
    with torch.no_grad():
        a, b = _outputs(model, clean), _outputs(model, corrupted)
    total = {r: torch.zeros(8, 8) for r in READERS}
    for alpha in (0.5, 1.0):
        leaves = {r: torch.zeros(8, 8, requires_grad=True) for r in READERS}
        terms = [b["embed"] + alpha * (a["embed"] - b["embed"])]
        for i, block in enumerate(model.blocks):
            terms.append(block(sum(terms) + leaves[f"blocks.{i}"]))
        out = model.head(sum(terms) + leaves["head"])
        for r, g in zip(READERS, torch.autograd.grad(_metric(out).sum(), [leaves[r] for r in READERS]), strict=True):
            total[r] += g / 2
    for w, r in _edges():
        expected = abs(float(((b[w] - a[w]) * total[r]).sum(1).mean()))
        assert ig2.edge_scores[(w, r)] == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_acdc_prunes_dead_edges_and_keeps_live_ones() -> None:
    model = Residual().eval()
    with torch.no_grad():
        model.blocks[1][0].weight.zero_()  # blocks.1 writes a constant: its edges carry nothing
        model.blocks[1][0].bias.zero_()
    clean, corrupted = _data(5)
    kwargs = {"writers": WRITERS, "readers": READERS}
    acdc = find_circuit(model, clean, corrupted, _metric, method="acdc", **kwargs)
    exact = find_circuit(model, clean, corrupted, _metric, method="exact", **kwargs)
    for r in ["blocks.2", "head"]:
        assert acdc.edge_scores[("blocks.1", r)] == pytest.approx(0.0, abs=1e-9)
    # the first edge ACDC tests (latest writer into the last reader) is an exact single-edge patch
    assert acdc.edge_scores[("blocks.2", "head")] == pytest.approx(exact.edge_scores[("blocks.2", "head")], abs=1e-9)
    assert all(v >= 0 for v in acdc.edge_scores.values())
    assert acdc.node_scores["blocks.1"] == pytest.approx(0.0, abs=1e-9)


def test_faithfulness_endpoints_and_verify() -> None:
    model = Residual().eval()
    clean, corrupted = _data(6)
    kwargs = {"writers": WRITERS, "readers": READERS}
    assert faithfulness(model, clean, corrupted, _metric, edges=_edges(), **kwargs) == pytest.approx(1.0, abs=1e-6)
    assert faithfulness(model, clean, corrupted, _metric, edges=[], **kwargs) == pytest.approx(0.0, abs=1e-6)
    res = find_circuit(model, clean, corrupted, _metric, method="exact", **kwargs)
    assert res.verify(model, clean, corrupted, _metric, k=len(_edges())) == pytest.approx(1.0, abs=1e-6)
    top = res.select(3)
    assert len(top) == 3 and res.edge_scores[top[0]] == max(res.edge_scores.values())
    with torch.no_grad():  # faithfulness of the top 3 by hand: every other edge corrupted
        removed = set(_edges()) - set(top)
        kept = _metric(_hand_forward(model, clean, corrupted, removed)).double().mean()
        lo, hi = _metric(model(corrupted)).double().mean(), _metric(model(clean)).double().mean()
    assert res.verify(model, clean, corrupted, _metric, k=3) == pytest.approx(float((kept - lo) / (hi - lo)), abs=1e-5)


def test_node_scores_sum_outgoing_edges() -> None:
    model = Residual().eval()
    clean, corrupted = _data(7)
    res = find_circuit(model, clean, corrupted, _metric, writers=WRITERS, readers=READERS, method="eap-ig")
    assert res.node_scores["embed"] == pytest.approx(sum(s for (w, _), s in res.edge_scores.items() if w == "embed"))
    assert res.node_scores["head"] == pytest.approx(sum(s for (_, r), s in res.edge_scores.items() if r == "head"))


class Normed(Residual):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        h = self.embed(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(self.norm(h))


def test_refuses_a_reader_behind_a_norm_and_names_it() -> None:
    model = Normed().eval()
    clean, corrupted = _data()
    with pytest.raises(InputError, match="reader 'head'.*name the norm as the reader"):
        find_circuit(model, clean, corrupted, _metric, writers=WRITERS, readers=READERS, method="eap")
    res = find_circuit(model, clean, corrupted, _metric, writers=WRITERS, readers=READERS[:3] + ["norm"],
                       method="eap")
    assert ("blocks.2", "norm") in res.edge_scores


def test_refusals() -> None:
    model = Residual().eval()
    clean, corrupted = _data()
    with pytest.raises(InputError, match="method must be one of"):
        find_circuit(model, clean, corrupted, _metric, writers=WRITERS, readers=READERS, method="ig")
    with pytest.raises(InputError, match="same size"):
        find_circuit(model, clean, corrupted[:4], _metric, writers=WRITERS, readers=READERS)
    with pytest.raises(InputError, match="not .writer, later reader. pairs"):
        faithfulness(model, clean, corrupted, _metric, writers=WRITERS, readers=READERS, edges=[("head", "embed")])


@pytest.mark.parametrize("ablation", ["zero", "mean", "resample"])
def test_ablations_of_the_edges_outside_a_circuit(ablation: str) -> None:
    from seethrough.core import resample_indices

    model = Residual().eval()
    clean, corrupted = _data(8)
    kwargs = {"writers": WRITERS, "readers": READERS}
    with torch.no_grad():
        outs = _outputs(model, corrupted)
        if ablation == "zero":
            carried = {w: torch.zeros_like(v) for w, v in outs.items()}
        elif ablation == "mean":
            carried = {w: v.mean(0, keepdim=True).expand_as(v) for w, v in outs.items()}
        else:
            rows = resample_indices(8, 8, seed=3)[0]
            carried = {w: v[rows] for w, v in outs.items()}
        kept_edges = [("embed", "blocks.1"), ("blocks.1", "head")]
        removed = set(_edges()) - set(kept_edges)
        kept = _metric(_hand_forward(model, clean, corrupted, removed, corr=carried)).double().mean()
        nothing = _metric(_hand_forward(model, clean, corrupted, set(_edges()), corr=carried)).double().mean()
        full = _metric(model(clean)).double().mean()
        single = _metric(_hand_forward(model, clean, corrupted, {("blocks.0", "head")}, corr=carried)).double().mean()
    got = faithfulness(model, clean, corrupted, _metric, edges=kept_edges, ablation=ablation, seed=3, **kwargs)
    assert got == pytest.approx(float((kept - nothing) / (full - nothing)), abs=1e-5)
    res = find_circuit(model, clean, corrupted, _metric, method="exact", ablation=ablation, seed=3, **kwargs)
    assert res.corrupted == pytest.approx(float(nothing), abs=1e-6)
    assert res.edge_scores[("blocks.0", "head")] == pytest.approx(abs(float(single - full)), abs=1e-6)
    assert res.verify(model, clean, corrupted, _metric, k=len(_edges())) == pytest.approx(1.0, abs=1e-6)


def test_faithfulness_curve_is_faithfulness_at_every_size() -> None:
    import numpy as np

    from seethrough.subnetworks import faithfulness_curve

    model = Residual().eval()
    clean, corrupted = _data(9)
    kwargs = {"writers": WRITERS, "readers": READERS}
    res = find_circuit(model, clean, corrupted, _metric, method="eap-ig", **kwargs)
    curve = res.curve(model, clean, corrupted, _metric)
    ranking = res.select(len(_edges()))
    expected = [faithfulness(model, clean, corrupted, _metric, edges=ranking[:k], **kwargs) for k in range(11)]
    np.testing.assert_allclose(curve.faithfulness, expected, atol=1e-6)
    x = np.arange(11) / 10
    assert curve.cpr == pytest.approx(sum((x[i + 1] - x[i]) * (expected[i + 1] + expected[i]) / 2 for i in range(10)))
    dev = np.abs(1 - np.array(expected))
    assert curve.cmd == pytest.approx(sum((x[i + 1] - x[i]) * (dev[i + 1] + dev[i]) / 2 for i in range(10)))
    with pytest.raises(InputError, match="every edge"):
        faithfulness_curve(model, clean, corrupted, _metric, ranking=ranking[:3], **kwargs)


def test_circuit_significance_against_random_edge_sets() -> None:
    from seethrough.subnetworks import circuit_significance

    model = Residual().eval()
    clean, corrupted = _data(10)
    kwargs = {"writers": WRITERS, "readers": READERS}
    circuit = find_circuit(model, clean, corrupted, _metric, method="exact", **kwargs).select(3)
    res = circuit_significance(model, clean, corrupted, _metric, edges=circuit, n_controls=30, seed=4, **kwargs)
    edges = _edges()
    gen = torch.Generator().manual_seed(4)
    controls = [[edges[i] for i in torch.randperm(10, generator=gen)[:3].tolist()] for _ in range(30)]
    with torch.no_grad():
        full, lo = _metric(model(clean)).double().mean(), _metric(model(corrupted)).double().mean()

        def faith(kept):
            return float((_metric(_hand_forward(model, clean, corrupted, set(edges) - set(kept))).double().mean() - lo)
                         / (full - lo))

        def complete(removed):
            return float((full - _metric(_hand_forward(model, clean, corrupted, set(removed))).double().mean())
                         / (full - lo))

        expected_f = [faith(c) for c in controls]
        expected_c = [complete(c) for c in controls]
        circuit_f, circuit_c = faith(circuit), complete(circuit)
    assert res.faithfulness == pytest.approx(circuit_f, abs=1e-5)
    assert res.completeness == pytest.approx(circuit_c, abs=1e-5)
    torch.testing.assert_close(torch.as_tensor(res.control_faithfulness), torch.tensor(expected_f, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.as_tensor(res.control_completeness), torch.tensor(expected_c, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    assert res.p_sufficient == pytest.approx((1 + sum(f >= res.faithfulness for f in res.control_faithfulness)) / 31)
    assert res.p_necessary == pytest.approx((1 + sum(c >= res.completeness for c in res.control_completeness)) / 31)
    with pytest.raises(InputError, match="between one and all but one"):
        circuit_significance(model, clean, corrupted, _metric, edges=edges, **kwargs)
