"""seethrough.representations: what a layer represents, and how two representations compare.

Today: similarity (linear CKA, streaming CKA, CKA between the sites of two models, canonical
correlations, SVCCA, PWCCA and the orthogonal Procrustes distance).
"""

from .cca import cca_correlations, procrustes, pwcca, svcca
from .cka import StreamingCKA, cka
from .similarity import SimilarityMatrix, cka_between

__all__ = ["cka", "StreamingCKA", "cka_between", "SimilarityMatrix", "cca_correlations", "svcca", "pwcca",
           "procrustes"]
