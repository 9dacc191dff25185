"""Representation similarity: linear CKA, the CCA family (SVCCA, PWCCA) and Procrustes distance.

Representations / representation comparison in the survey's taxonomy. Each measure compares two
representations of the same ``n`` examples, ``(n, d1)`` and ``(n, d2)`` numpy arrays or torch tensors
of any real dtype, computed in float64, and is invariant to translation, isotropic scaling and
orthogonal transforms of either side (PWCCA: permutations and sign flips of the neurons of its
weighted side only). `cka` is the stateless measure; `StreamingCKA` accumulates it
batch by batch in memory independent of ``n``; `cka_between` compares every pair of sites of one or
two models over a dataset streamed with `seethrough.core.stream`. A high similarity is an
observation about geometry, a hypothesis about function, never its proof.
"""

from __future__ import annotations

import html
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core.batching import batches, stream
from ..core.errors import InputError, InputTypeError, NotFittedError
from ..core.inputs import validate_inputs
from ..core.sites import Site, as_sites, resolve_site
from ..core.types import Inputs

__all__ = ["cka", "StreamingCKA", "cka_between", "SimilarityMatrix", "cca_correlations", "svcca", "pwcca",
           "procrustes"]

_F64_EPS = float(torch.finfo(torch.float64).eps)


# -- validation and centering (shared by every measure) -------------------------------------


