"""seethrough.representations: what a layer represents, and how two representations compare.

Today: similarity (linear CKA, streaming CKA, CKA between the sites of two models, canonical
correlations, SVCCA, PWCCA and the orthogonal Procrustes distance).
"""

from .similarity import (
    SimilarityMatrix,
    StreamingCKA,
    cca_correlations,
    cka,
    cka_between,
    procrustes,
    pwcca,
    svcca,
)

__all__ = ["cka", "StreamingCKA", "cka_between", "SimilarityMatrix", "cca_correlations", "svcca", "pwcca",
           "procrustes"]
