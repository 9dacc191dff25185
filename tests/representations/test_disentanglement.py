"""DCI, MIG and SAP (issue #14): the factors themselves score near 1, a random rotation of them clearly
lower; mutual information matches scikit-learn's on discrete data; SAP's score matrix against a
reference written here; factor types and bad inputs; the image factor set and the beta-VAE."""

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


# -- SAP (Kumar et al. 2018) -------------------------------------------------------------------------------


def test_sap_of_continuous_factors_is_the_gap_in_squared_correlation() -> None:
    from seethrough.representations import sap, sap_matrix

    rng = np.random.default_rng(6)
    factor = rng.uniform(size=2000)
    codes = np.column_stack([factor + rng.normal(0, 0.1, 2000), factor + rng.normal(0, 0.5, 2000),
                             rng.normal(size=2000)])
    train = np.random.default_rng(0).permutation(2000)[600:]  # the split sap_matrix draws (seed 0, 30% test)
    r2 = sorted((np.corrcoef(codes[train, i], factor[train])[0, 1] ** 2 for i in range(3)), reverse=True)
    assert sap(codes, factor[:, None]) == pytest.approx(r2[0] - r2[1], rel=1e-12)
    assert sap_matrix(codes * 7.0 + 3.0, factor[:, None]) == pytest.approx(sap_matrix(codes, factor[:, None]))


def test_sap_is_zero_for_a_duplicated_code_and_high_for_the_factors_themselves() -> None:
    from seethrough.representations import sap

    f = _factors(1500)
    assert sap(np.column_stack([f[:, 2], f[:, 2]]), f[:, 2:3]) == 0.0  # two equal codes: no gap
    assert sap(f, f) > 0.6 and sap(_rotated(f), f) < sap(f, f) - 0.3  # this rotation: 0.35 against 0.71
    discrete = sap(np.column_stack([f[:, 0], np.random.default_rng(1).normal(size=1500)]), f[:, :1])
    assert discrete > 0.5  # a 3-valued factor read from itself by a linear SVM beats the noise code (chance 1/3)
    with pytest.raises(InputError, match="at least 2 codes"):
        sap(f[:, :1], f)
    with pytest.raises(InputError, match="rows"):
        sap(f[:9], f)


def test_sap_discrete_entries_equal_a_linear_svm_on_each_standardised_code() -> None:
    from sklearn.svm import LinearSVC

    from seethrough.representations import sap_matrix

    rng = np.random.default_rng(7)
    factor = rng.integers(0, 3, 900)
    codes = np.column_stack([factor + rng.normal(0, 0.4, 900), rng.normal(size=900)])
    order = np.random.default_rng(0).permutation(900)
    test, train = order[:270], order[270:]
    expected = []
    for i in range(2):  # the reference: disentanglement_lib's classifier on one code, standardised on train
        z = ((codes[:, i] - codes[train, i].mean()) / codes[train, i].std())[:, None]
        svm = LinearSVC(C=0.01, class_weight="balanced", random_state=0).fit(z[train], factor[train])
        expected.append(np.mean(svm.predict(z[test]) == factor[test]))
    assert sap_matrix(codes, factor[:, None].astype(float))[:, 0] == pytest.approx(expected)


def test_a_non_integer_factor_marked_discrete_keeps_its_classes() -> None:
    from seethrough.representations import sap

    rng = np.random.default_rng(8)
    factor = rng.choice([0.2, 0.5, 0.8], 900)
    codes = np.column_stack([factor, rng.normal(size=900)])
    assert sap(codes, factor[:, None], discrete=[True]) > 0.5  # casting 0.2/0.5/0.8 to int made one class
    assert dci(codes, factor[:, None], discrete=[True]).informativeness > 0.95


# -- the image factor set and the beta-VAE -------------------------------------------------------------------


def test_factor_images_move_with_their_factors() -> None:
    from seethrough.bench.zoo.factors import factor_images

    images, factors = factor_images(0, n=400)
    rows, cols = np.mgrid[0:20, 0:20]
    mass = images[:, 0].sum((1, 2))
    centre_x = (images[:, 0] * cols).sum((1, 2)) / mass
    centre_y = (images[:, 0] * rows).sum((1, 2)) / mass
    assert np.corrcoef(centre_x, factors[:, 2])[0, 1] > 0.98 and np.corrcoef(centre_y, factors[:, 3])[0, 1] > 0.98
    square = factors[:, 0] == 0
    half = (0.10 + 0.03 * factors[square, 1]) * 20  # a square's area is (2 · half-size)², rotation or not
    assert np.allclose(mass[square], (2 * half) ** 2, rtol=0.08)
    again, _ = factor_images(0, n=400)
    assert np.array_equal(images, again)


def test_train_beta_vae_learns_and_leaves_the_global_rng_alone() -> None:
    from seethrough.bench.zoo.factors import factor_images
    from seethrough.representations import BetaVAE, train_beta_vae

    images, _ = factor_images(1, n=256)
    x = torch.from_numpy(images)
    state = torch.random.get_rng_state()
    vae = train_beta_vae(x, n_latents=3, n_steps=150, batch_size=64, lr=3e-3, hidden=32, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert isinstance(vae, BetaVAE) and not vae.training and vae.encode(x).shape == (256, 3)
    assert vae.history[-1]["reconstruction"] < 0.7 * vae.history[0]["reconstruction"]
    same = train_beta_vae(x, n_latents=3, n_steps=150, batch_size=64, lr=3e-3, hidden=32, seed=0)
    assert torch.equal(same.encode(x), vae.encode(x))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        train_beta_vae(x * 2, n_steps=1)
    with pytest.raises(InputError, match="BetaVAE for inputs"):
        train_beta_vae(x, vae=BetaVAE((5,)), n_steps=1)


def test_beta_vae_kl_term_is_the_closed_form_and_beta_scales_only_it() -> None:
    from torch.distributions import Normal, kl_divergence

    from seethrough.representations import BetaVAE
    from seethrough.representations.vae import _loss

    torch.manual_seed(0)
    vae = BetaVAE((6,), n_latents=3, hidden=8)
    x = torch.rand(16, 6)
    mean, log_var = vae.posterior(x)
    reference = kl_divergence(Normal(mean, (0.5 * log_var).exp()), Normal(0.0, 1.0)).sum() / 16
    one = _loss(vae, x, 1.0, torch.Generator().manual_seed(1))
    four = _loss(vae, x, 4.0, torch.Generator().manual_seed(1))
    assert torch.allclose(one[2], reference, atol=1e-5)
    assert torch.allclose(four[0] - four[1], 4.0 * one[2], atol=1e-5) and torch.equal(four[1], one[1])
    assert vae(x).requires_grad  # forward stays differentiable (encode is the no-grad reader)
