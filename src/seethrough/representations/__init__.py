"""seethrough.representations: what a layer represents, and how two representations compare.

Probes with control tasks (`probe`, `LinearProbe`, `MLPProbe`), concept erasure (`LeaceEraser`,
`erase`), concept vectors with a calibrated TCAV test (`tcav`). Similarity (linear CKA, streaming
CKA, CKA between the sites of two models, canonical correlations, SVCCA, PWCCA and the orthogonal
Procrustes distance). Sparse autoencoders (`SparseAutoencoder`, `site_activations`,
`loss_recovered`, `shared_latents`) and disentanglement metrics (`dci`, `mig`).
"""

from .cca import cca_correlations, procrustes, pwcca, svcca
from .cka import StreamingCKA, cka
from .concepts import TCAVResult, directional_derivatives, fit_cavs, tcav
from .disentanglement import DCI, dci, mig
from .erasure import Erasure, LeaceEraser, erase
from .probes import LinearProbe, MLPProbe, ProbeResult, probe
from .sae import SAE_KINDS, SparseAutoencoder
from .sae_sites import SpliceResult, loss_recovered, site_activations
from .sae_stability import shared_latents
from .similarity import SimilarityMatrix, cka_between

__all__ = ["cka", "StreamingCKA", "cka_between", "SimilarityMatrix", "cca_correlations", "svcca", "pwcca",
           "procrustes"]
__all__ += ["probe", "ProbeResult", "LinearProbe", "MLPProbe", "LeaceEraser", "erase", "Erasure", "tcav",
            "TCAVResult", "fit_cavs", "directional_derivatives"]
__all__ += ["SparseAutoencoder", "SAE_KINDS", "site_activations", "loss_recovered", "SpliceResult", "shared_latents",
            "dci", "DCI", "mig"]
