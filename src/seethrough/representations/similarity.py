"""CKA between every pair of sites of one or two models, over a dataset streamed once.

`cka_between` returns a `SimilarityMatrix` (values, site labels, a heatmap and a table).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..core.batching import batches, stream
from ..core.errors import InputError
from ..core.inputs import validate_inputs
from ..core.results import Result, new_figure
from ..core.sites import Site, as_sites, resolve_site
from ..core.types import Inputs
from ._arrays import _center, _check_finite
from ._cka_terms import _Centered, _Moments, _ratio

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["cka_between", "SimilarityMatrix"]

def _label(site: Site) -> str:
    return site.path if repr(site) == f"Site({site.path!r})" else repr(site)


@dataclass(frozen=True)
class SimilarityMatrix(Result):
    """Linear CKA between every site of ``sites_a`` (rows) and every site of ``sites_b`` (columns).

    ``values`` is a float64 tensor of shape ``(len(sites_a), len(sites_b))``.
    """

    values: Tensor
    sites_a: tuple[Site, ...]
    sites_b: tuple[Site, ...]

    def to_frame(self) -> pandas.DataFrame:
        """One row per pair: columns ``site_a``, ``site_b``, ``cka`` (pivot for the matrix)."""
        import pandas as pd

        rows = [(_label(a), _label(b), float(self.values[i, j]))
                for i, a in enumerate(self.sites_a) for j, b in enumerate(self.sites_b)]
        return pd.DataFrame(rows, columns=["site_a", "site_b", "cka"])

    def plot(self) -> Figure:
        """A heatmap of the matrix (a matplotlib Figure), values written in the cells."""
        n_a, n_b = len(self.sites_a), len(self.sites_b)
        fig = new_figure(1.5 + 0.6 * n_b, 1.0 + 0.5 * n_a)
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
        """The matrix itself as an HTML table (rows: sites of model A), every label escaped."""
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