def _as_float64(x: Tensor | np.ndarray, name: str, fn: str) -> tuple[Tensor, float]:
    """``x`` as a detached float64 tensor of shape (n, d), and the machine epsilon of its own dtype."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fiub":
            raise InputTypeError(f"{fn}: {name} has dtype {x.dtype}; pass real numbers (a float array).")
        shape, eps = x.shape, float(np.finfo(x.dtype).eps) if x.dtype.kind == "f" else _F64_EPS
    elif isinstance(x, Tensor):
        if x.is_complex():
            raise InputTypeError(f"{fn}: {name} has dtype {x.dtype}; pass real numbers (a float tensor).")
        shape, eps = tuple(x.shape), torch.finfo(x.dtype).eps if x.is_floating_point() else _F64_EPS
    else:
        raise InputTypeError(f"{fn}: {name} must be a numpy array or a torch tensor, got {type(x).__name__}.")
    if len(shape) != 2:
        raise InputError(f"{fn}: {name} has shape {tuple(shape)}, but a representation is 2-D (n examples, "
                         "d features); flatten with x.reshape(n, -1).")
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    else:
        t = x.detach().to(torch.float64)
    return t, eps


def _check_finite(t: Tensor, name: str, fn: str) -> None:
    if t.numel() and not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise InputError(f"{fn}: {name} contains {n_bad} NaN/inf value(s) (shape {tuple(t.shape)}); "
                         "clean the data first (e.g. torch.nan_to_num).")


def _pair(x: Tensor | np.ndarray, y: Tensor | np.ndarray, fn: str, *,
          min_rows: int = 2) -> tuple[Tensor, Tensor, float, float]:
    """Validated float64 copies of ``x`` and ``y`` (on ``x``'s device) and their dtypes' epsilons."""
    xt, eps_x = _as_float64(x, "x", fn)
    yt, eps_y = _as_float64(y, "y", fn)
    if xt.shape[0] != yt.shape[0]:
        raise InputError(f"{fn}: x has {xt.shape[0]} examples (rows) but y has {yt.shape[0]}; both must hold "
                         "the same examples in the same order.")
    if xt.shape[0] < min_rows:
        raise InputError(f"{fn} needs at least {min_rows} examples (rows), got {xt.shape[0]}.")
    for t, name in ((xt, "x"), (yt, "y")):
        if t.shape[1] == 0:
            raise InputError(f"{fn}: {name} has shape {tuple(t.shape)}, with no features; pass d ≥ 1 columns.")
        _check_finite(t, name, fn)
    return xt, yt.to(xt.device), eps_x, eps_y


def _constant_error(name: str, fn: str) -> InputError:
    return InputError(f"{fn}: {name} is constant (every example has the same representation), so it has zero "
                      f"variance and {fn} is undefined; check that the site varies with the inputs.")


def _center(t: Tensor, name: str, fn: str) -> Tensor:
    """Columns minus their means, scaled so that the largest |entry| is 1.

    Shifting by the first row before taking the mean makes constant columns exactly zero and keeps
    precision for data far from the origin; the scaling (all measures here are scale invariant)
    keeps the sums of fourth powers below clear of overflow.
    """
    centered = t - t[0]  # a new tensor (``t`` may be the caller's own): the rest works in place
    centered -= centered.mean(0)
    scale = float(centered.abs().amax())
    if scale == 0.0:
        raise _constant_error(name, fn)
    return centered.div_(scale)


def _sqnorm(t: Tensor) -> float:
    return float(t.square().sum())


@dataclass(frozen=True)
class _Centered:
    """A centered representation, kept as features ``(n, d)`` or, when ``d > n``, as its Gram matrix ``(n, n)``.

    Either form gives ``||Xᵀ Y||_F²`` (what CKA needs); the Gram form is cheaper when ``d > n``.
    """

    data: Tensor
    is_gram: bool

    @staticmethod
    def of(centered: Tensor) -> _Centered:
        n, d = centered.shape
        return _Centered(centered @ centered.T, True) if d > n else _Centered(centered, False)

    def cross(self, other: _Centered) -> float:
        """``||Xᵀ Y||_F²`` = ``<K, L>_F`` with ``K = X Xᵀ``, ``L = Y Yᵀ`` (Kornblith et al., eq. 3)."""
        if self.is_gram and other.is_gram:
            return float((self.data * other.data).sum())
        if self.is_gram or other.is_gram:
            gram, feats = (self.data, other.data) if self.is_gram else (other.data, self.data)
            return float(((gram @ feats) * feats).sum())  # tr(Yᵀ K Y), n² d instead of n d²
        return _sqnorm(self.data.T @ other.data)

    def self_term(self) -> float:
        """``||Xᵀ X||_F²``."""
        return _sqnorm(self.data) if self.is_gram else _sqnorm(self.data.T @ self.data)


def _ratio(cross: float, self_x: float, self_y: float) -> float:
    """``cross / sqrt(self_x · self_y)``, clipped to [0, 1] against rounding.

    Symmetric in ``x`` and ``y`` to the last bit. No overflow: inputs are scaled (max |entry| or
    trace 1) before the squares are summed, so ``self_x · self_y`` stays far below 1e308.
    """
    value = cross / math.sqrt(self_x * self_y)
    return min(max(value, 0.0), 1.0)


# -- linear CKA ------------------------------------------------------------------------------


def cka(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Linear centered kernel alignment between two representations of the same examples.

    ``CKA = ||Yᶜᵀ Xᶜ||_F² / (||Xᶜᵀ Xᶜ||_F · ||Yᶜᵀ Yᶜ||_F)`` with column-centered ``Xᶜ``, ``Yᶜ``: 1 for
    representations equal up to an orthogonal transform, isotropic scaling and translation; near 0
    for unrelated ones. Computed in float64, in feature space (``O(n d²)`` time, ``O(d²)`` memory),
    or through the ``n × n`` Gram matrix for a side with more features than examples: same value.

    Args:
        x: ``(n, d1)`` representation (numpy array or torch tensor, any real dtype).
        y: ``(n, d2)`` representation of the same ``n`` examples, in the same order.

    Returns:
        The linear CKA, a Python float in [0, 1].

    Raises:
        InputError: shapes other than 2-D, different ``n``, ``n < 2``, no features, NaN/inf, or a
            constant representation (zero variance: CKA is undefined).
        InputTypeError: not a numpy array or torch tensor, or complex values.

    Example:
        >>> x = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
        >>> rotation = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))[0]
        >>> round(cka(x, 3 * x @ rotation + 1), 6)
        1.0
        >>> round(cka(x, x[:, :2]), 2)
        0.47

    References:
        Kornblith, Norouzi, Lee and Hinton, "Similarity of Neural Network Representations Revisited",
        ICML 2019.
    """
    xt, yt, _, _ = _pair(x, y, "cka")
    rx = _Centered.of(_center(xt, "x", "cka"))
    ry = _Centered.of(_center(yt, "y", "cka"))
    return _ratio(rx.cross(ry), rx.self_term(), ry.self_term())


class _Moments:
    """Means and co-moments (sums of outer products of deviations) of several blocks of columns.

    Merged batch by batch with Chan et al.'s update, as `seethrough.core.RunningCovariance`, but
    only for the blocks pairs ``pairs`` (``(i, i)`` for each block's own co-moment, ``(i, j)``
    with ``i < j`` for a cross block). Rows are first shifted by the first row ever seen, so
    constant columns stay exactly zero and data far from the origin loses no digits.
    """

    def __init__(self, pairs: Iterable[tuple[int, int]]) -> None:
        self.pairs = sorted(set(pairs))
        self.count = 0
        self.shift: list[Tensor] = []
        self.mean: list[Tensor] = []
        self.m2: dict[tuple[int, int], Tensor] = {}

    def update(self, blocks: list[Tensor]) -> None:
        """Add rows; ``blocks[i]`` is a float64 ``(n_b, d_i)`` tensor (all with the same ``n_b``)."""
        n_b = blocks[0].shape[0]
        if n_b == 0:
            return
        if not self.shift:
            self.shift = [b[0].clone() for b in blocks]
        devs, means = [], []
        for block, shift in zip(blocks, self.shift, strict=True):
            dev = block - shift  # a new tensor (``block`` may be the caller's own)
            mean_b = dev.mean(0)
            devs.append(dev.sub_(mean_b))
            means.append(mean_b)
        if self.count == 0:
            self.count, self.mean = n_b, means
            self.m2 = {(i, j): devs[i].T @ devs[j] for i, j in self.pairs}
            return
        n_a, n = self.count, self.count + n_b
        deltas = [mb - ma for mb, ma in zip(means, self.mean, strict=True)]
        for i, j in self.pairs:  # in place, so memory stays at one copy of each block
            self.m2[(i, j)].addmm_(devs[i].T, devs[j]).addr_(deltas[i], deltas[j], alpha=n_a * n_b / n)
        for mean, delta in zip(self.mean, deltas, strict=True):
            mean.add_(delta, alpha=n_b / n)
        self.count = n

    def cka(self, i: int, j: int, names: tuple[str, str], fn: str) -> float:
        """Linear CKA between blocks ``i`` and ``j`` from the co-moments alone."""
        if self.count < 2:
            raise InputError(f"{fn} needs at least 2 examples (rows), got {self.count}.")
        m_ii, m_jj, m_ij = self.m2[(i, i)], self.m2[(j, j)], self.m2[(min(i, j), max(i, j))]
        t_i, t_j = float(m_ii.trace()), float(m_jj.trace())  # = ||Xᶜ||_F², exactly 0 iff constant
        for t, name in ((t_i, names[0]), (t_j, names[1])):
            if t == 0.0:
                raise _constant_error(name, fn)
        # Scale to unit trace first: entries are then at most 1 in absolute value (Cauchy–Schwarz).
        cross = _sqnorm(m_ij / math.sqrt(t_i * t_j))
        return _ratio(cross, _sqnorm(m_ii / t_i), _sqnorm(m_jj / t_j))


class StreamingCKA:
    """Linear CKA accumulated over batches in memory independent of the number of examples.

    Keeps float64 means and the co-moment matrices ``Σ Xᶜᵀ Xᶜ`` (d1 × d1), ``Σ Yᶜᵀ Yᶜ`` (d2 × d2) and
    ``Σ Xᶜᵀ Yᶜ`` (d1 × d2), merged batch by batch with Chan et al.'s parallel update, so `value`
    equals `cka` on the concatenated batches however the data was split.

    Example:
        >>> x = torch.randn(100, 6, generator=torch.Generator().manual_seed(0))
        >>> y = torch.tanh(x[:, :4])
        >>> acc = StreamingCKA()
        >>> for xb, yb in zip(x.split(32), y.split(32)): acc.update(xb, yb)
        >>> acc.count, abs(acc.value - cka(x, y)) < 1e-12
        (100, True)

    References:
        Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019;
        Chan, Golub and LeVeque, "Updating formulae and a pairwise algorithm for computing sample
        variances", 1979.
    """

    def __init__(self) -> None:
        self._moments: _Moments | None = None
        self._dims: tuple[int, int] | None = None

    def update(self, x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> None:
        """Add a batch: ``x`` ``(batch, d1)`` and ``y`` ``(batch, d2)`` for the same examples.

        Raises:
            InputError: as `cka` (a batch may have any number of rows), or widths that differ from
                earlier batches.
        """
        xt, yt, _, _ = _pair(x, y, "StreamingCKA.update", min_rows=0)
        dims = (xt.shape[1], yt.shape[1])
        if self._dims is not None and dims != self._dims:
            raise InputError(f"StreamingCKA.update got widths (d1, d2) = {dims}, but earlier batches had "
                             f"{self._dims}; every batch must come from the same two representations.")
        if self._moments is None:
            self._moments, self._dims = _Moments([(0, 0), (1, 1), (0, 1)]), dims
        device = self._moments.shift[0].device if self._moments.shift else xt.device
        self._moments.update([xt.to(device), yt.to(device)])

    @property
    def count(self) -> int:
        """Examples seen so far."""
        return 0 if self._moments is None else self._moments.count

    @property
    def value(self) -> float:
        """Linear CKA of everything seen so far.

        Raises:
            NotFittedError: no batch yet.
            InputError: fewer than 2 examples, or a constant representation.
        """
        if self._moments is None:
            raise NotFittedError("StreamingCKA has seen no data; call update(x, y) first.")
        return self._moments.cka(0, 1, ("x", "y"), "StreamingCKA")


# -- CKA between the sites of two models --------------------------------------------------------


def _label(site: Site) -> str:
    return site.path if repr(site) == f"Site({site.path!r})" else repr(site)


@dataclass(frozen=True)
class SimilarityMatrix:
    """Linear CKA between every site of ``sites_a`` (rows) and every site of ``sites_b`` (columns).

    ``values`` is a float64 tensor of shape ``(len(sites_a), len(sites_b))``.
    """

    values: Tensor
    sites_a: tuple[Site, ...]
    sites_b: tuple[Site, ...]

    def to_frame(self) -> Any:
        """One row per pair: columns ``site_a``, ``site_b``, ``cka`` (pivot for the matrix)."""
        import pandas as pd

        rows = [(_label(a), _label(b), float(self.values[i, j]))
                for i, a in enumerate(self.sites_a) for j, b in enumerate(self.sites_b)]
        return pd.DataFrame(rows, columns=["site_a", "site_b", "cka"])

    def plot(self) -> Any:
        """A heatmap of the matrix (a matplotlib Figure), values written in the cells."""
        from matplotlib.figure import Figure

        n_a, n_b = len(self.sites_a), len(self.sites_b)
        fig = Figure(figsize=(1.5 + 0.6 * n_b, 1.0 + 0.5 * n_a), layout="constrained")
        ax = fig.add_subplot()
        image = ax.imshow(self.values.cpu().numpy(), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(n_b), [_label(s) for s in self.sites_b], rotation=45, ha="right")
        ax.set_yticks(range(n_a), [_label(s) for s in self.sites_a])
        ax.set_xlabel("sites of model B")
        ax.set_ylabel("sites of model A")
        if n_a * n_b <= 400:
            for i in range(n_a):
                for j in range(n_b):
                    v = float(self.values[i, j])
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if v > 0.6 else "white")
        fig.colorbar(image, ax=ax, label="linear CKA")
        return fig

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(_label(s))}</th>" for s in self.sites_b)
        rows = []
        for i, a in enumerate(self.sites_a):
            cells = "".join(f"<td>{float(self.values[i, j]):.3f}</td>" for j in range(len(self.sites_b)))
            rows.append(f"<tr><th>{html.escape(_label(a))}</th>{cells}</tr>")
        return (f"<table><caption>linear CKA (rows: model A, columns: model B)</caption>"
                f"<tr><th></th>{head}</tr>{''.join(rows)}</table>")


