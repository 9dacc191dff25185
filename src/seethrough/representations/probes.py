"""Probing with control tasks: is a property decodable from a site, and more than a probe can memorise?

Representations / probes (survey §5.6). `LinearProbe` (L2-regularised logistic regression fitted by
L-BFGS, the objective of scikit-learn's ``LogisticRegression``) and `MLPProbe` are scikit-learn
estimators on captured activations. `probe` captures a site, splits by input (whole sentences),
fits the probe on the property and on a control task (Hewitt & Liang: a random label per group,
e.g. per token id, or per example) and reports held-out accuracy, control accuracy and their
difference, the selectivity. Whether the model *uses* what a probe decodes is `erasure.erase`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError, NotFittedError
from ..core.inputs import validate_inputs
from ..core.results import Result, new_figure
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from ..evidence.finding import Finding
from ..evidence.fingerprint import Fingerprint, fingerprint
from ._examples import (
    _as_labels,
    _as_matrix,
    collect_examples,
    control_labels,
    is_batch_stream,
    labelled_chunks,
    split_by_input,
)

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["LinearProbe", "MLPProbe", "probe", "ProbeResult"]


# -- estimators ----------------------------------------------------------------------------------


class _Probe(BaseEstimator, ClassifierMixin):  # type: ignore[misc]  # sklearn ships no stubs
    """Shared plumbing: standardisation, label encoding, predict and score."""

    standardize: bool

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) first.")

    def _prepare(self, X: Any, y: Any, *, keep_float32: bool = False) -> tuple[Tensor, Tensor]:
        """Standardised features (float64, or float32 where given so and asked) and label codes."""
        x = _as_matrix(X, keep_float32=keep_float32)
        labels = _as_labels(y, x.shape[0])
        classes, codes = torch.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise InputError(f"y holds a single class ({classes.tolist()}); a probe needs at least two classes.")
        self.classes_ = classes.numpy()
        self.n_features_in_ = x.shape[1]
        if not self.standardize:
            self.mean_ = torch.zeros(x.shape[1], dtype=torch.float64)
            self.scale_ = torch.ones(x.shape[1], dtype=torch.float64)
            return x, codes
        self.mean_ = x.mean(0, dtype=torch.float64)
        centred = x.double() - self.mean_ if x.dtype != torch.float64 else x - self.mean_
        self.scale_ = centred.pow(2).mean(0).sqrt().clamp_min(1e-12)
        return (centred / self.scale_).to(x.dtype), codes

    def _inputs(self, X: Any) -> Tensor:
        self._check_fitted()
        x = _as_matrix(X)
        if x.shape[1] != self.n_features_in_:
            raise InputError(f"X has {x.shape[1]} features but the probe was fitted on {self.n_features_in_}.")
        return (x - self.mean_) / self.scale_

    def _logits(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n, n_classes)``, columns in the order of ``classes_``."""
        with torch.no_grad():
            return self._logits(self._inputs(X)).softmax(-1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row (a value of ``classes_``)."""
        with torch.no_grad():
            best = self._logits(self._inputs(X)).argmax(-1).numpy()
        return self.classes_[best]


class LinearProbe(_Probe):
    """A linear probe: L2-regularised logistic regression (softmax for more than two classes).

    Minimises ``mean cross-entropy + ||W||² / (2 C n)`` (the intercept unpenalised), exactly
    scikit-learn's ``LogisticRegression(C=C)`` objective (binary: one weight vector; the sum form
    ``sum of cross-entropies + ||W||² / (2 C)`` divided by ``n``, the same minimiser), with
    scipy's L-BFGS-B, stopping like scikit-learn's ``lbfgs`` solver (the same optimiser) when the
    largest gradient entry of that mean objective is below ``tol``; the loss and its gradient are
    computed in torch. Float32 features are fitted in float32 (as scikit-learn
    keeps them; about ten times faster than float64 on CPU), anything else in float64. With
    ``standardize`` the features are centred and scaled first (the penalty then treats every unit
    alike); ``coef_`` and ``intercept_`` are in the original feature space.

    Args:
        C: inverse regularisation strength (smaller = simpler probe).
        standardize: centre and scale each feature before fitting.
        max_iter: L-BFGS iterations.
        tol: gradient tolerance on the mean objective (scikit-learn's default, 1e-4).

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [2.0], [3.0]]); y = torch.tensor([0, 0, 1, 1])
        >>> LinearProbe().fit(x, y).predict(x).tolist()
        [0, 0, 1, 1]
    """

    def __init__(self, C: float = 1.0, *, standardize: bool = True, max_iter: int = 500, tol: float = 1e-4) -> None:
        self.C = C
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: Any, y: Any) -> LinearProbe:
        """Fit on ``(n, d)`` features and ``(n,)`` integer labels; returns self (earlier fits forgotten)."""
        c = check_float("C", self.C, at_least=1e-12)
        check_int("max_iter", self.max_iter, at_least=1)
        tol = check_float("tol", self.tol, at_least=0.0)
        single = getattr(X, "dtype", None) in (torch.float32, np.float32)
        z, codes = self._prepare(X, y, keep_float32=single)
        dtype, (n, d), k = z.dtype, z.shape, len(self.classes_)
        rows = 1 if k == 2 else k
        zt = z.T.contiguous()  # (d, n): logits as (rows, n) keep every row-wise op on contiguous memory
        target = codes.to(dtype)[None] if k == 2 else torch.nn.functional.one_hot(codes, k).to(dtype).T.contiguous()
        ridge = 1.0 / (c * n)

        def value_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            # the mean objective and its gradient by hand (two products; no autograd graph per evaluation)
            params = torch.from_numpy(theta).to(dtype)
            w, b = params[:rows * d].view(rows, d), params[rows * d:]
            logits = w @ zt + b[:, None]  # (rows, n)
            if k == 2:
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
                residual = torch.sigmoid(logits) - target
            else:
                log_p = torch.log_softmax(logits, 0)
                loss = -(log_p * target).sum() / n
                residual = log_p.exp() - target
            residual = residual / n
            grad_w = residual @ z + ridge * w
            value = float(loss) + 0.5 * ridge * float((w * w).sum())
            return value, torch.cat([grad_w.flatten(), residual.sum(1)]).double().numpy()

        # scikit-learn's lbfgs solver: scipy's L-BFGS-B with gtol = tol on this mean objective
        result = minimize(value_and_grad, np.zeros(rows * (d + 1)), jac=True, method="L-BFGS-B",
                          options={"maxiter": self.max_iter, "gtol": tol, "ftol": 64 * np.finfo(float).eps,
                                   "maxls": 50})
        self.n_iter_ = int(result.nit)
        theta = torch.from_numpy(result.x)
        w, b = theta[:rows * d].view(rows, d), theta[rows * d:]
        w_std, b_std = w.double(), b.double()
        self.weight_ = w_std  # in the standardised space
        self.bias_ = b_std
        self.coef_ = (w_std / self.scale_).numpy()
        self.intercept_ = (b_std - (w_std * self.mean_ / self.scale_).sum(1)).numpy()
        return self

    def _logits(self, z: Tensor) -> Tensor:
        logits = z @ self.weight_.T + self.bias_
        return torch.cat([torch.zeros_like(logits), logits], 1) if len(self.classes_) == 2 else logits


class MLPProbe(_Probe):
    """A one-hidden-layer MLP probe (ReLU), full-batch Adam with weight decay: a higher-capacity probe.

    Args:
        d_hidden: hidden width.
        weight_decay: L2 penalty (AdamW's decoupled decay).
        epochs: full-batch steps.
        lr: Adam's step size.
        standardize: centre and scale each feature first.
        seed: initialisation seed.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [2.0], [3.0]]); y = torch.tensor([0, 1, 1, 0])
        >>> MLPProbe(d_hidden=16, epochs=300).fit(x, y).score(x, y)
        1.0
    """

    def __init__(self, d_hidden: int = 64, *, weight_decay: float = 1e-3, epochs: int = 300, lr: float = 1e-2,
                 standardize: bool = True, seed: int = 0) -> None:
        self.d_hidden = d_hidden
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.lr = lr
        self.standardize = standardize
        self.seed = seed

    def fit(self, X: Any, y: Any) -> MLPProbe:
        """Fit on ``(n, d)`` features and ``(n,)`` integer labels; returns self (earlier fits forgotten)."""
        check_int("d_hidden", self.d_hidden, at_least=1)
        check_int("epochs", self.epochs, at_least=1)
        decay = check_float("weight_decay", self.weight_decay, at_least=0.0)
        lr = check_float("lr", self.lr, at_least=1e-12)
        z, codes = self._prepare(X, y)
        gen = torch.Generator().manual_seed(int(self.seed))
        d, k = z.shape[1], len(self.classes_)
        params = []
        for fan_in, fan_out in ((d, self.d_hidden), (self.d_hidden, k)):  # PyTorch's default init, our generator
            bound = 1.0 / np.sqrt(fan_in)
            params.append((torch.rand(fan_out, fan_in, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
            params.append((torch.rand(fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
        for p in params:
            p.requires_grad_(True)
        optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=decay)
        with torch.enable_grad():
            for _ in range(self.epochs):
                optimiser.zero_grad()
                torch.nn.functional.cross_entropy(self._forward(z, params), codes).backward()
                optimiser.step()
        self.weights_ = [p.detach() for p in params]
        return self

    @staticmethod
    def _forward(z: Tensor, params: list[Tensor]) -> Tensor:
        w1, b1, w2, b2 = params
        return torch.relu(z @ w1.T + b1) @ w2.T + b2

    def _logits(self, z: Tensor) -> Tensor:
        return self._forward(z, self.weights_)


# -- the probe with its control task ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult(Result):
    """Held-out accuracy of a probe on a property and on its control task, and their difference.

    Attributes:
        site: where the probe read.
        accuracy: held-out accuracy on the property.
        control_accuracy: held-out accuracy of the same probe on the control task.
        selectivity: ``accuracy - control_accuracy`` (Hewitt & Liang).
        majority: held-out accuracy of always predicting the training set's most frequent label.
        n_train, n_test: labelled examples in each split (the split is by input).
        n_classes: distinct labels.
        probe: the estimator's name and parameters, e.g. ``"LinearProbe(C=1.0)"``.
        coef: ``(n_directions, d)`` the fitted probe's weights in the site's feature space (one row
            for two classes, one per class otherwise); ``None`` for an estimator without ``coef_``.
        classes: the label values, in the order of ``coef``'s rows (for more than two classes).
        data_fingerprint: the probing data's `Fingerprint` (``None`` for a one-shot iterator).
    """

    site: Site
    accuracy: float
    control_accuracy: float
    selectivity: float
    majority: float
    n_train: int
    n_test: int
    n_classes: int
    probe: str
    coef: Tensor | None = field(default=None, compare=False, repr=False)
    classes: tuple[int, ...] = ()
    data_fingerprint: Fingerprint | None = field(default=None, compare=False, repr=False)

    def to_findings(self, *, target: int | None = None) -> list[Finding]:
        """The probe's directions as ``"direction"`` findings: "the model uses this direction".

        A probe shows a property is *decodable*; `seethrough.evidence.validate` tests whether the
        model *uses* the direction by projecting it out against random directions (pass a
        ``metric`` there, or ``target`` here for the default log-probability). One finding for
        two classes (the direction of the second class), one per class otherwise. The direction
        is along the site's units where the probe read one example per position or a 2-D value;
        a flattened ``(batch, c, h, w)`` value gives a flattened direction that validate refuses.

        Raises:
            InputError: the probe has no linear weights (e.g. `MLPProbe`).
        """
        if self.coef is None:
            raise InputError(f"{self.probe} has no linear weights (coef_); only a linear probe gives directions.")
        rows = [(self.classes[-1] if self.classes else 1, self.coef[0])] if self.coef.shape[0] == 1 else \
            list(zip(self.classes, self.coef, strict=True))
        evidence = {"accuracy": self.accuracy, "control_accuracy": self.control_accuracy,
                    "selectivity": self.selectivity, "majority": self.majority, "probe": self.probe}
        return [Finding("direction", f"the probe direction of label {label} at {self.site.path} is used by the "
                        f"model (held-out accuracy {self.accuracy:.3f}, selectivity {self.selectivity:.3f})",
                        site=self.site, direction=row.double(), target=target, score=self.selectivity,
                        evidence={**evidence, "label": int(label)}, data_fingerprint=self.data_fingerprint)
                for label, row in rows]

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame({"site": [self.site.path], "accuracy": [self.accuracy],
                             "control_accuracy": [self.control_accuracy], "selectivity": [self.selectivity],
                             "majority": [self.majority], "n_train": [self.n_train], "n_test": [self.n_test]})

    def plot(self) -> Figure:
        fig = new_figure(4, 2.5)
        ax = fig.add_subplot()
        names = ["property", "control", "majority"]
        ax.bar(names, [self.accuracy, self.control_accuracy, self.majority], color=["C0", "C7", "C1"])
        ax.set_ylim(0, 1)
        ax.set_ylabel("held-out accuracy")
        ax.set_title(f"probe at {self.site.path}: selectivity {self.selectivity:.3f}", fontsize=9)
        return fig


def probe(model: nn.Module, inputs: Inputs | Iterable[Inputs], labels: Any, site: Site | str, *, groups: Any | None = None,
          seed: int = 0, estimator: Any | None = None, test_fraction: float = 0.25,
          batch_size: int = 256) -> ProbeResult:
    """Probe ``site`` for ``labels`` with a held-out split by input and a control task.

    The site's value is streamed (chunks of ``batch_size``, under no_grad) and each chunk is
    reduced at once to its labelled rows, so only the labelled examples are held, never the whole
    dataset's value (padding included). ``inputs`` may also be a list or iterator of batches (e.g.
    padded to different lengths) with ``labels`` and ``groups`` lists of per-batch arrays: the
    same examples in the same order give the same result. A ``(batch, ...)`` value with
    ``(batch,)`` labels gives one example per input (flattened); a ``(batch, seq, d)`` value with
    ``(batch, seq)`` labels (and groups) one example per position. Labels < 0 are left out. A random ``test_fraction`` of the inputs (whole sentences, never split by group) is held
    out. The control task gives each group (``groups``, e.g. the token id at each position; by
    default each example) a label drawn from the empirical label distribution, and the same
    estimator is fitted on it with the same split.

    Args:
        model: any ``nn.Module`` (left as found).
        inputs: as for `capture`, or a list or iterator of such batches (read once).
        labels: ``(batch,)`` or ``(batch, seq)`` integer labels; < 0 means no label (a list of
            such arrays, one per batch, for a list of batches).
        site: where to read.
        groups: integer groups shaped like ``labels`` for the control task; ``None``: per example.
        seed: the split's and the control task's seed.
        estimator: a scikit-learn style classifier (fit/score); default ``LinearProbe()``.
            ``MLPProbe()`` is the high-capacity option.
        test_fraction: share of inputs held out.
        batch_size: rows per forward pass.

    Returns:
        A `ProbeResult` with ``accuracy``, ``control_accuracy`` and ``selectivity``.

    Raises:
        SiteNotFoundError: unknown site (before any forward pass).
        InputError: labels or groups that do not fit the site's value, a single class, too few inputs.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
        >>> r = probe(model, x, (x[:, 0] > 0).long(), "1")
        >>> r.accuracy > 0.9 and r.control_accuracy < 0.7
        True

    References:
        Hewitt & Liang, "Designing and Interpreting Probes with Control Tasks", EMNLP 2019.
    """
    check_int("seed", seed)
    fraction = check_float("test_fraction", test_fraction, at_least=1e-6, at_most=0.9)
    check_int("batch_size", batch_size, at_least=1)
    resolved = resolve_site(model, site)[0]
    chosen = LinearProbe() if estimator is None else estimator
    if not (hasattr(chosen, "fit") and hasattr(chosen, "score")):
        raise InputTypeError(f"estimator must be a scikit-learn style classifier with fit and score, got "
                             f"{type(chosen).__name__}.")
    if not is_batch_stream(inputs):
        validate_inputs(model, inputs)
    x, y, g, rows = collect_examples(model, labelled_chunks(inputs, labels, groups, batch_size), resolved)
    test = split_by_input(rows, fraction, seed)
    train = ~test
    if len(torch.unique(y[train])) < 2:
        raise InputError("the training split holds a single class; give more varied labels or more inputs.")
    control = control_labels(y, g, seed)
    fitted = clone(chosen).fit(x[train], y[train])
    accuracy = float(fitted.score(x[test], y[test]))
    control_probe = clone(chosen).fit(x[train], control[train])
    control_accuracy = float(control_probe.score(x[test], control[test]))
    values_train, counts = torch.unique(y[train], return_counts=True)
    majority = float((y[test] == values_train[counts.argmax()]).double().mean())
    params = ", ".join(f"{k}={v!r}" for k, v in sorted(chosen.get_params().items())) \
        if hasattr(chosen, "get_params") else ""
    coef = getattr(fitted, "coef_", None)
    classes = tuple(int(c) for c in getattr(fitted, "classes_", ()))
    seen = fingerprint(inputs) if isinstance(inputs, (Tensor, tuple, Mapping, list)) else None  # not a one-shot iterator
    return ProbeResult(resolved, accuracy, control_accuracy, accuracy - control_accuracy, majority,
                       int(train.sum()), int(test.sum()), int(len(torch.unique(y))), f"{type(chosen).__name__}({params})",
                       None if coef is None else torch.as_tensor(np.asarray(coef), dtype=torch.float64), classes, seen)
