"""AUROC and Spearman's rho shared by the games: scikit-learn and scipy are the oracles, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from seethrough.core import InputError
from seethrough.evidence import auroc, spearman


@pytest.mark.parametrize("seed", range(5))
def test_auroc_and_spearman_match_the_peer_libraries_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(3, 20)).astype(float)  # many ties
    labels = np.arange(20) % 3 == 0
    expected = [roc_auc_score(labels, row) for row in scores]
    np.testing.assert_allclose(auroc(scores, labels), expected, rtol=1e-12)
    assert auroc(scores[0], labels) == pytest.approx(expected[0], abs=1e-12)
    other = rng.normal(size=(3, 20))
    np.testing.assert_allclose(spearman(scores, other), [spearmanr(a, b).statistic for a, b in zip(scores, other, strict=True)],
                               rtol=1e-10)


def test_constant_and_one_class_inputs() -> None:
    assert auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5
    assert spearman([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0  # a constant side has no ranking
    with pytest.raises(InputError, match="positive and one negative"):
        auroc([0.1, 0.2], [0, 0])
    with pytest.raises(InputError, match="labels"):
        auroc([0.1, 0.2, 0.3], [0, 1])