def cka_between(model_a: nn.Module, model_b: nn.Module, inputs: Inputs, sites_a: Site | str | Iterable[Site | str],
                sites_b: Site | str | Iterable[Site | str], *, batch_size: int = 256) -> SimilarityMatrix:
    """Linear CKA between every site of ``model_a`` and every site of ``model_b`` on the same inputs.

    The data is streamed in chunks of ``batch_size`` through both models (once, when they are the
    same model); each site's value is flattened per example to ``(n, -1)``. Accumulation keeps
    float64 co-moments (memory independent of ``n``) unless storing the flattened values is
    smaller (wide sites, few examples), then CKA is computed from them: the result is the same.
    Models are left as found (call ``model.eval()`` first if dropout should be off).

    Args:
        model_a: any ``nn.Module``.
        model_b: any ``nn.Module``; may be ``model_a`` itself.
        inputs: the examples (tensor, tuple or dict of keyword arguments) both models are called with.
        sites_a: sites of ``model_a`` (rows), with the batch as dim 0 of their values.
        sites_b: sites of ``model_b`` (columns).
        batch_size: examples per forward pass.

    Returns:
        A `SimilarityMatrix` of shape ``(len(sites_a), len(sites_b))``.

    Raises:
        SiteNotFoundError: an unknown site (before any forward pass).
        InputError: bad inputs or ``batch_size``, fewer than 2 examples, a site value without the
            batch as dim 0, NaN/inf values, or a constant site.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> sim = cka_between(model, model, torch.randn(50, 4), ["0", "1", "2"], ["0", "1", "2"], batch_size=16)
        >>> sim.values.shape, torch.allclose(sim.values.diagonal(), torch.ones(3, dtype=torch.float64))
        (torch.Size([3, 3]), True)

    References:
        Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019.
    """
    same_model = model_a is model_b
    keys_a = [resolve_site(model_a, s)[0] for s in as_sites(sites_a)]
    keys_b = [resolve_site(model_b, s)[0] for s in as_sites(sites_b)]
    n = validate_inputs(model_a, inputs)
    if not same_model:
        validate_inputs(model_b, inputs)
    if n < 2:
        raise InputError(f"cka_between needs at least 2 examples, got {n}.")
    # Blocks: one per distinct (model, site); the same site of the same model is read once.
    index = {key: i for i, key in enumerate(dict.fromkeys([(0, s) for s in keys_a] +
                                                          [(0 if same_model else 1, s) for s in keys_b]))}
    rows = [index[(0, s)] for s in keys_a]
    cols = [index[(0 if same_model else 1, s)] for s in keys_b]
    blocks = list(index)
    pairs = {(i, i) for i in range(len(blocks))} | {(min(i, j), max(i, j)) for i in rows for j in cols}

    store = _BlockStore(pairs, n)
    for offset, values in _stream_both(model_a, model_b, inputs, keys_a, keys_b, same_model, batch_size):
        expected = min(batch_size, n - offset)
        store.update([_flatten(values[m][s], s, expected) for m, s in blocks])
    names = [_label(s) for _, s in blocks]
    result = torch.empty(len(rows), len(cols), dtype=torch.float64)
    for r, i in enumerate(rows):
        for c, j in enumerate(cols):
            result[r, c] = store.cka(i, j, (f"site {names[i]!r}", f"site {names[j]!r}"))
    return SimilarityMatrix(result, tuple(keys_a), tuple(keys_b))


