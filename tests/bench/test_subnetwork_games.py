"""The subnetwork games' planted keys are true: the modules and the circuit are where the zoo says (issue #12)."""

from __future__ import annotations

import numpy as np
import torch

from seethrough import capture
from seethrough.bench.games import GAMES
from seethrough.bench.zoo.circuits import circuit_pairs, compiled_circuit, siit_circuit
from seethrough.bench.zoo.modules import modular_mlp
from seethrough.evidence import auroc
from seethrough.subnetworks import faithfulness, find_circuit


def test_modular_mlp_has_only_small_cross_module_weights() -> None:
    model, meta = modular_mlp(7, n_modules=2, steps=50)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    groups = [np.asarray(meta["inputs"])] + [np.asarray(meta["modules"][p]) for p in meta["modules"]]
    for lin, rows_in, rows_out in zip(linears, groups[:-1], groups[1:], strict=True):
        same = torch.as_tensor(rows_out[:, None] == rows_in[None, :])
        w = lin.weight.detach().abs()
        assert float(w[~same].max()) <= 0.1 * float(w[same].mean()) + 1e-7  # eps = 0.1 of the typical magnitude
    assert sorted(np.bincount(groups[1]).tolist()) == [32, 32]


def test_compiled_circuit_computes_its_formula_and_only_planted_edges_matter() -> None:
    model, meta = compiled_circuit(11)
    clean, corrupted, labels = circuit_pairs(64, 11, saturated=False)
    with torch.no_grad():
        assert ((model(clean)[:, 0] > 0).long() == labels).all()

    def metric(out):
        return (2.0 * labels.repeat(len(out) // len(labels)) - 1) * out[:, 0]

    kwargs = {"writers": meta["writers"], "readers": meta["readers"]}
    planted = [tuple(e) for e in meta["edges"]]
    assert abs(faithfulness(model, clean, corrupted, metric, edges=planted, **kwargs) - 1.0) < 1e-5


def test_saturated_pairs_switch_the_and_unit() -> None:
    clean, corrupted, _ = circuit_pairs(32, 3, saturated=True)
    assert not bool((clean[:, 0] * clean[:, 1]).any()) and bool((corrupted[:, :2] == 1).all())


def test_games_are_registered() -> None:
    assert {"planted-modules", "planted-circuits"} <= set(GAMES)
    assert GAMES["planted-circuits"].baselines == {"random", "mean-abs-output"}


def test_siit_circuit_is_verified_and_its_planted_edges_are_the_ones_that_matter() -> None:
    """The trained arm's key holds by ablation: the 4 planted edges keep the behaviour with every other edge
    corrupted, and each planted edge's exact patching effect exceeds every non-circuit edge's (seed 0, the
    quick bench's first seed, so the zoo cache is shared)."""
    model, meta = siit_circuit(0)
    assert meta["verified"] and meta["accuracy"] >= 0.99 and min(meta["iit_accuracy"].values()) >= 0.95
    assert meta["strict_accuracy"] >= 0.95
    clean, corrupted, labels = circuit_pairs(64, 0, saturated=False)
    with torch.no_grad():
        assert ((model(clean)[:, 0] > 0).long() == labels).all()

    def metric(out):
        return (2.0 * labels.repeat(len(out) // len(labels)) - 1) * out[:, 0]

    kwargs = {"writers": meta["writers"], "readers": meta["readers"]}
    planted = {tuple(e) for e in meta["edges"]}
    assert faithfulness(model, clean, corrupted, metric, edges=sorted(planted), **kwargs) > 0.9
    exact = find_circuit(model, clean, corrupted, metric, method="exact", **kwargs).edge_scores
    assert min(exact[e] for e in planted) > max(s for e, s in exact.items() if e not in planted)
    # the distractors are active: on average larger than the circuit's blocks
    with torch.no_grad():
        size = {p: float(v.abs().mean()) for p, v in capture(model, clean, meta["writers"][1:]).items()}
    roles = dict(zip(meta["writers"][1:], meta["roles"], strict=True))
    distractors = [size[p] for p in size if roles[p].startswith("distractor")]
    assert sum(distractors) / len(distractors) > min(size[p] for p in size if not roles[p].startswith("distractor"))


def test_eap_ig_at_least_eap_on_the_planted_cases() -> None:
    """Issue #12's bar "EAP-IG >= EAP on the planted cases": edge AUROC per case, seed 0, both arms and pair kinds."""
    for case in ({"seed": 0, "saturated": True, "n_pairs": 64}, {"seed": 0, "saturated": False, "n_pairs": 64},
                 {"seed": 0, "saturated": True, "n_pairs": 64, "trained": True}):
        planted = GAMES["planted-circuits"].build(case)
        kwargs = {"writers": list(planted.writers), "readers": list(planted.readers)}
        scores = {m: find_circuit(planted.model, planted.clean, planted.corrupted, planted.metric, method=m,
                                  **kwargs).edge_scores for m in ("eap", "eap-ig")}
        edges = list(scores["eap"])
        roc = {m: float(auroc([s[e] for e in edges], [e in planted.edges for e in edges])) for m, s in scores.items()}
        assert roc["eap-ig"] >= roc["eap"], (case, roc)
