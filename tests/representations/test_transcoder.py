"""Transcoders (issue #14 item 1): fit on a module's (input, output) pairs, the export algebra, a planted
sparse computation, streaming pairs, saving, and splicing in place of the module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from models import TinyMLP, TinyTransformer, tokens
from torch import nn

from seethrough import Site, capture
from seethrough.bench.zoo.dictionaries import sparse_dictionary_data
from seethrough.core import InputError, LoadError
from seethrough.representations import SparseAutoencoder, Transcoder, loss_recovered, module_pairs


def _pairs(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, torch.relu(x @ torch.randn(6, 4, generator=g))


def test_scaling_input_and_output_by_powers_of_two_scales_the_codes_by_the_output_factor() -> None:
    # training runs on separately rescaled inputs and outputs, so powers of two (exact in floating point)
    # give the same run: the same decoder, codes and prediction scaled by the output's factor.
    x, y = _pairs()
    a = Transcoder(16, k=3, max_epochs=3).fit(x, y)
    b = Transcoder(16, k=3, max_epochs=3).fit(4 * x, 2 * y)
    assert torch.equal(a.decoder_, b.decoder_)
    torch.testing.assert_close(b.encode(4 * x), 2 * a.encode(x))
    torch.testing.assert_close(b.decode(b.encode(4 * x)), 2 * a.decode(a.encode(x)))
    torch.testing.assert_close(a.decoder_.norm(dim=1), torch.ones(16), atol=1e-5, rtol=0)
    assert a.encoder_.shape == (16, 6) and a.decoder_.shape == (16, 4)


def test_transcoder_recovers_a_planted_sparse_computation() -> None:
    # inputs are sparse codes through one dictionary, outputs the same codes through another: the
    # transcoder's decoder rows must find the output dictionary (MMCS against the planted rows).
    data = sparse_dictionary_data(3, n_features=24, d=12, mean_l0=3.0, n_samples=3000, noise=0.0)
    out = torch.randn(24, 10, generator=torch.Generator().manual_seed(9))
    out /= out.norm(dim=1, keepdim=True)
    tc = Transcoder(48, k=3, batch_size=256).fit(data.activations, data.codes @ out)
    assert tc.converged_
    assert float((out @ tc.decoder_.T).max(1).values.mean()) >= 0.9


def test_targets_are_required_and_aligned() -> None:
    x, y = _pairs()
    with pytest.raises(TypeError, match="targets"):
        Transcoder(8, k=2).fit(x)
    with pytest.raises(InputError, match="rows"):
        Transcoder(8, k=2, max_epochs=1).fit(x, y[:-1])
    with pytest.raises(InputError, match="fewer batches"):
        Transcoder(8, k=2, max_epochs=1).fit(list(x.split(64)), list(y.split(64))[:-1])
    with pytest.raises(TypeError, match="same form"):
        Transcoder(8, k=2, max_epochs=1).fit(list(x.split(64)), y)


def test_module_pairs_stream_the_module_input_and_output() -> None:
    model, x = TinyTransformer(), tokens()
    source, target = module_pairs(model, x, "blocks.0.mlp", batch_size=2)
    values = capture(model, x, [Site("blocks.0.mlp", point="input"), Site("blocks.0.mlp")])
    given, made = values[Site("blocks.0.mlp", point="input")], values[Site("blocks.0.mlp")]
    torch.testing.assert_close(torch.cat(list(source)), given.reshape(-1, given.shape[-1]))
    torch.testing.assert_close(torch.cat(list(target)), made.reshape(-1, made.shape[-1]))


def test_splicing_a_transcoder_equals_a_hand_written_forward() -> None:
    model, x = TinyMLP(), torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    tc = Transcoder(16, k=4, max_epochs=20).fit(*module_pairs(model, x, "act", batch_size=8))
    labels = torch.arange(40) % 3

    def loss(output: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(output, labels, reduction="none")

    result = loss_recovered(model, x, "act", tc, loss=loss, batch_size=40)
    with torch.no_grad():
        h = model.fc1(x)
        spliced = loss(model.fc2(tc.decode(tc.encode(h)))).mean()
        ablated = loss(model.fc2(torch.zeros_like(h))).mean()
        clean = loss(model(x)).mean()
        variance = 1 - float(((tc.decode(tc.encode(h)) - torch.relu(h)) ** 2).sum()
                             / ((torch.relu(h) - torch.relu(h).mean(0)) ** 2).sum())
    assert result.spliced_loss == pytest.approx(float(spliced), rel=1e-5)
    assert result.loss_recovered == pytest.approx(float((ablated - spliced) / (ablated - clean)), rel=1e-4)
    assert result.explained_variance == pytest.approx(variance, rel=1e-4, abs=1e-5)
    with pytest.raises(InputError, match="output site"):
        loss_recovered(model, x, Site("act", point="input"), tc)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    x, y = _pairs()
    tc = Transcoder(16, k=3, max_epochs=2, kind="jumprelu").fit(x, y)
    tc.save(tmp_path / "tc.safetensors")
    back = Transcoder.load(tmp_path / "tc.safetensors")
    assert isinstance(back, Transcoder) and back.get_params() == tc.get_params()
    assert torch.equal(back.encode(x), tc.encode(x)) and torch.equal(back.input_bias_, tc.input_bias_)
    with pytest.raises(LoadError, match="SparseAutoencoder sidecar"):
        SparseAutoencoder.load(tmp_path / "tc.safetensors")