def _stream_both(model_a: nn.Module, model_b: nn.Module, inputs: Inputs, keys_a: list[Site], keys_b: list[Site],
                 same_model: bool, batch_size: int) -> Iterable[tuple[int, dict[int, dict[Site, Tensor]]]]:
    """Per chunk: ``(offset, {0: values of model A, 1: values of model B})`` (one pass for one model)."""
    if same_model:
        for offset, values in stream(model_a, batches(inputs, batch_size), list(dict.fromkeys(keys_a + keys_b))):
            yield offset, {0: values}
        return
    both = zip(stream(model_a, batches(inputs, batch_size), list(dict.fromkeys(keys_a))),
               stream(model_b, batches(inputs, batch_size), list(dict.fromkeys(keys_b))), strict=True)
    for (offset, values_a), (_, values_b) in both:
        yield offset, {0: values_a, 1: values_b}


def _flatten(value: Tensor, site: Site, expected: int) -> Tensor:
    if value.ndim == 0 or value.shape[0] != expected:
        raise InputError(f"cka_between: the value at {site!r} has shape {tuple(value.shape)}, but its chunk has "
                         f"{expected} examples; a site's value must have the batch as dim 0.")
    flat = value.detach().reshape(expected, -1).to(torch.float64)
    _check_finite(flat, f"the value at {site!r}", "cka_between")
    return flat


