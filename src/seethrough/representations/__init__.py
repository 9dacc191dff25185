"""seethrough.representations: what a layer represents, and how two representations compare.

Probes with control tasks (`probe`, `LinearProbe`, `MLPProbe`), concept erasure (`LeaceEraser`,
`INLPEraser`, `erase`) and steering (`steer`), concept vectors with a calibrated TCAV test (`tcav`,
`tcav_concepts`). Similarity (linear, debiased and kernel CKA, streaming CKA, layer-by-layer
matrices with nulls and CIs, canonical correlations, SVCCA, PWCCA and the orthogonal Procrustes
distance). Tokens and attention (patterns, rollout, flow; logit and tuned lenses). Sparse
autoencoders and transcoders (`SparseAutoencoder`, `Transcoder`, `harvest`, `loss_recovered`,
`LatentModel`), disentanglement (`dci`, `mig`, `sap`, a beta-VAE), self-explaining models (concept
bottlenecks with a leakage test, prototype networks) and adversarial training (`fgsm`, `pgd`,
`adversarial_training`, `compare_twins`).
"""

from .adversarial import TwinComparison, adversarial_training, compare_twins, fgsm, pgd, robust_accuracy
from .attention import AttentionMaps, attention_flow, attention_patterns, attention_rollout, flow, rollout
from .bottleneck import (
    BOTTLENECK_MODES,
    HEAD_INPUTS,
    ConceptBottleneck,
    Leakage,
    intervene,
    leakage_test,
    train_concept_bottleneck,
)
from .cca import cca_correlations, procrustes, pwcca, svcca
from .cka import MAX_KERNEL_ROWS, StreamingCKA, cka, debiased_cka, kernel_cka
from .concept_tests import ConceptTests, tcav_concepts
from .concepts import TCAVResult, directional_derivatives, fit_cavs, tcav
from .disentanglement import DCI, dci, mig, sap, sap_matrix
from .erasure import Erasure, INLPEraser, LeaceEraser, erase
from .harvesting import Harvest, harvest
from .lenses import LensResult, TunedLens, lens_findings, logit_lens, module_readout
from .probes import LinearProbe, MLPProbe, ProbeResult, probe
from .prototypes import (
    PrototypeNetwork,
    PrototypeSource,
    receptive_box,
    similarity_maps,
    train_prototype_network,
)
from .sae import DEAD_LATENTS, SAE_KINDS, SparseAutoencoder
from .sae_latents import LatentModel, latent_finding, latent_findings
from .sae_sites import SpliceResult, loss_recovered, site_activations
from .sae_stability import shared_latents
from .similarity import INDICES, SimilarityMatrix, cka_between, compare_sites
from .steering import Steering, steer
from .transcoder import Transcoder, module_pairs
from .vae import BetaVAE, train_beta_vae

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
__all__ += ["fgsm", "pgd", "robust_accuracy", "adversarial_training", "compare_twins", "TwinComparison"]
__all__ += ["debiased_cka", "kernel_cka", "MAX_KERNEL_ROWS", "compare_sites", "INDICES"]
__all__ += ["ConceptBottleneck", "train_concept_bottleneck", "intervene", "leakage_test", "Leakage", "BOTTLENECK_MODES",
            "HEAD_INPUTS", "PrototypeNetwork", "train_prototype_network", "similarity_maps", "PrototypeSource",
            "receptive_box"]
__all__ += ["lens_findings"]
