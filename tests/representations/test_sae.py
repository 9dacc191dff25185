"""Sparse autoencoders (issue #14): the estimator contract, TopK exactness, planted dictionaries, streaming,
saving, splicing into a model; and the outside contract check of DESIGN.md §6."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from models import TinyMLP, TinyTransformer, tokens
from torch import nn

from seethrough import Site, capture
from seethrough.bench.zoo.dictionaries import sparse_dictionary_data
from seethrough.core import InputError, LoadError, NotFittedError
from seethrough.representations import (
    SAE_KINDS,
    SparseAutoencoder,
    loss_recovered,
    shared_latents,
    site_activations,
)

ROOT = Path(__file__).resolve().parents[2]


def _x(n: int = 256, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _fit(x: torch.Tensor, **kw) -> SparseAutoencoder:
    params = {"n_latents": 16, "k": 3, "max_epochs": 3, **kw}
    return SparseAutoencoder(params.pop("n_latents"), **params).fit(x)


def test_init_stores_hyper_parameters_only_and_fit_validates() -> None:
    sae = SparseAutoencoder(0, kind="nope", k=-1)  # nothing is checked before fit
    assert (sae.n_latents, sae.kind, sae.k) == (0, "nope", -1)
    assert not [name for name in vars(sae) if name.endswith("_")]
    with pytest.raises(InputError, match="n_latents"):
        sae.fit(_x())
    with pytest.raises(InputError, match="kind"):
        SparseAutoencoder(4, kind="nope").fit(_x())
    with pytest.raises(InputError, match="k must be"):
        SparseAutoencoder(4, k=5).fit(_x())


@pytest.mark.parametrize("bad", [torch.full((4, 3), float("nan")), torch.ones(5), torch.ones(0, 3), "text", 3])
def test_bad_activations_are_refused_in_one_line(bad) -> None:
    with pytest.raises((InputError, TypeError)) as info:
        SparseAutoencoder(4, k=2, max_epochs=1).fit(bad)
    assert "\n" not in str(info.value)


def test_not_fitted_before_fit() -> None:
    sae = SparseAutoencoder(4, k=2)
    for call in (lambda: sae.encode(_x()), lambda: sae.decode(torch.zeros(2, 4)), lambda: sae.save("/tmp/never")):
        with pytest.raises(NotFittedError, match="fit"):
            call()


@pytest.mark.parametrize("kind", SAE_KINDS)
def test_every_kind_fits_with_unit_norm_decoder_rows(kind: str) -> None:
    x = _x()
    sae = _fit(x, kind=kind)
    assert sae.decoder_.shape == (16, 8) and sae.encoder_.shape == (16, 8)
    torch.testing.assert_close(sae.decoder_.norm(dim=1), torch.ones(16), atol=1e-5, rtol=0)
    codes = sae.encode(x)
    assert codes.shape == (256, 16) and bool((codes >= 0).all())
    assert sae.decode(codes).shape == x.shape
    assert sae.n_epochs_ == 3 and len(sae.history_) == 3 and not sae.converged_


def test_topk_codes_equal_a_row_by_row_reference() -> None:
    x = _x()
    sae = _fit(x, k=3)
    codes = sae.encode(x)
    pre = (x - sae.decoder_bias_) @ sae.encoder_.T + sae.encoder_bias_
    for row in range(x.shape[0]):  # the slow reference: sort each row, keep the 3 largest, ReLU
        expected = torch.zeros(16)
        order = sorted(range(16), key=lambda j: -float(pre[row, j]))[:3]
        expected[order] = torch.relu(pre[row, order])
        torch.testing.assert_close(codes[row], expected)
    assert int((codes != 0).sum(1).max()) <= 3


def test_encode_keeps_leading_axes() -> None:
    sae = _fit(_x())
    x = _x(24).reshape(2, 12, 8)
    torch.testing.assert_close(sae.encode(x).reshape(24, 16), sae.encode(x.reshape(24, 8)))


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    x = _x()
    a, b, c = _fit(x, seed=3), _fit(x, seed=3), _fit(x, seed=4)
    for name in ("encoder_", "encoder_bias_", "decoder_", "decoder_bias_"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.decoder_, c.decoder_)


def test_fit_forgets_earlier_fits() -> None:
    sae = _fit(_x(d=5))
    sae.fit(_x(d=8, seed=1))
    fresh = _fit(_x(d=8, seed=1))
    assert sae.decoder_.shape == (16, 8) and torch.equal(sae.decoder_, fresh.decoder_)


def test_scaling_the_activations_by_a_power_of_two_scales_the_codes() -> None:
    # training runs on rescaled activations, so a power-of-two rescaling (exact in floating point)
    # gives the same training run: the same directions and codes scaled by the same factor.
    x = _x()
    a, b = _fit(x), _fit(4 * x)
    assert torch.equal(a.decoder_, b.decoder_)
    torch.testing.assert_close(b.encode(4 * x), 4 * a.encode(x))


def test_a_one_shot_generator_is_read_once_and_a_re_iterable_once_per_epoch() -> None:
    x = _x()
    reads = []

    def generator():
        for i, chunk in enumerate(x.split(64)):
            reads.append(i)
            yield chunk

    with pytest.warns(UserWarning, match="read once"):
        sae = SparseAutoencoder(16, k=3).fit(generator())
    assert reads == [0, 1, 2, 3] and sae.n_epochs_ == 1 and not sae.converged_

    class Batches:
        iterations = 0

        def __iter__(self):
            Batches.iterations += 1
            return iter(x.split(64))

    SparseAutoencoder(16, k=3, max_epochs=4).fit(Batches())
    assert Batches.iterations == 4


def test_default_training_runs_to_the_stopping_rule() -> None:
    sae = SparseAutoencoder(16, k=3, batch_size=64).fit(_x())
    history = sae.history_
    best_before = min(history[:-sae.patience])
    assert sae.converged_  # the rule: `patience` epochs in a row without beating the best by the fraction tol
    assert all(h >= best_before * (1 - sae.tol) for h in history[-sae.patience:])


def test_topk_recovers_a_planted_dictionary() -> None:
    data = sparse_dictionary_data(7, n_features=32, d=16, mean_l0=3.0, n_samples=6000, noise=0.0)
    sae = SparseAutoencoder(64, k=3, batch_size=128, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it must converge, not hit the epoch cap
        sae.fit(data.activations)
    best = (data.dictionary @ sae.decoder_.T).max(1).values
    assert float(best.mean()) >= 0.9  # MMCS against the planted directions


def test_frozen_decoder_stays_at_its_random_initialisation() -> None:
    a = _fit(_x(), train_decoder=False)
    b = _fit(_x(seed=5), train_decoder=False)
    assert torch.equal(a.decoder_, b.decoder_)  # the decoder depends on the seed only
    assert not torch.equal(a.encoder_, b.encoder_)


def test_auxk_trains_latents_that_never_fire() -> None:
    # 2-D data in 8 dimensions with k=1: a handful of latents win every row and the rest never fire.
    # Without AuxK a latent that never fires gets no gradient, so its encoder row stays equal to its
    # (tied) decoder initialisation; AuxK trains every dead latent on the live latents' residual.
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1024, 2, generator=g) @ torch.randn(2, 8, generator=g) + 0.01 * torch.randn(1024, 8, generator=g)
    common = {"n_latents": 32, "k": 1, "max_epochs": 30, "dead_after": 512, "batch_size": 64}
    without, with_aux = _fit(x, aux_coefficient=0.0, **common), _fit(x, aux_coefficient=1 / 32, **common)
    assert int(without.dead_.sum()) >= 10
    assert int((without.encoder_ == without.decoder_).all(1).sum()) >= 5  # never fired, never moved
    assert int((with_aux.encoder_ == with_aux.decoder_).all(1).sum()) == 0


def test_batchtopk_keeps_k_per_row_on_average_and_uses_a_threshold_afterwards() -> None:
    x = _x(512)
    sae = _fit(x, kind="batchtopk", k=3, max_epochs=10)
    assert bool((sae.threshold_ > 0).all()) and len(set(sae.threshold_.tolist())) == 1
    assert 1.5 <= float((sae.encode(x) != 0).sum(1).float().mean()) <= 6.0


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    x = _x()
    for kind in SAE_KINDS:
        sae = _fit(x, kind=kind)
        sae.save(tmp_path / f"{kind}.safetensors")
        back = SparseAutoencoder.load(tmp_path / f"{kind}.safetensors")
        assert back.get_params() == sae.get_params() and back.history_ == sae.history_
        assert torch.equal(back.encode(x), sae.encode(x)) and torch.equal(back.dead_, sae.dead_)
    (tmp_path / "topk.safetensors.json").unlink()
    with pytest.raises(LoadError, match="sidecar"):
        SparseAutoencoder.load(tmp_path / "topk.safetensors")


def test_site_activations_flatten_positions_into_rows_and_re_run_the_model() -> None:
    model, x = TinyTransformer(), tokens()
    batches = site_activations(model, x, "blocks.0", batch_size=2)
    value = capture(model, x, ["blocks.0"])["blocks.0"]
    first, second = torch.cat(list(batches)), torch.cat(list(batches))
    torch.testing.assert_close(first, value.reshape(-1, value.shape[-1]))
    assert torch.equal(first, second)


def _perfect(d: int) -> SparseAutoencoder:
    """A hand-built 'fitted' ReLU SAE that reconstructs exactly: latents ±e_i."""
    sae = SparseAutoencoder(2 * d, kind="relu")
    eye = torch.eye(d)
    sae.encoder_ = sae.decoder_ = torch.cat([eye, -eye])
    sae.encoder_bias_, sae.decoder_bias_ = torch.zeros(2 * d), torch.zeros(d)
    sae.threshold_ = torch.zeros(2 * d)
    return sae


def test_loss_recovered_of_an_exact_sae_is_one_and_of_an_empty_one_zero() -> None:
    model, x = TinyMLP(), _x(20, 4)
    exact = loss_recovered(model, x, "fc1", _perfect(8))
    assert exact.loss_recovered == pytest.approx(1.0, abs=1e-6)
    assert exact.explained_variance == pytest.approx(1.0, abs=1e-6) and exact.spliced_loss == pytest.approx(0, abs=1e-7)
    empty = _perfect(8)
    empty.encoder_bias_ = torch.full((16,), -1e6)  # never fires: decodes every row to decoder_bias_ = 0
    result = loss_recovered(model, x, "fc1", empty)
    assert result.loss_recovered == pytest.approx(0.0, abs=1e-6) and result.mean_l0 == 0


def test_loss_recovered_equals_a_hand_written_forward() -> None:
    model, x = TinyMLP(), _x(20, 4)
    labels = torch.arange(20) % 3
    sae = SparseAutoencoder(12, k=3, max_epochs=5).fit(site_activations(model, x, "fc1"))

    def loss(output: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(output, labels, reduction="none")

    result = loss_recovered(model, x, Site("fc1"), sae, loss=loss, ablation="mean", batch_size=20)
    with torch.no_grad():
        h = model.fc1(x)
        spliced = loss(model.forward_from_hidden(sae.decode(sae.encode(h)))).mean()
        ablated = loss(model.forward_from_hidden(h.mean(0).expand_as(h))).mean()
        clean = loss(model(x)).mean()
    assert result.spliced_loss == pytest.approx(float(spliced), rel=1e-5)
    assert result.ablated_loss == pytest.approx(float(ablated), rel=1e-5)
    assert result.loss_recovered == pytest.approx(float((ablated - spliced) / (ablated - clean)), rel=1e-4)


def test_numpy_activations_are_accepted() -> None:
    x = _x()
    assert torch.equal(_fit(x.numpy()).decoder_, _fit(x).decoder_)
    assert np.asarray(_fit(x).encode(x)).shape == (256, 16)


def test_shared_latents_of_a_permuted_copy_is_one_and_of_a_random_dictionary_near_zero() -> None:
    sae = _fit(_x(d=32), n_latents=32)
    permuted = SparseAutoencoder(32)
    order = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    permuted.decoder_ = sae.decoder_[order]
    assert shared_latents(sae, sae) == 1.0 and shared_latents(sae, permuted) == 1.0
    random = SparseAutoencoder(32)
    random.decoder_ = torch.nn.functional.normalize(torch.randn(32, 32, generator=torch.Generator().manual_seed(1)), dim=1)
    cos = sae.decoder_ @ random.decoder_.T
    slow = int((cos.max(1).values >= 0.7).sum())  # no one-to-one matching can share more than this
    assert shared_latents(sae, random) <= slow / 32 < 0.5
    with pytest.raises(InputError, match="widths"):
        shared_latents(sae, _fit(_x(d=5)))


def test_resampling_points_dead_latents_at_badly_reconstructed_rows() -> None:
    # 2-D data in 8 dimensions with k=1: most latents never fire. Resampling re-initialises each dead
    # latent's decoder row to the centred direction of a batch row (drawn by squared error), so its
    # decoder rows lie near the data's 2-D span (noise 0.01 and small rows aside: measured mean 0.975,
    # minimum 0.82); without it the dead rows stay random (a random unit row has about 0.5 in the span).
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(8, 2, generator=g)).Q  # (8, 2) orthonormal
    x = torch.randn(1024, 2, generator=g) @ basis.T + 0.01 * torch.randn(1024, 8, generator=g)
    common = {"n_latents": 32, "k": 1, "max_epochs": 4, "dead_after": 256, "batch_size": 64, "aux_coefficient": 0.0}
    plain = _fit(x, **common)
    resampled = _fit(x, dead_latents="resample", **common)
    in_span = (resampled.decoder_ @ basis).norm(dim=1)  # the norm of each unit row's part in the span
    assert resampled.n_resampled_ > 0 and plain.n_resampled_ == 0
    assert float(in_span.mean()) > 0.95 and float((in_span > 0.9).float().mean()) >= 0.85
    assert float((plain.decoder_ @ basis).norm(dim=1).mean()) < 0.7  # never fired, never moved: random rows
    with pytest.raises(InputError, match="dead_latents"):
        _fit(x, dead_latents="revive")
