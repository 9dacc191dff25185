"""Hygiene cases for sparse autoencoders and the disentanglement metrics (issue #14).

`site_activations` and `loss_recovered` run the model; the estimator, the metrics and the zoo's
generators take no model.
"""

from __future__ import annotations

from typing import Any

import torch
from hygiene import Case
from models import TinyMLP, vectors

from seethrough import Site
from seethrough.bench.zoo import dictionaries, factors
from seethrough.representations import (
    disentanglement,
    harvesting,
    sae,
    sae_latents,
    sae_sites,
    sae_stability,
    transcoder,
)


def _sae(width: int = 8) -> sae.SparseAutoencoder:
    x = torch.randn(64, width, generator=torch.Generator().manual_seed(0))
    return sae.SparseAutoencoder(12, k=3, max_epochs=2).fit(x)


def _transcoder() -> transcoder.Transcoder:
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    return transcoder.Transcoder(12, k=3, max_epochs=2).fit(x, torch.relu(x))


def _pairs(m: Any, x: torch.Tensor) -> torch.Tensor:
    source, target = transcoder.module_pairs(m, x, "act", batch_size=2)
    return torch.cat([torch.cat(list(source)), torch.cat(list(target))], dim=1)


def _harvest(m: Any, x: torch.Tensor) -> torch.Tensor:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return harvesting.harvest(m, x, "fc1", tmp, n_shards=2, batch_size=2).tensor()


def _latents(m: Any, x: torch.Tensor) -> torch.Tensor:
    return sae_latents.LatentModel(m, "fc1", _sae())(x)


def _activations(m: Any, x: torch.Tensor) -> torch.Tensor:
    return torch.cat(list(sae_sites.site_activations(m, x, "fc1", batch_size=2)))


CASES: list[Case] = [
    Case("site_activations", sae_sites.site_activations, TinyMLP, vectors, _activations, per_example=lambda r: r,
         invalid=(lambda m, x: sae_sites.site_activations(m, x, "nope"),
                  lambda m, x: sae_sites.site_activations(m, x, "fc1", batch_size=0))),
    Case("site_activations (train mode)", sae_sites.site_activations, TinyMLP, vectors, _activations, train_mode=True),
    Case("loss_recovered", sae_sites.loss_recovered, TinyMLP, vectors,
         lambda m, x: sae_sites.loss_recovered(m, x, Site("fc1"), _sae(), batch_size=2).spliced_loss,
         invalid=(lambda m, x: sae_sites.loss_recovered(m, x, "fc1", _sae(5)),
                  lambda m, x: sae_sites.loss_recovered(m, x, "fc1", _sae(), ablation="resample"),
                  lambda m, x: sae_sites.loss_recovered(m, x, "fc1", sae.SparseAutoencoder(12)))),
    Case("loss_recovered (mean ablation, train mode)", sae_sites.loss_recovered, TinyMLP, vectors,
         lambda m, x: sae_sites.loss_recovered(m, x, "fc1", _sae(), ablation="mean").ablated_loss, train_mode=True),
]

CASES += [
    Case("module_pairs", transcoder.module_pairs, TinyMLP, vectors, _pairs, per_example=lambda r: r,
         invalid=(lambda m, x: transcoder.module_pairs(m, x, "nope"),
                  lambda m, x: transcoder.module_pairs(m, x, "act", batch_size=0))),
    Case("loss_recovered (transcoder)", sae_sites.loss_recovered, TinyMLP, vectors,
         lambda m, x: sae_sites.loss_recovered(m, x, "act", _transcoder(), batch_size=2).spliced_loss,
         invalid=(lambda m, x: sae_sites.loss_recovered(m, x, Site("act", point="input"), _transcoder()),)),
    Case("harvest", harvesting.harvest, TinyMLP, vectors, _harvest, per_example=lambda r: r,
         invalid=(lambda m, x: harvesting.harvest(m, x, "nope", "/tmp/never-written"),
                  lambda m, x: harvesting.harvest(m, x, "fc1", "/tmp/never-written", n_shards=0))),
    Case("harvest (train mode)", harvesting.harvest, TinyMLP, vectors, _harvest, train_mode=True),
    Case("LatentModel", sae_latents.LatentModel, TinyMLP, vectors, _latents, per_example=lambda r: r,
         invalid=(lambda m, x: sae_latents.LatentModel(m, "nope", _sae()),
                  lambda m, x: sae_latents.LatentModel(m, "fc1", _sae(5))(x))),
]

EXEMPT: dict[Any, str] = {
    transcoder.Transcoder: "an estimator over activations; takes no model (module_pairs feeds it)",
    harvesting.Harvest: "a data source over stored files; takes no model",
    sae_latents.latent_finding: "builds a Finding from a fitted SAE; takes no model",
    sae_latents.latent_findings: "rewrites Findings; runs no model",
    sae.SparseAutoencoder: "an estimator over activations; takes no model (site_activations feeds it)",
    sae_sites.SpliceResult: "a result dataclass",
    sae_stability.shared_latents: "compares two fitted SAEs; takes no model",
    disentanglement.dci: "a metric over arrays; takes no model",
    disentanglement.mig: "a metric over arrays; takes no model",
    disentanglement.DCI: "a result dataclass",
    dictionaries.sparse_dictionary_data: "builds data",
    dictionaries.hierarchical_dictionary_data: "builds data",
    dictionaries.zipf_probabilities: "arithmetic on probabilities",
    dictionaries.SparseDictionaryData: "a data container",
    factors.generated_factors: "builds data",
    factors.GeneratedFactors: "a data container",
}
