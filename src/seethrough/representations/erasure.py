"""Concept erasure: is what a probe decodes *used*? Erase it (LEACE) and measure the behaviour change.

Representations / probes, the causal follow-up (survey §5.6). `LeaceEraser` is the closed-form
least-squares concept eraser of Belrose et al. (2023): after erasure the features' covariance with
the one-hot labels is zero, so no linear classifier beats a constant predictor. `erase` fits it on
a site's labelled values, patches the model with the erased values (through `core.patch`) and
compares the change in the model's predictions with the changes from erasing control concepts
(the same labels shuffled, so the same rank and frequencies): "decodable" (`probe`) and "used"
(`erase`) are separate verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from torch import Tensor, nn

from ..core.batching import batches
from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError, NotFittedError
from ..core.inputs import validate_inputs
from ..core.results import Result, new_figure
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from ._examples import (
    _as_labels,
    _as_matrix,
    behaviour_changes,
    collect_examples,
    control_labels,
    is_batch_stream,
    labelled_chunks,
)
from .probes import LinearProbe

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["LeaceEraser", "INLPEraser", "erase", "Erasure"]


class _Eraser(BaseEstimator, TransformerMixin):  # type: ignore[misc]  # sklearn ships no stubs
    """Shared by the erasers: ``r(x) = x - (x - mean_) proj_ᵀ`` on arrays and as a `patch` callback."""

    mean_: Tensor
    proj_: Tensor
    n_features_in_: int

    def transform(self, X: Any) -> Tensor:
        """The erased features ``x - (x - μ) proj_ᵀ`` as float64 ``(n, d)``."""
        if not hasattr(self, "proj_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) first.")
        x = _as_matrix(X)
        if x.shape[1] != self.n_features_in_:
            raise InputError(f"X has {x.shape[1]} features but the eraser was fitted on {self.n_features_in_}.")
        return x - (x - self.mean_) @ self.proj_.T

    def edit(self) -> Callable[[Tensor, Site], Tensor]:
        """A `patch` callback applying the erasure to each example's value (flattened) or each position's vector."""
        if not hasattr(self, "proj_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) first.")
        d = self.n_features_in_

        def apply(value: Tensor, site: Site) -> Tensor:
            flat = value.reshape(-1, d) if value.ndim == 3 and value.shape[-1] == d else value.reshape(value.shape[0], -1)
            if flat.shape[1] != d:
                raise InputError(f"{site!r}: the eraser was fitted on {d} features but the value has shape "
                                 f"{tuple(value.shape)}.")
            mean, proj = self.mean_.to(flat), self.proj_.to(flat)
            return (flat - (flat - mean) @ proj.T).reshape(value.shape)

        return apply


class LeaceEraser(_Eraser):
    """LEACE: the least-squares linear eraser of a discrete concept (Belrose et al., 2023).

    ``fit(X, y)`` learns ``r(x) = x - W⁺ P W (x - μ)`` with ``W = Σ^{-1/2}`` (the whitening map of
    the features' covariance, pseudo-inverse on its null space) and ``P`` the orthogonal projection
    onto the column space of ``W Σ_{xz}``, ``z`` the one-hot labels. Then ``Cov(r(x), z) = 0``
    exactly (up to float64 rounding), the smallest such edit in the Mahalanobis norm.

    Args:
        rcond: eigenvalues (singular values) below ``rcond`` times the largest are treated as zero.

    Attributes:
        mean_: ``(d,)`` the features' mean.
        proj_: ``(d, d)`` the oblique projection ``W⁺ P W`` that is subtracted.
        rank_: the rank of the erased subspace (at most ``n_classes - 1``).

    Example:
        >>> x = torch.tensor([[0.0, 1.0], [2.0, 1.5], [0.5, -1.0], [2.5, 0.0]]); y = torch.tensor([0, 1, 0, 1])
        >>> e = LeaceEraser().fit(x, y)
        >>> erased = e.transform(x)
        >>> abs(float(((erased[:, 0] - erased[:, 0].mean()) * (y - 0.5)).mean())) < 1e-9
        True

    References:
        Belrose et al., "LEACE: Perfect linear concept erasure in closed form", NeurIPS 2023.
    """

    def __init__(self, rcond: float = 1e-10) -> None:
        self.rcond = rcond

    def fit(self, X: Any, y: Any) -> LeaceEraser:
        """Fit on ``(n, d)`` features and ``(n,)`` integer labels; returns self."""
        rcond = check_float("rcond", self.rcond, at_least=0.0, at_most=1.0)
        x = _as_matrix(X)
        labels = _as_labels(y, x.shape[0])
        classes, codes = torch.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise InputError(f"y holds a single class ({classes.tolist()}); there is no concept to erase.")
        z = torch.nn.functional.one_hot(codes, len(classes)).double()
        n = x.shape[0]
        self.mean_ = x.mean(0)
        xc = x - self.mean_
        sigma = xc.T @ xc / n
        cross = xc.T @ (z - z.mean(0)) / n  # (d, k)
        evals, evecs = torch.linalg.eigh(sigma)
        keep = evals > rcond * evals.max().clamp_min(1e-300)
        root = evals.clamp_min(0).sqrt()
        inv_root = torch.where(keep, 1.0 / root.clamp_min(1e-300), torch.zeros_like(root))
        whiten = evecs @ torch.diag(inv_root) @ evecs.T  # W = Σ^{-1/2} (pseudo-inverse)
        unwhiten = evecs @ torch.diag(torch.where(keep, root, torch.zeros_like(root))) @ evecs.T  # W⁺ = Σ^{1/2}
        u, s, _ = torch.linalg.svd(whiten @ cross, full_matrices=False)
        basis = u[:, s > rcond * s.max().clamp_min(1e-300)] if float(s.max()) > 0 else u[:, :0]
        self.rank_ = int(basis.shape[1])
        self.proj_ = unwhiten @ basis @ basis.T @ whiten
        self.classes_ = classes.numpy()
        self.n_features_in_ = x.shape[1]
        return self



class INLPEraser(_Eraser):
    """Iterative nullspace projection (Ravfogel et al., 2020): project out linear classifiers until none decodes.

    Each iteration fits a `LinearProbe` (L2 logistic regression, no standardisation) on the centred
    features projected so far, on all but a held-out ``test_fraction`` of the rows; if its held-out
    accuracy beats the majority rate by at least ``min_gain``, its weight vectors join the removed
    subspace (orthonormalised), else the iterations stop. The edit is the orthogonal projection
    ``r(x) = x - (x - μ) Q`` with ``Q`` the projection onto the removed subspace: unlike LEACE it
    removes whole directions (more than the concept's rank where a classifier keeps finding some)
    and guarantees nothing about the covariance; it answers "does a *classifier* still decode it".

    Args:
        n_iterations: at most this many classifiers (each removes up to ``n_classes - 1`` directions, 1 if binary).
        C: the classifiers' inverse regularisation.
        min_gain: the held-out accuracy over the majority rate below which the iterations stop.
        test_fraction: rows held out for the stopping check.
        seed: the held-out split's seed.

    Attributes:
        mean_: ``(d,)`` the features' mean.
        proj_: ``(d, d)`` the orthogonal projection onto the removed subspace (symmetric, idempotent).
        rank_: its dimension.
        accuracies_: the held-out accuracy of each iteration's classifier (the last one failed the check
            unless ``n_iterations`` was reached).
        majority_: the held-out majority rate.

    Example:
        >>> x = torch.randn(400, 3, generator=torch.Generator().manual_seed(0)); y = (x[:, 0] > 0).long()
        >>> e = INLPEraser().fit(x, y)
        >>> e.rank_, round(float(e.proj_[0, 0]), 2)
        (1, 1.0)

    References:
        Ravfogel et al., "Null It Out: Guarding Protected Attributes by Iterative Nullspace Projection", ACL 2020.
    """

    def __init__(self, n_iterations: int = 10, *, C: float = 1.0, min_gain: float = 0.01, test_fraction: float = 0.2,
                 seed: int = 0) -> None:
        self.n_iterations = n_iterations
        self.C = C
        self.min_gain = min_gain
        self.test_fraction = test_fraction
        self.seed = seed

    def fit(self, X: Any, y: Any) -> INLPEraser:
        """Fit on ``(n, d)`` features and ``(n,)`` integer labels; returns self."""
        n_iterations = check_int("n_iterations", self.n_iterations, at_least=1)
        gain = check_float("min_gain", self.min_gain, at_least=0.0, at_most=1.0)
        fraction = check_float("test_fraction", self.test_fraction, at_least=1e-6, at_most=0.9)
        check_int("seed", self.seed)
        x = _as_matrix(X)
        labels = _as_labels(y, x.shape[0])
        classes, codes = torch.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise InputError(f"y holds a single class ({classes.tolist()}); there is no concept to erase.")
        n, d = x.shape
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(self.seed)))
        n_test = max(1, round(fraction * n))
        if n - n_test < 2:
            raise InputError(f"{n} rows cannot be split into train and held-out rows; give more examples.")
        test, train = order[:n_test], order[n_test:]
        self.mean_ = x.mean(0)
        xc = x - self.mean_
        counts = torch.bincount(codes[test], minlength=len(classes))
        self.majority_ = float(counts.max()) / n_test
        basis = torch.zeros(d, 0, dtype=torch.float64)
        self.accuracies_: list[float] = []
        for _ in range(n_iterations):
            projected = xc - xc @ basis @ basis.T
            if len(torch.unique(codes[train])) < 2:
                break
            clf = LinearProbe(C=self.C, standardize=False, tol=1e-6).fit(projected[train], codes[train])
            accuracy = float(clf.score(projected[test], codes[test]))
            self.accuracies_.append(accuracy)
            if accuracy - self.majority_ < gain:
                break
            w = torch.as_tensor(clf.coef_, dtype=torch.float64).T  # (d, rows)
            w = w - basis @ (basis.T @ w)  # only what is new
            u, s, _ = torch.linalg.svd(w, full_matrices=False)
            new = u[:, s > 1e-10 * max(float(s.max()), 1e-300)]
            if new.shape[1] == 0:
                break
            basis = torch.cat([basis, new], 1)
            if basis.shape[1] >= d:
                break
        self.rank_ = int(basis.shape[1])
        self.proj_ = basis @ basis.T
        self.classes_ = classes.numpy()
        self.n_features_in_ = d
        return self


@dataclass(frozen=True)
class Erasure(Result):
    """How much erasing a concept at a site changes the model, against erasing control concepts.

    Attributes:
        site: where the concept was erased.
        change: the behaviour change of erasing the concept (mean |Δ metric|, or the fraction of
            predictions that change with the default metric).
        control_changes: the same for each control concept (the labels shuffled by group).
        p_value: ``(1 + #{controls ≥ change}) / (1 + n_controls)``.
        used: ``p_value ≤ alpha``: the model uses the concept more than an arbitrary concept of the
            same rank.
        rank: dimension of the erased subspace.
        residual_covariance: largest |covariance| between the erased features and the one-hot labels.
    """

    site: Site
    change: float
    control_changes: Tensor
    p_value: float
    used: bool
    rank: int
    residual_covariance: float

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame({"site": [self.site.path], "change": [self.change],
                             "control_mean": [float(self.control_changes.mean())], "p_value": [self.p_value],
                             "used": [self.used], "rank": [self.rank]})

    def plot(self) -> Figure:
        fig = new_figure(4, 2.5)
        ax = fig.add_subplot()
        ax.hist(self.control_changes.tolist(), bins=10, color="C7", label="control concepts")
        ax.axvline(self.change, color="C3", label="concept")
        ax.set_xlabel("behaviour change after erasure")
        ax.set_title(f"erasure at {self.site.path}: p = {self.p_value:.3f}", fontsize=9)
        ax.legend(fontsize=7)
        return fig


def erase(model: nn.Module, inputs: Inputs | Iterable[Inputs], labels: Any, site: Site | str, *, groups: Any | None = None,
          metric: Callable[[Any], Tensor] | None = None, n_controls: int = 20, alpha: float = 0.05,
          seed: int = 0, batch_size: int = 256, eraser: Any | None = None) -> Erasure:
    """Erase the concept ``labels`` at ``site`` (LEACE or INLP) and measure how much the model's behaviour changes.

    The eraser is fitted on the site's labelled values (streamed as `probe` reads them: only the
    labelled rows of each chunk are kept) and applied to the whole value of every input (every position of a sequence site). The behaviour change is the
    fraction of predictions (argmax of the output's last dim, every row and position) that differ
    from the unedited model, or ``mean |metric_after - metric_before|`` with ``metric``. Each
    control erases a concept with the same groups' labels shuffled (`control_labels`): same rank,
    same label frequencies, no relation to the property.

    Args:
        model: any ``nn.Module`` (left as found).
        inputs: as for `capture`, or a list of such batches (read twice: fit, then edit) with
            ``labels`` (and ``groups``) a list of per-batch arrays, as for `probe`.
        labels: ``(batch,)`` or ``(batch, seq)`` integer labels; < 0 means no label.
        site: where to erase.
        groups: as for `probe` (the controls shuffle labels by group).
        metric: output → one score per row; default: the prediction flip rate.
        n_controls: control concepts.
        alpha: level of the "used" verdict.
        seed: the controls' seed.
        batch_size: rows per forward pass (in-memory inputs).
        eraser: the concept eraser, an unfitted estimator with ``fit`` and ``edit``; default
            ``LeaceEraser()``, ``INLPEraser()`` for iterative nullspace projection. Each control
            fits a clone of it.

    Returns:
        An `Erasure` with ``change``, ``control_changes``, ``p_value`` and ``used``.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
        >>> r = erase(model, x, (x[:, 0] > 0).long(), "0", n_controls=5)
        >>> r.residual_covariance < 1e-6
        True

    References:
        Belrose et al., "LEACE: Perfect linear concept erasure in closed form", NeurIPS 2023.
        Ravfogel et al., "Null It Out: Guarding Protected Attributes by Iterative Nullspace Projection", ACL 2020.
    """
    check_int("n_controls", n_controls, at_least=1)
    level = check_float("alpha", alpha, at_least=0.0, at_most=1.0)
    check_int("seed", seed)
    check_int("batch_size", batch_size, at_least=1)
    if metric is not None and not callable(metric):
        raise InputTypeError(f"metric must be callable (output -> one score per row), got {type(metric).__name__}.")
    chosen = LeaceEraser() if eraser is None else eraser
    if not (hasattr(chosen, "fit") and hasattr(chosen, "edit")):
        raise InputTypeError(f"eraser must be a concept eraser with fit and edit (LeaceEraser, INLPEraser), got "
                             f"{type(chosen).__name__}.")
    resolved = resolve_site(model, site)[0]
    if is_batch_stream(inputs):
        if iter(inputs) is inputs:
            raise InputTypeError("erase reads the data twice (fit, then edit): give a list of batches, not a one-shot "
                                 "iterator.")
        chunks: Any = inputs
    else:
        validate_inputs(model, inputs)
        chunks = list(batches(inputs, batch_size))
    x, y, g, _ = collect_examples(model, labelled_chunks(inputs, labels, groups, batch_size), resolved)
    fitted = clone(chosen).fit(x, y)
    erasers = [fitted]
    for c in range(n_controls):
        shuffled = control_labels(y, g, seed * 1_000_003 + c)
        if len(torch.unique(shuffled)) < 2:
            shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + c))]
        erasers.append(clone(chosen).fit(x, shuffled))
    changes = behaviour_changes(model, chunks, resolved, [e.edit() for e in erasers], metric)
    change, controls = changes[0], changes[1:]
    control_changes = torch.tensor(controls, dtype=torch.float64)
    p_value = (1 + int((control_changes >= change).sum())) / (1 + n_controls)
    erased = fitted.transform(x)
    z = torch.nn.functional.one_hot(torch.unique(y, return_inverse=True)[1]).double()
    residual = float(((erased - erased.mean(0)).T @ (z - z.mean(0)) / len(y)).abs().max())
    return Erasure(resolved, change, control_changes, p_value, bool(p_value <= level), fitted.rank_, residual)

