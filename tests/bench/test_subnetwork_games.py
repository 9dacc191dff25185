"""The subnetwork games' planted keys are true: the modules and the circuit are where the zoo says (issue #12)."""

from __future__ import annotations

import numpy as np
import torch

from seethrough.bench.games import GAMES
from seethrough.bench.zoo.circuits import circuit_pairs, compiled_circuit
from seethrough.bench.zoo.modules import modular_mlp
from seethrough.subnetworks import faithfulness


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