class _BlockStore:
    """Co-moments of every block (`_Moments`), or, when that would take more memory, the blocks themselves."""

    def __init__(self, pairs: set[tuple[int, int]], n: int) -> None:
        self.pairs, self.n = pairs, n
        self.moments: _Moments | None = None
        self.chunks: list[list[Tensor]] | None = None
        self.centered: dict[int, _Centered] = {}

    def update(self, blocks: list[Tensor]) -> None:
        if self.moments is None and self.chunks is None:
            dims = [b.shape[1] for b in blocks]
            moment_size = sum(dims[i] * dims[j] for i, j in self.pairs)
            if moment_size <= self.n * sum(dims):
                self.moments = _Moments(self.pairs)
            else:
                self.chunks = [[] for _ in blocks]
        if self.moments is not None:
            self.moments.update(blocks)
        else:
            assert self.chunks is not None  # set above
            for store, block in zip(self.chunks, blocks, strict=True):
                store.append(block)

    def cka(self, i: int, j: int, names: tuple[str, str]) -> float:
        if self.moments is not None:
            return self.moments.cka(i, j, names, "cka_between")
        rep_i, rep_j = self._rep(i, names[0]), self._rep(j, names[1])
        return _ratio(rep_i.cross(rep_j), rep_i.self_term(), rep_j.self_term())

    def _rep(self, i: int, name: str) -> _Centered:
        if i not in self.centered:
            assert self.chunks is not None  # the moments branch returns before
            self.centered[i] = _Centered.of(_center(torch.cat(self.chunks[i]), name, "cka_between"))
            self.chunks[i] = []  # the centered form (or its Gram matrix) replaces the raw values
        return self.centered[i]


