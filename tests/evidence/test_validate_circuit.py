"""Circuits as findings (issue #12 item 4): `Circuit.to_findings` and `validate` of a "circuit" finding.

Oracle: `validate`'s circuit check (evidence/validate.py over evidence/_circuit.py) gives exactly the
numbers of `subnetworks.circuit_significance` (faithfulness, completeness, the same random edge sets,
the same p-values) and of `faithfulness_curve` (CPR, CMD), with and without an ablation; the edge
engine both run on (`core.edges`) equals hand-written path patching in tests/subnetworks/test_circuits.py.
On the compiled planted circuit, the planted edges are validated and a random edge set of the same
size is not.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from seethrough import InputError
from seethrough.bench.zoo.circuits import circuit_pairs, compiled_circuit
from seethrough.evidence import Finding, validate
from seethrough.subnetworks import circuit_significance, faithfulness_curve, find_circuit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "subnetworks"))
from test_circuits import READERS, WRITERS, Residual, _data, _metric  # noqa: E402


@pytest.mark.parametrize("ablation", [None, "resample"])
def test_validate_matches_circuit_significance_and_the_curve(ablation: str | None) -> None:
    model = Residual(seed=2)
    clean, corrupted = _data(3)
    kwargs = {"writers": WRITERS, "readers": READERS, "ablation": ablation, "seed": 4}
    circuit = find_circuit(model, clean, corrupted, _metric, method="exact", **kwargs)
    sufficient, necessary = circuit.to_findings(k=3, inputs=clean)
    assert sufficient.kind == necessary.kind == "circuit" and sufficient.evidence["ablation"] == ablation
    sig = circuit_significance(model, clean, corrupted, _metric, edges=circuit.select(3), n_controls=9, **kwargs)
    with pytest.warns(UserWarning, match="in-sample"):
        v_suf = validate(sufficient, model, clean, metric=_metric, reference=corrupted, n_controls=9, seed=4)
    with pytest.warns(UserWarning, match="in-sample"):
        v_nec = validate(necessary, model, clean, metric=_metric, reference=corrupted, n_controls=9, seed=4)
    assert v_suf.in_sample and v_suf.kind == "circuit"
    # float64 means of float32 runs: the two engines sum the same terms, so they agree to float32 rounding
    assert v_suf.effect == pytest.approx(sig.faithfulness, abs=1e-5)
    assert v_nec.effect == pytest.approx(sig.completeness, abs=1e-5)
    np.testing.assert_allclose(v_suf.control_effects, sig.control_faithfulness, atol=1e-5)
    np.testing.assert_allclose(v_nec.control_effects, sig.control_completeness, atol=1e-5)
    assert (v_suf.p_value, v_nec.p_value) == (sig.p_sufficient, sig.p_necessary)
    curve = faithfulness_curve(model, clean, corrupted, _metric, ranking=circuit.select(10), **kwargs)
    assert v_suf.measures["cpr"] == pytest.approx(curve.cpr, abs=1e-5)
    assert v_nec.measures["cmd"] == pytest.approx(curve.cmd, abs=1e-5)
    assert v_suf.measures["faithfulness"] == pytest.approx(v_suf.effect)
    assert v_suf.to_dict()["measures"]["n_edges"] == 3.0


def test_planted_circuit_is_validated_and_a_random_edge_set_is_not() -> None:
    model, meta = compiled_circuit(5)
    clean, corrupted, labels = circuit_pairs(64, 5, saturated=False)
    held_clean, held_corrupted, held_labels = circuit_pairs(64, 105, saturated=False)

    def metric_for(lab):
        return lambda out: (2.0 * lab.repeat(len(out) // len(lab)) - 1) * out[:, 0]

    circuit = find_circuit(model, clean, corrupted, metric_for(labels), writers=meta["writers"],
                           readers=meta["readers"], method="eap-ig")
    assert {tuple(e) for e in circuit.select(4)} == {tuple(e) for e in meta["edges"]}
    for finding in circuit.to_findings(k=4):  # (6-bit inputs: any two batches of 64 share examples)
        v = validate(finding, model, held_clean, metric=metric_for(held_labels), reference=held_corrupted,
                     n_controls=49, seed=1)
        assert v.in_sample is None and v.validated and v.effect == pytest.approx(1.0, abs=1e-5), finding.claim
    edges = sorted({(w, r) for w, r in circuit.edge_scores} - {tuple(e) for e in meta["edges"]})[:4]
    wrong = Finding("circuit", "four non-circuit edges", evidence={**circuit.to_findings(k=4)[0].evidence,
                                                                 "edges": [list(e) for e in edges]})
    v = validate(wrong, model, held_clean, metric=metric_for(held_labels), reference=held_corrupted,
                 n_controls=49, seed=1)
    assert not v.validated and v.effect == pytest.approx(0.0, abs=1e-5)


def test_refusals() -> None:
    model = Residual()
    clean, corrupted = _data()
    finding = find_circuit(model, clean, corrupted, _metric, writers=WRITERS, readers=READERS).to_findings(k=2)[0]
    with pytest.raises(InputError, match="reference=corrupted"):
        validate(finding, model, clean, metric=_metric)
    with pytest.raises(InputError, match="fewer than all"):
        validate(Finding("circuit", "x", evidence={**finding.evidence, "edges": [["head", "embed"]]}), model, clean,
                 metric=_metric, reference=corrupted)
    with pytest.raises(InputError, match="needs evidence"):
        Finding("circuit", "no stream", evidence={"edges": [["embed", "head"]]})
    with pytest.raises(InputError, match="k must"):
        find_circuit(model, clean, corrupted, _metric, writers=WRITERS, readers=READERS).to_findings(k=10)
    with pytest.raises(InputError, match="no target"):
        validate(finding, model, clean, reference=corrupted)
