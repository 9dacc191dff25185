"""seethrough.representations: what a layer represents, and how two representations compare.

Probes with control tasks (`probe`, `LinearProbe`, `MLPProbe`), concept erasure (`LeaceEraser`,
`erase`), concept vectors with a calibrated TCAV test (`tcav`). Similarity (linear CKA, streaming
CKA, CKA between the sites of two models, canonical correlations, SVCCA, PWCCA and the orthogonal
Procrustes distance). Sparse autoencoders (`SparseAutoencoder`, `site_activations`,
`loss_recovered`, `shared_latents`) and disentanglement metrics (`dci`, `mig`).
"""

from .attention import AttentionMaps, attention_flow, attention_patterns, attention_rollout, flow, rollout
from .cca import cca_correlations, procrustes, pwcca, svcca
from .cka import MAX_KERNEL_ROWS, StreamingCKA, cka, debiased_cka, kernel_cka
from .concept_tests import ConceptTests, tcav_concepts
from .concepts import TCAVResult, directional_derivatives, fit_cavs, tcav
from .disentanglement import DCI, dci, mig, sap, sap_matrix
from .erasure import Erasure, INLPEraser, LeaceEraser, erase
from .harvesting import Harvest, harvest
from .lenses import LensResult, TunedLens, logit_lens, module_readout
from .probes import LinearProbe, MLPProbe, ProbeResult, probe
from .sae import DEAD_LATENTS, SAE_KINDS, SparseAutoencoder
from .sae_latents import LatentModel, latent_finding, latent_findings
from .sae_sites import SpliceResult, loss_recovered, site_activations
from .sae_stability import shared_latents
from .similarity import INDICES, SimilarityMatrix, cka_between, compare_sites
from .transcoder import Transcoder, module_pairs
from .vae import BetaVAE, train_beta_vae
from .steering import Steering, steer

__all__ = ["cka", "StreamingCKA", "cka_between", "SimilarityMatrix", "cca_correlations", "svcca", "pwcca",
           "procrustes"]
__all__ += ["probe", "ProbeResult", "LinearProbe", "MLPProbe", "LeaceEraser", "erase", "Erasure", "tcav",
            "TCAVResult", "fit_cavs", "directional_derivatives"]
__all__ += ["SparseAutoencoder", "SAE_KINDS", "site_activations", "loss_recovered", "SpliceResult", "shared_latents",
            "dci", "DCI", "mig"]
__all__ += ["INLPEraser", "steer", "Steering", "tcav_concepts", "ConceptTests"]
__all__ += ["attention_patterns", "attention_rollout", "attention_flow", "rollout", "flow", "AttentionMaps",
            "logit_lens", "TunedLens", "LensResult", "module_readout"]
__all__ += ["sap", "sap_matrix", "BetaVAE", "train_beta_vae"]
__all__ += ["Transcoder", "module_pairs", "harvest", "Harvest", "LatentModel", "latent_finding", "latent_findings",
            "DEAD_LATENTS"]
__all__ += ["debiased_cka", "kernel_cka", "MAX_KERNEL_ROWS", "compare_sites", "INDICES"]
