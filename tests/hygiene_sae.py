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
from seethrough.representations import disentanglement, sae, sae_sites, sae_stability


def _sae(width: int = 8) -> sae.SparseAutoencoder:
    x = torch.randn(64, width, generator=torch.Generator().manual_seed(0))
    return sae.SparseAutoencoder(12, k=3, max_epochs=2).fit(x)


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

EXEMPT: dict[Any, str] = {
    sae.SparseAutoencoder: "an estimator over activations; takes no model (site_activations feeds it)",
    sae_sites.SpliceResult: "a result dataclass",
    sae_stability.shared_latents: "compares two fitted SAEs; takes no model",
    disentanglement.dci: "a metric over arrays; takes no model",
    disentanglement.mig: "a metric over arrays; takes no model",
    disentanglement.DCI: "a result dataclass",
    dictionaries.sparse_dictionary_data: "builds data",
    dictionaries.zipf_probabilities: "arithmetic on probabilities",
    dictionaries.SparseDictionaryData: "a data container",
    factors.generated_factors: "builds data",
    factors.GeneratedFactors: "a data container",
}
