"""Disentanglement metrics of a representation against known generative factors: DCI, MIG and SAP.

Representations / disentanglement (survey §5). `dci` follows Eastwood & Williams (2018) with the
importance matrix of gradient-boosted trees (as in Locatello et al.'s disentanglement_lib): one
model per factor predicts it from the codes, each code's importance is the trees' impurity-based
``feature_importances_``, and informativeness is the held-out accuracy (discrete factor) or R²
(continuous factor). `mig` is Chen et al.'s (2018) mutual information gap, in nats, on binned
codes. `sap` is Kumar et al.'s (2018) separated attribute predictability: per factor, the gap
between the two codes that predict it best on their own. A factor column whose values are all
integers is discrete; ``discrete=`` overrides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError
from ..core.results import Result, new_figure

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["dci", "mig", "sap", "sap_matrix", "DCI"]


def _matrix(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise InputTypeError(f"{name} must be an (n, k) numpy array or torch tensor, got {type(value).__name__}.")
    if value.ndim != 2 or value.shape[0] < 2 or value.shape[1] < 1:
        raise InputError(f"{name} must have shape (n, k) with n ≥ 2 and k ≥ 1, got {value.shape}.")
    out = value.astype(np.float64)
    if not np.isfinite(out).all():
        raise InputError(f"{name} contains NaN or inf; drop those rows first.")
    return out


def _pair(codes: Any, factors: Any) -> tuple[np.ndarray, np.ndarray]:
    c, f = _matrix(codes, "codes"), _matrix(factors, "factors")
    if c.shape[0] != f.shape[0]:
        raise InputError(f"codes have {c.shape[0]} rows but factors {f.shape[0]}; give one row per example to both.")
    return c, f


def _discrete(factors: np.ndarray, discrete: Any) -> np.ndarray:
    """One bool per factor column: given, or True where every value is an integer."""
    if discrete is None:
        return np.array([bool(np.all(factors[:, j] == np.round(factors[:, j]))) for j in range(factors.shape[1])])
    flags = np.asarray(discrete)
    if flags.dtype != bool or flags.shape != (factors.shape[1],):
        raise InputError(f"discrete must be None or {factors.shape[1]} bools (one per factor), got {discrete!r}.")
    return flags


def _entropy_base(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy of each row of ``p`` (rows sum to 1) in log base ``base`` (0 when base is 1)."""
    if base <= 1:
        return np.zeros(p.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(1) / np.log(base)


@dataclass(frozen=True)
class DCI(Result):
    """Eastwood & Williams' scores of a representation against factors.

    ``importance`` is ``(n_codes, n_factors)`` (each column sums to 1 unless a factor was not
    predictable at all); ``disentanglement`` is the importance-weighted mean over codes of
    ``1 − H_{n_factors}(row)``, ``completeness`` the mean over factors of ``1 − H_{n_codes}(column)``,
    ``informativeness`` the mean over factors of the held-out accuracy (discrete) or R² clipped
    to [0, 1] (continuous). ``model`` names the importance model.
    """

    disentanglement: float
    completeness: float
    informativeness: float
    importance: np.ndarray
    code_disentanglement: np.ndarray
    factor_completeness: np.ndarray
    factor_informativeness: np.ndarray
    discrete: np.ndarray
    model: str

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame({"factor": range(len(self.factor_completeness)), "discrete": self.discrete.tolist(),
                             "completeness": self.factor_completeness.tolist(),
                             "informativeness": self.factor_informativeness.tolist()})

    def plot(self) -> Figure:
        fig = new_figure(4, 3)
        ax = fig.add_subplot()
        image = ax.imshow(self.importance, aspect="auto", cmap="viridis", vmin=0)
        ax.set_xlabel("factor")
        ax.set_ylabel("code")
        ax.set_title(f"D {self.disentanglement:.2f}  C {self.completeness:.2f}  I {self.informativeness:.2f}",
                     fontsize=9)
        fig.colorbar(image, ax=ax, label="importance")
        return fig


def dci(codes: Any, factors: Any, *, discrete: Any = None, test_fraction: float = 0.3, n_estimators: int = 50,
        seed: int = 0) -> DCI:
    """Disentanglement, completeness and informativeness of ``codes`` against ``factors``.

    The importance model is scikit-learn's gradient-boosted trees (``GradientBoostingClassifier``
    for a discrete factor, ``GradientBoostingRegressor`` for a continuous one, ``n_estimators``
    trees, fitted on a random ``1 − test_fraction`` of the rows); importances are the trees'
    ``feature_importances_``; informativeness is scored on the held-out rows.

    Args:
        codes: ``(n, n_codes)`` array or tensor, the representation.
        factors: ``(n, n_factors)``; an all-integer column is a discrete factor.
        discrete: one bool per factor to override the rule above.
        test_fraction: share of rows held out for informativeness.
        n_estimators: trees per factor model.
        seed: the split and the trees.

    Example:
        >>> f = np.random.default_rng(0).integers(0, 4, (300, 2))
        >>> r = dci(f, f)
        >>> r.disentanglement > 0.95 and r.completeness > 0.95 and r.informativeness == 1.0
        True

    References:
        Eastwood & Williams 2018, "A framework for the quantitative evaluation of disentangled
        representations"; Locatello et al. 2019, "Challenging common assumptions in the unsupervised
        learning of disentangled representations" (gradient-boosted trees).
    """
    from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

    c, f = _pair(codes, factors)
    flags = _discrete(f, discrete)
    check_float("test_fraction", test_fraction, at_least=0.05, at_most=0.95)
    check_int("n_estimators", n_estimators, at_least=1)
    check_int("seed", seed, at_least=0)
    order = np.random.default_rng(seed).permutation(c.shape[0])
    n_test = max(1, int(round(test_fraction * c.shape[0])))
    test, train = order[:n_test], order[n_test:]
    if len(train) < 2:
        raise InputError(f"{c.shape[0]} rows leave too few to train on; pass more rows.")
    importance = np.zeros((c.shape[1], f.shape[1]))
    informativeness = np.zeros(f.shape[1])
    for j in range(f.shape[1]):
        # a discrete factor's classes are its distinct values (a non-integer column marked discrete too)
        target = np.unique(f[:, j], return_inverse=True)[1].astype(float) if flags[j] else f[:, j]
        if flags[j] and np.unique(target[train]).size < 2:
            importance[:, j], informativeness[j] = 0.0, float(np.mean(target[test] == target[train][0]))
            continue
        model: Any = (GradientBoostingClassifier if flags[j] else GradientBoostingRegressor)(
            n_estimators=n_estimators, random_state=seed)
        model.fit(c[train], target[train] if not flags[j] else target[train].astype(np.int64))
        importance[:, j] = np.abs(model.feature_importances_)
        if flags[j]:
            informativeness[j] = float(np.mean(model.predict(c[test]) == target[test].astype(np.int64)))
        else:
            informativeness[j] = float(np.clip(model.score(c[test], target[test]), 0.0, 1.0))
    total = importance.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        rows = np.where(importance.sum(1, keepdims=True) > 0, importance / importance.sum(1, keepdims=True), 0.0)
        cols = np.where(importance.sum(0, keepdims=True) > 0, importance / importance.sum(0, keepdims=True), 0.0)
    code_d = np.where(importance.sum(1) > 0, 1.0 - _entropy_base(rows, f.shape[1]), 0.0)
    weights = importance.sum(1) / total if total > 0 else np.zeros(c.shape[1])
    factor_c = np.where(importance.sum(0) > 0, 1.0 - _entropy_base(cols.T, c.shape[1]), 0.0)
    return DCI(disentanglement=float((weights * code_d).sum()), completeness=float(factor_c.mean()),
               informativeness=float(informativeness.mean()), importance=importance, code_disentanglement=code_d,
               factor_completeness=factor_c, factor_informativeness=informativeness, discrete=flags,
               model="gradient-boosted trees")


def _labels(column: np.ndarray, n_bins: int) -> np.ndarray:
    """Integer labels of a column: its distinct values when there are at most ``n_bins``, else equal-width bins."""
    values, labels = np.unique(column, return_inverse=True)
    if values.size <= n_bins:
        return labels
    edges = np.histogram_bin_edges(column, bins=n_bins)
    return np.digitize(column, edges[1:-1])


def _mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats of two integer label arrays (plug-in estimate from the joint histogram)."""
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / (pa * pb)), 0.0)
    return float(max(terms.sum(), 0.0))


def mig(codes: Any, factors: Any, *, discrete: Any = None, n_bins: int = 20) -> float:
    """The mutual information gap of ``codes`` against ``factors`` (Chen et al. 2018), in [0, 1].

    Every code column is binned into ``n_bins`` equal-width bins (a column with at most
    ``n_bins`` distinct values keeps them as they are); a discrete factor keeps its values and a
    continuous one is binned the same way. For each factor, the gap between the largest and the
    second-largest mutual information with a code (nats), divided by the factor's entropy (nats);
    the mean over factors. A constant factor (zero entropy) is left out.

    Example:
        >>> f = np.random.default_rng(0).integers(0, 4, (500, 2))
        >>> round(mig(f, f), 3)  # not 1: the plug-in MI of the two independent columns is small, not 0
        0.994

    Raises:
        InputError: every factor is constant, or fewer than 2 codes (no gap to take).

    References:
        Chen et al. 2018, "Isolating sources of disentanglement in variational autoencoders".
    """
    c, f = _pair(codes, factors)
    flags = _discrete(f, discrete)
    check_int("n_bins", n_bins, at_least=2)
    if c.shape[1] < 2:
        raise InputError(f"MIG needs at least 2 codes (a gap between the best and second-best), got {c.shape[1]}.")
    coded = [_labels(c[:, i], n_bins) for i in range(c.shape[1])]
    gaps = []
    for j in range(f.shape[1]):
        factor = np.unique(f[:, j], return_inverse=True)[1] if flags[j] else _labels(f[:, j], n_bins)
        entropy = _mutual_information(factor, factor)
        if entropy <= 0:
            continue
        info = sorted((_mutual_information(code, factor) for code in coded), reverse=True)
        gaps.append((info[0] - info[1]) / entropy)
    if not gaps:
        raise InputError("every factor is constant; MIG needs at least one factor that varies.")
    return float(np.mean(gaps))


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(test_fraction * n)))
    if n - n_test < 2:
        raise InputError(f"{n} rows leave too few to train on; pass more rows.")
    return order[n_test:], order[:n_test]


def sap_matrix(codes: Any, factors: Any, *, discrete: Any = None, test_fraction: float = 0.3,
               seed: int = 0) -> np.ndarray:
    """``(n_codes, n_factors)``: how well each code on its own predicts each factor (SAP's score matrix).

    A continuous factor's entry is the squared correlation of code and factor on the training rows
    (the R² of a one-variable linear regression); a discrete factor's is the held-out accuracy of
    a linear SVM (``LinearSVC(C=0.01, class_weight="balanced")``, as in disentanglement_lib) on
    that one standardised code. A constant code scores 0.
    """
    from sklearn.svm import LinearSVC

    c, f = _pair(codes, factors)
    flags = _discrete(f, discrete)
    check_float("test_fraction", test_fraction, at_least=0.05, at_most=0.95)
    check_int("seed", seed, at_least=0)
    train, test = _split(c.shape[0], test_fraction, seed)
    scores = np.zeros((c.shape[1], f.shape[1]))
    for j in range(f.shape[1]):
        target = f[:, j]
        for i in range(c.shape[1]):
            code = c[train, i]
            spread = code.std()
            if spread == 0:
                continue
            if not flags[j]:
                if target[train].std() > 0:
                    scores[i, j] = float(np.corrcoef(code, target[train])[0, 1] ** 2)
                continue
            labels = np.unique(target, return_inverse=True)[1]  # classes: the distinct values
            if np.unique(labels[train]).size < 2:
                scores[i, j] = float(np.mean(labels[test] == labels[train][0]))
                continue
            z = (c[:, i:i + 1] - code.mean()) / spread
            model = LinearSVC(C=0.01, class_weight="balanced", random_state=seed).fit(z[train], labels[train])
            scores[i, j] = float(np.mean(model.predict(z[test]) == labels[test]))
    return scores


def sap(codes: Any, factors: Any, *, discrete: Any = None, test_fraction: float = 0.3, seed: int = 0) -> float:
    """Kumar et al.'s separated attribute predictability of ``codes`` against ``factors``, in [0, 1].

    For each factor, the gap between the largest and second-largest entry of its column of
    `sap_matrix` (how well each code alone predicts it); the mean over factors. High when each
    factor is captured by one code only. A discrete factor's entries are accuracies of a strongly
    regularised linear classifier on one code: scored against themselves, the game's 3-valued
    factor reaches 1.0 but its 6-valued one about 0.32 (a gap of 0.15 over the other codes), so
    the factors themselves score about 0.75, not 1 (continuous factors reach 1).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> f = rng.uniform(size=(500, 2))
        >>> round(sap(f, f), 3), round(sap(np.column_stack([f[:, 0], f[:, 0]]), f[:, :1]), 3)
        (0.994, 0.0)

    Raises:
        InputError: fewer than 2 codes (no gap to take), or every factor constant (a constant factor
            is left out, as in `mig`).

    References:
        Kumar, Sattigeri & Balakrishnan 2018, "Variational inference of disentangled latent concepts
        from unlabeled observations".
    """
    scores = sap_matrix(codes, factors, discrete=discrete, test_fraction=test_fraction, seed=seed)
    if scores.shape[0] < 2:
        raise InputError(f"SAP needs at least 2 codes (a gap between the best and second-best), got {scores.shape[0]}.")
    varies = _matrix(factors, "factors").std(0) > 0
    if not varies.any():
        raise InputError("every factor is constant; SAP needs at least one factor that varies.")
    top = np.sort(scores[:, varies], axis=0)[::-1]  # a constant factor is left out, as in `mig`
    return float(np.mean(top[0] - top[1]))
