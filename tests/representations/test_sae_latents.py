"""SAE latents as units (issue #14 item 1): LatentModel codes, exemplars through the neuron machinery,
latent findings and their steering check."""

from __future__ import annotations

import pytest
import torch
from models import TinyMLP, TinyTransformer, tokens
from torch import nn

from seethrough import Site, capture
from seethrough.core import InputError
from seethrough.evidence import Finding, validate
from seethrough.neurons import top_exemplars
from seethrough.representations import LatentModel, SparseAutoencoder, latent_finding, latent_findings


def _sae(d: int, seed: int = 0) -> SparseAutoencoder:
    return SparseAutoencoder(12, k=3, max_epochs=2, seed=seed).fit(torch.randn(64, d, generator=torch.Generator()
                                                                               .manual_seed(seed)))


def test_latent_codes_are_the_sae_codes_of_the_site_in_its_layout() -> None:
    model, x = TinyTransformer(), tokens()
    sae = _sae(8)
    value = capture(model, x, ["blocks.0"])["blocks.0"]
    codes = LatentModel(model, "blocks.0", sae)(**x)
    assert codes.shape == (*value.shape[:2], 12)
    torch.testing.assert_close(codes, sae.encode(value))


def test_top_exemplars_of_latents_equal_a_brute_force_ranking() -> None:
    model, x = TinyMLP(), torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    lm = LatentModel(model, "fc1", _sae(8))
    found = top_exemplars(lm, x, "latents", k=5, batch_size=7)
    codes = lm.sae.encode(model.fc1(x).detach())
    for latent in range(12):
        best = sorted(range(40), key=lambda i: (-float(codes[i, latent]), i))[:5]  # ties: lower index first
        assert found.indices[:, latent].tolist() == best
    assert not any(p.grad is not None for p in model.parameters())


def test_latent_findings_carry_the_decoder_row_at_the_model_site() -> None:
    lm = LatentModel(TinyMLP(), "fc1", _sae(8))
    units = Finding("units", "unit 3 at 'latents' responds to class 1", site=Site("latents"), units=[3], target=1,
                    score=0.8)
    (direction,) = latent_findings(lm, [units])
    assert direction.kind == "direction" and direction.site == Site("fc1") and direction.target == 1
    assert torch.equal(direction.direction, lm.sae.decoder_[3]) and direction.evidence["latent"] == 3
    with pytest.raises(InputError, match="one-unit"):
        latent_findings(lm, [Finding("units", "two", site=Site("latents"), units=[1, 2])])
    with pytest.raises(InputError, match="latent must be"):
        latent_finding(lm.sae, "fc1", 12)


def test_steering_a_latent_that_writes_a_class_validates_and_one_that_does_not_fails() -> None:
    # a site of 4 units read by a head where unit 0 writes class 0 and unit 3 nothing: a latent whose
    # decoder row is e0 raises class 0 when added, more than random directions of its norm; e3 does not.
    model = nn.Sequential(nn.Linear(2, 4), nn.Identity(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [0.5, 0.5], [0, 0]]))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[4.0, 0, 0, 0], [0, 4.0, 0, 0]]))
        model[2].bias.zero_()
    sae = SparseAutoencoder(4, kind="relu")
    sae.encoder_ = sae.decoder_ = torch.eye(4)
    sae.encoder_bias_, sae.decoder_bias_, sae.threshold_ = torch.zeros(4), torch.zeros(4), torch.zeros(4)
    x = torch.rand(64, 2, generator=torch.Generator().manual_seed(0))
    writes = validate(latent_finding(sae, "1", 0, target=0), model, x, steer=1.0, n_controls=40)
    silent = validate(latent_finding(sae, "1", 3, target=0), model, x, steer=1.0, n_controls=40)
    assert writes.validated and writes.p_value < 0.05 and writes.effect > 0
    assert not silent.validated and abs(silent.effect) < 1e-6
    with pytest.raises(InputError, match="steer"):
        validate(Finding("units", "u", site=Site("1"), units=[0], target=0), model, x, steer=1.0)
