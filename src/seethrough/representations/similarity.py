"""Similarity between every pair of sites of one or two models, over a dataset streamed once.

`cka_between` returns a `SimilarityMatrix` of linear CKA from streamed co-moments (memory
independent of ``n``); `compare_sites` keeps the flattened values and computes any index of
`INDICES` (debiased or RBF CKA, CCA, SVCCA, PWCCA, Procrustes), with a permutation baseline
(shuffled rows) and bootstrap confidence intervals per cell.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..core.batching import batches, stream
from ..core.checks import check_int
from ..core.errors import InputError
from ..core.inputs import validate_inputs
from ..core.results import Result, new_figure
from ..core.sites import Site, as_sites, resolve_site
from ..core.types import Inputs
from ._arrays import _center, _check_finite
from ._cka_terms import _Centered, _Moments, _ratio
from .cca import cca_correlations, procrustes, pwcca, svcca
from .cka import cka, debiased_cka, kernel_cka

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["cka_between", "SimilarityMatrix", "compare_sites", "INDICES"]

#: The indices `compare_sites` computes, by name: each ``fn(x, y) -> float``.
INDICES: dict[str, Callable[[Tensor, Tensor], float]] = {
    "cka": cka,
    "debiased_cka": debiased_cka,
    "rbf_cka": kernel_cka,
    "cca": lambda x, y: float(cca_correlations(x, y).mean()),
    "svcca": svcca,
    "pwcca": pwcca,
    "procrustes": procrustes,
}
#: Indices where a smaller value means more similar.
_DISTANCES = frozenset({"procrustes"})


def _label(site: Site) -> str:
    return site.path if repr(site) == f"Site({site.path!r})" else repr(site)


@dataclass(frozen=True)
class SimilarityMatrix(Result):
    """A similarity index between every site of ``sites_a`` (rows) and every site of ``sites_b`` (columns).

    ``values`` is a float64 tensor of shape ``(len(sites_a), len(sites_b))`` of the index named
    ``index`` (a key of `INDICES`; ``"cka"`` is linear CKA). With a permutation baseline
    (``n_permutations > 0``), ``null_95`` holds per cell the 95th percentile of the index between
    row-shuffled values of the site of A and the site of B (5th for a distance) and ``p_values``
    the permutation p-value ``(1 + #{shuffled at least as similar}) / (1 + n_permutations)``; with
    ``n_bootstrap > 0``, ``ci_low`` and ``ci_high`` bound the 95% percentile bootstrap interval
    (examples resampled with replacement).
    """

    values: Tensor
    sites_a: tuple[Site, ...]
    sites_b: tuple[Site, ...]
    index: str = "cka"
    null_95: Tensor | None = None
    p_values: Tensor | None = None
    ci_low: Tensor | None = None
    ci_high: Tensor | None = None

    def best_match(self) -> Tensor:
        """Per site of A, the column (site of B) most similar to it: argmax, or argmin for a distance."""
        return (self.values.argmin(1) if self.index in _DISTANCES else self.values.argmax(1))

    def to_frame(self) -> pandas.DataFrame:
        """One row per pair: ``site_a``, ``site_b``, the index's value (column named after it) and, when
        computed, ``null_95``, ``p_value``, ``ci_low``, ``ci_high`` (pivot for the matrix)."""
        import pandas as pd

        extra = {name: t for name, t in (("null_95", self.null_95), ("p_value", self.p_values),
                                         ("ci_low", self.ci_low), ("ci_high", self.ci_high)) if t is not None}
        rows = [(_label(a), _label(b), float(self.values[i, j]), *(float(t[i, j]) for t in extra.values()))
                for i, a in enumerate(self.sites_a) for j, b in enumerate(self.sites_b)]
        return pd.DataFrame(rows, columns=["site_a", "site_b", self.index, *extra])

    def plot(self) -> Figure:
        """A heatmap of the matrix (a matplotlib Figure), values written in the cells.

        With a permutation baseline, a cell whose p-value is above 0.05 (not above chance) is
        marked with "(n.s.)".
        """
        n_a, n_b = len(self.sites_a), len(self.sites_b)
        fig = new_figure(1.5 + 0.6 * n_b, 1.0 + 0.5 * n_a)
        ax = fig.add_subplot()
        values = self.values.cpu().numpy()
        low, high = (0.0, 2.0) if self.index in _DISTANCES else (min(0.0, float(values.min())), 1.0)
        image = ax.imshow(values, vmin=low, vmax=high, cmap="viridis_r" if self.index in _DISTANCES else "viridis",
                          aspect="auto")
        ax.set_xticks(range(n_b), [_label(s) for s in self.sites_b], rotation=45, ha="right")
        ax.set_yticks(range(n_a), [_label(s) for s in self.sites_a])
        ax.set_xlabel("sites of model B")
        ax.set_ylabel("sites of model A")
        if n_a * n_b <= 400:
            for i in range(n_a):
                for j in range(n_b):
                    v = float(self.values[i, j])
                    mark = " (n.s.)" if self.p_values is not None and float(self.p_values[i, j]) > 0.05 else ""
                    bright = (v - low) / (high - low) > 0.6
                    ax.text(j, i, f"{v:.2f}{mark}", ha="center", va="center", fontsize=7,
                            color=("white" if bright else "black") if self.index in _DISTANCES else
                            ("black" if bright else "white"))
        fig.colorbar(image, ax=ax, label=_TITLES.get(self.index, self.index))
        return fig

    def _repr_html_(self) -> str:
        """The matrix itself as an HTML table (rows: sites of model A), every label escaped."""
        head = "".join(f"<th>{html.escape(_label(s))}</th>" for s in self.sites_b)
        rows = []
        for i, a in enumerate(self.sites_a):
            cells = "".join(f"<td>{float(self.values[i, j]):.3f}</td>" for j in range(len(self.sites_b)))
            rows.append(f"<tr><th>{html.escape(_label(a))}</th>{cells}</tr>")
        title = html.escape(_TITLES.get(self.index, self.index))
        return (f"<table><caption>{title} (rows: model A, columns: model B)</caption>"
                f"<tr><th></th>{head}</tr>{''.join(rows)}</table>")


_TITLES = {"cka": "linear CKA", "debiased_cka": "debiased linear CKA", "rbf_cka": "RBF CKA",
           "cca": "mean canonical correlation", "svcca": "SVCCA", "pwcca": "PWCCA",
           "procrustes": "Procrustes distance"}


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


def _flatten(value: Tensor, site: Site, expected: int, fn: str = "cka_between", *,
             dtype: torch.dtype | None = torch.float64) -> Tensor:
    if value.ndim == 0 or value.shape[0] != expected:
        raise InputError(f"{fn}: the value at {site!r} has shape {tuple(value.shape)}, but its chunk has "
                         f"{expected} examples; a site's value must have the batch as dim 0.")
    flat = value.detach().reshape(expected, -1)
    flat = flat.to(dtype) if dtype is not None else flat.clone()
    _check_finite(flat, f"the value at {site!r}", fn)
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


def compare_sites(model_a: nn.Module, model_b: nn.Module, inputs: Inputs, sites_a: Site | str | Iterable[Site | str],
                  sites_b: Site | str | Iterable[Site | str], *, index: str = "cka", n_permutations: int = 0,
                  n_bootstrap: int = 0, batch_size: int = 256, seed: int = 0) -> SimilarityMatrix:
    """Any similarity index between every site of ``model_a`` and every site of ``model_b``, with its controls.

    Streams ``inputs`` through both models once, keeps each site's values flattened to ``(n, -1)``
    (memory ``n × width`` per site: for a large ``n`` and linear CKA use `cka_between`), then
    computes ``INDICES[index]`` for every pair. A permutation baseline compares the site of A with
    its rows shuffled (the pairing of examples broken: what the index gives by chance at this
    ``n`` and width); a bootstrap resamples the examples with replacement. Models are left as found.

    Args:
        model_a: any ``nn.Module``.
        model_b: any ``nn.Module``; may be ``model_a`` itself.
        inputs: the examples both models are called with.
        sites_a: sites of ``model_a`` (rows); sites_b: sites of ``model_b`` (columns).
        index: a key of `INDICES`: ``"cka"`` (linear), ``"debiased_cka"``, ``"rbf_cka"`` (bandwidth 1 ×
            median distance), ``"cca"`` (mean canonical correlation), ``"svcca"``, ``"pwcca"`` or
            ``"procrustes"`` (a distance: lower is more similar).
        n_permutations: shuffles per cell for the permutation baseline (0: none).
        n_bootstrap: resamples per cell for the bootstrap interval (0: none).
        batch_size: examples per forward pass.
        seed: seeds the shuffles and resamples.

    Returns:
        A `SimilarityMatrix` with ``index`` set, and its ``null_95``/``p_values`` and
        ``ci_low``/``ci_high`` when asked for.

    Raises:
        SiteNotFoundError: an unknown site (before any forward pass).
        InputError: an unknown ``index``, negative counts, bad inputs, or an error of the index
            itself (a constant site, too few examples).

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> x = torch.randn(60, 4, generator=torch.Generator().manual_seed(0))
        >>> sim = compare_sites(model, model, x, ["0", "2"], ["0", "2"], index="debiased_cka", n_permutations=20)
        >>> sim.values.diagonal().tolist(), bool((sim.p_values.diagonal() < 0.05).all())
        ([1.0, 1.0], True)

    References:
        Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019 (the
        layer-by-layer matrices); Efron and Tibshirani, "An Introduction to the Bootstrap", 1993.
    """
    if index not in INDICES:
        raise InputError(f"compare_sites: unknown index {index!r}; choose one of {sorted(INDICES)}.")
    n_permutations = check_int("compare_sites: n_permutations", n_permutations, at_least=0)
    n_bootstrap = check_int("compare_sites: n_bootstrap", n_bootstrap, at_least=0)
    same_model = model_a is model_b
    keys_a = [resolve_site(model_a, s)[0] for s in as_sites(sites_a)]
    keys_b = [resolve_site(model_b, s)[0] for s in as_sites(sites_b)]
    n = validate_inputs(model_a, inputs)
    if not same_model:
        validate_inputs(model_b, inputs)
    if n < 2:
        raise InputError(f"compare_sites needs at least 2 examples, got {n}.")
    chunks: dict[tuple[int, Site], list[Tensor]] = {}
    for offset, values in _stream_both(model_a, model_b, inputs, keys_a, keys_b, same_model, batch_size):
        expected = min(batch_size, n - offset)
        for m, site_values in values.items():
            for site, value in site_values.items():
                chunks.setdefault((m, site), []).append(_flatten(value, site, expected, "compare_sites",
                                                                 dtype=None))
    side_b = 0 if same_model else 1
    data_a = [torch.cat(chunks[(0, s)]) for s in keys_a]
    data_b = [torch.cat(chunks[(side_b, s)]) for s in keys_b]
    fn = INDICES[index]
    shape = (len(keys_a), len(keys_b))
    values = torch.empty(shape, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    shuffles = [torch.randperm(n, generator=gen) for _ in range(n_permutations)]
    resamples = [torch.randint(0, n, (n,), generator=gen) for _ in range(n_bootstrap)]
    null = torch.empty(*shape, n_permutations, dtype=torch.float64)
    boot = torch.empty(*shape, n_bootstrap, dtype=torch.float64)
    with warnings.catch_warnings():
        # CCA's "too few examples" warning fires once per cell and per shuffle; report it once.
        warnings.simplefilter("once")
        for i, xa in enumerate(data_a):
            for j, yb in enumerate(data_b):
                values[i, j] = fn(xa, yb)
                for k, perm in enumerate(shuffles):
                    null[i, j, k] = fn(xa[perm], yb)
                for k, rows in enumerate(resamples):
                    boot[i, j, k] = fn(xa[rows], yb[rows])
    null_95 = p_values = ci_low = ci_high = None
    if n_permutations:
        distance = index in _DISTANCES
        null_95 = null.quantile(0.05 if distance else 0.95, dim=-1)
        hits = (null <= values[..., None]) if distance else (null >= values[..., None])
        p_values = (1.0 + hits.sum(-1).double()) / (1.0 + n_permutations)
    if n_bootstrap:
        ci_low, ci_high = boot.quantile(0.025, dim=-1), boot.quantile(0.975, dim=-1)
    return SimilarityMatrix(values, tuple(keys_a), tuple(keys_b), index, null_95, p_values, ci_low, ci_high)