# -- canonical correlation analysis and Procrustes ------------------------------------------------


def _basis(centered: Tensor, eps: float, keep: float | None = None) -> Tensor:
    """Orthonormal basis ``(n, r)`` of the column space, from the left singular vectors.

    Directions with singular value below ``s_max · max(n, d) · eps`` (``eps`` of the input's own
    dtype, as ``numpy.linalg.matrix_rank``) are dropped: this rank cut replaces the ridge epsilon
    often added to the covariance, so no regularisation biases the correlations. With ``keep``, only
    the top directions explaining that fraction of the variance remain (SVCCA's reduction).
    """
    u, s, _ = torch.linalg.svd(centered, full_matrices=False)
    r = int((s > s[0] * max(centered.shape) * eps).sum())
    if keep is not None:
        variance = s[:r].square()
        explained = variance.cumsum(0) / variance.sum()
        r = min(r, int((explained < keep).sum()) + 1)
    return u[:, :r]


def _bases(x: Tensor | np.ndarray, y: Tensor | np.ndarray, fn: str,
           keep: float | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validated float64 ``x``, ``y`` and orthonormal bases of their centered column spaces."""
    xt, yt, eps_x, eps_y = _pair(x, y, fn)
    ux = _basis(_center(xt, "x", fn), eps_x, keep)
    uy = _basis(_center(yt, "y", fn), eps_y, keep)
    spare = ux.shape[1] + uy.shape[1] - (xt.shape[0] - 1)
    if spare > 0:
        warnings.warn(f"{fn}: x and y span {ux.shape[1]} + {uy.shape[1]} dimensions but centered data of "
                      f"n = {xt.shape[0]} examples has only {xt.shape[0] - 1}, so at least {spare} canonical "
                      "correlation(s) are 1 whatever the data; use many more examples than features "
                      "(or svcca with a smaller keep).", stacklevel=3)
    return xt, yt, ux, uy


def cca_correlations(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> Tensor:
    """Canonical correlations between two representations, sorted in descending order.

    The cosines of the principal angles between the column spaces of the centered ``x`` and ``y``:
    the singular values of ``Uxᵀ Uy`` for orthonormal bases ``Ux``, ``Uy`` (from the SVD). Directions
    below the numerical rank (at the precision of each input's dtype) are dropped instead of adding
    a ridge epsilon, so there are ``min(rank x, rank y)`` correlations.

    Args:
        x: ``(n, d1)`` representation; ``y``: ``(n, d2)`` representation of the same examples.

    Returns:
        float64 tensor of the correlations, in [0, 1], largest first.

    Raises:
        InputError: as `cka`. Warns when ``rank x + rank y > n - 1`` (some correlations are then 1
            whatever the data: CCA needs many more examples than features).

    Example:
        >>> x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
        >>> cca_correlations(x, x @ torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 3.0]]))
        tensor([1.0000, 1.0000, 1.0000], dtype=torch.float64)

    References:
        Hotelling, "Relations between two sets of variates", Biometrika 1936; Björck and Golub,
        "Numerical methods for computing angles between linear subspaces", 1973.
    """
    _, _, ux, uy = _bases(x, y, "cca_correlations")
    return torch.linalg.svdvals(ux.T @ uy).clamp(0.0, 1.0)


def svcca(x: Tensor | np.ndarray, y: Tensor | np.ndarray, *, keep: float = 0.99) -> float:
    """SVCCA: mean canonical correlation after reducing each side to its top singular directions.

    Each centered representation keeps the fewest singular directions that explain ``keep`` of its
    variance (sum of squared singular values); the result is the mean of the canonical correlations
    between the two reduced representations.

    Args:
        x: ``(n, d1)`` representation; ``y``: ``(n, d2)`` representation of the same examples.
        keep: fraction of the variance each side keeps, in (0, 1].

    Returns:
        The mean canonical correlation, a float in [0, 1].

    Raises:
        InputError: as `cka`, or ``keep`` outside (0, 1].

    Example:
        >>> x = torch.randn(500, 10, generator=torch.Generator().manual_seed(0))
        >>> round(svcca(x, 2 * x + 1), 6)
        1.0

    References:
        Raghu, Gilmer, Yosinski and Sohl-Dickstein, "SVCCA: Singular Vector Canonical Correlation
        Analysis for Deep Learning Dynamics and Interpretability", NeurIPS 2017.
    """
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 < keep <= 1.0:
        raise InputError(f"svcca: keep is the fraction of variance to keep, in (0, 1]; got {keep!r}.")
    _, _, ux, uy = _bases(x, y, "svcca", keep=float(keep))
    return float(torch.linalg.svdvals(ux.T @ uy).clamp(0.0, 1.0).mean())


def pwcca(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """PWCCA: canonical correlations averaged with weights by how much of one side each accounts for.

    The canonical variates ``h_i`` (orthonormal, ``(n,)`` each) of the side with the lower rank
    (``x`` on ties; its variates span all of it) get the weight ``α_i ∝ Σ_j |⟨h_i, z_j⟩|`` over that
    side's centered feature columns ``z_j``; the result is ``Σ_i α_i ρ_i`` with ``Σ α_i = 1``. Unlike
    the plain mean, directions that carry little of the representation count little. The weights
