"""DCI and MIG (issue #14): the factors themselves score near 1, a random rotation of them clearly
lower; mutual information matches scikit-learn's on discrete data; factor types and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from seethrough.core import InputError
from seethrough.representations import DCI, dci, mig


def _factors(n: int = 1000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.integers(0, 3, n), rng.integers(0, 5, n), rng.uniform(size=n),
                            rng.uniform(size=n)]).astype(float)


def _rotated(f: np.ndarray, seed: int = 1) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((f.shape[1], f.shape[1])))
    return ((f - f.mean(0)) / f.std(0)) @ (q * np.sign(np.diag(r)))


def test_the_factors_themselves_score_near_one_and_a_rotation_clearly_lower() -> None:
    f = _factors()
    own, rotated = dci(f, f), dci(_rotated(f), f)
    assert own.disentanglement >= 0.95 and own.completeness >= 0.95 and own.informativeness >= 0.95
    assert rotated.disentanglement < own.disentanglement - 0.4
    assert rotated.completeness < own.completeness - 0.4
    assert mig(f, f) >= 0.9 and mig(_rotated(f), f) < 0.3
    assert own.model == "gradient-boosted trees" and own.discrete.tolist() == [True, True, False, False]


def test_mig_of_discrete_factors_against_themselves() -> None:
    # the gap is H(f_j) − I(f_j; f_other): the plug-in MI of two independent samples is small, not 0
    f = _factors()[:, :2]
    h = [mutual_info_score(f[:, j], f[:, j]) for j in range(2)]
    cross = mutual_info_score(f[:, 0], f[:, 1])
    expected = np.mean([(h[j] - cross) / h[j] for j in range(2)])
    assert mig(f, f) == pytest.approx(expected, rel=1e-10) and 0.99 < expected < 1
    assert mig(torch.tensor(f), torch.tensor(f)) == pytest.approx(expected, rel=1e-10)  # tensors too


def test_mig_equals_a_reference_built_on_sklearn_mutual_info_score() -> None:
    rng = np.random.default_rng(3)
    factor = rng.integers(0, 4, 2000)
    codes = np.column_stack([(factor + rng.integers(0, 2, 2000)) % 4, rng.integers(0, 4, 2000),
                             (factor * 2 + rng.integers(0, 3, 2000)) % 7])
    info = sorted((mutual_info_score(factor, codes[:, i]) for i in range(3)), reverse=True)
    expected = (info[0] - info[1]) / mutual_info_score(factor, factor)  # nats throughout
    assert mig(codes.astype(float), factor[:, None].astype(float)) == pytest.approx(expected, rel=1e-10)


def test_continuous_codes_are_binned_with_equal_width_bins() -> None:
    rng = np.random.default_rng(4)
    factor = rng.integers(0, 3, 3000)
    codes = np.column_stack([factor + rng.normal(0, 0.3, 3000), rng.normal(size=3000)])
    binned = [np.digitize(c, np.histogram_bin_edges(c, bins=20)[1:-1]) for c in codes.T]  # the slow reference
    info = sorted((mutual_info_score(factor, b) for b in binned), reverse=True)
    expected = (info[0] - info[1]) / mutual_info_score(factor, factor)
    assert mig(codes, factor[:, None].astype(float)) == pytest.approx(expected, rel=1e-10)


def test_discrete_override_and_integer_rule() -> None:
    f = _factors(400)
    assert dci(f, f, discrete=[False, False, False, False]).discrete.tolist() == [False] * 4
    with pytest.raises(InputError, match="discrete"):
        dci(f, f, discrete=[True])


def test_a_code_shared_by_two_factors_is_not_disentangled_and_a_split_factor_not_complete() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 4, 1500), rng.integers(0, 4, 1500)
    factors = np.column_stack([a, b]).astype(float)
    shared = dci(np.column_stack([a * 4 + b, rng.normal(size=1500)]), factors)  # one code carries both
    assert shared.code_disentanglement[0] < 0.2 and shared.informativeness > 0.95
    split = dci(np.column_stack([a, a, b]).astype(float), factors)  # a is read from two identical codes
    assert split.factor_completeness[1] > 0.95 and split.factor_completeness[0] < 0.8


def test_uninformative_codes_score_near_chance_informativeness() -> None:
    f = _factors(1500)
    noise = np.random.default_rng(9).normal(size=(1500, 4))
    r = dci(noise, f)
    assert r.factor_informativeness[0] < 0.5 and r.factor_informativeness[2] < 0.1  # chance: 1/3 and R² 0


@pytest.mark.parametrize("codes, factors", [
    (np.zeros((10, 2)), np.zeros((9, 2))),
    (np.full((10, 2), np.nan), np.zeros((10, 2))),
    (np.zeros(10), np.zeros((10, 1))),
])
def test_bad_inputs_are_refused(codes, factors) -> None:
    with pytest.raises(InputError):
        dci(codes, factors)
    with pytest.raises(InputError):
        mig(codes, factors)


def test_result_frame_and_figure() -> None:
    f = _factors(300)
    r = dci(f, f)
    assert isinstance(r, DCI) and list(r.to_frame()["factor"]) == [0, 1, 2, 3]
    assert r.importance.shape == (4, 4) and r.plot().axes