depend on the weighted side's neuron basis: unlike the other measures here, PWCCA is not invariant
to rotations of that side (only to permutations and sign flips of its neurons).

    Args:
        x: ``(n, d1)`` representation; ``y``: ``(n, d2)`` representation of the same examples.

    Returns:
        The projection-weighted mean canonical correlation, a float in [0, 1].

    Raises:
        InputError: as `cka`.

    Example:
        >>> x = torch.randn(500, 6, generator=torch.Generator().manual_seed(0))
        >>> round(pwcca(x, x @ torch.randn(6, 6, generator=torch.Generator().manual_seed(1))), 6)
        1.0

    References:
        Morcos, Raghu and Bengio, "Insights on representational similarity in neural networks with
        canonical correlation", NeurIPS 2018 (and the google/svcca reference code, which also
        weights by the side with fewer directions).
    """
    xt, yt, ux, uy = _bases(x, y, "pwcca")
    p, rho, qt = torch.linalg.svd(ux.T @ uy, full_matrices=False)
    rho = rho.clamp(0.0, 1.0)
    if ux.shape[1] <= uy.shape[1]:
        variates, features = ux @ p, _center(xt, "x", "pwcca")
    else:
        variates, features = uy @ qt.T, _center(yt, "y", "pwcca")
    variates = variates[:, : rho.shape[0]]
    weights = (variates.T @ features).abs().sum(1)
    return float((weights * rho).sum() / weights.sum())


def procrustes(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Orthogonal Procrustes distance between two representations (0 iff equal up to rotation).

    With ``X``, ``Y`` centered and scaled to unit Frobenius norm, the distance is
    ``min_Q ||X − Y Q||_F² = 2 − 2 ||Xᵀ Y||_*`` over orthogonal ``Q`` (nuclear norm ``||·||_*``, the sum
    of singular values), in [0, 2]. Different widths are compared as if the narrower were padded
    with zero columns. ``sqrt`` of it is a metric; ``arccos(1 − d / 2)`` is Williams et al.'s angular
    shape metric.

    Args:
        x: ``(n, d1)`` representation; ``y``: ``(n, d2)`` representation of the same examples.

    Returns:
        The squared Procrustes distance, a float in [0, 2].

    Raises:
        InputError: as `cka`.

    Example:
        >>> x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
        >>> rotation = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(1)))[0]
        >>> procrustes(x, 5 * x @ rotation - 2) < 1e-12, procrustes(x, torch.randn(50, 4)) > 0.5
        (True, True)

    References:
        Ding, Denain and Steinhardt, "Grounding Representation Similarity with Statistical Testing",
        NeurIPS 2021; Williams, Kunz, Kornblith and Linderman, "Generalized Shape Metrics on Neural
        Representations", NeurIPS 2021; Schönemann, "A generalized solution of the orthogonal
        Procrustes problem", 1966.
    """
    xt, yt, _, _ = _pair(x, y, "procrustes")
    xc, yc = _narrow(_center(xt, "x", "procrustes")), _narrow(_center(yt, "y", "procrustes"))
    xc, yc = xc / torch.linalg.matrix_norm(xc), yc / torch.linalg.matrix_norm(yc)
    nuclear = float(torch.linalg.svdvals(xc.T @ yc).sum())
    return min(max(2.0 - 2.0 * nuclear, 0.0), 2.0)


def _narrow(centered: Tensor) -> Tensor:
    """``U S`` of the thin SVD when ``d > n``: the same Gram matrix (so the same ``||Xᵀ Y||_*``) in n columns."""
    n, d = centered.shape
    if d <= n:
        return centered
    u, s, _ = torch.linalg.svd(centered, full_matrices=False)
    return u * s
