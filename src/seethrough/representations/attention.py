"""Attention patterns, attention rollout and attention flow: where does a position's information come from?

Representations / tokens and attention (survey §5.4). `attention_patterns` captures the attention
probabilities at any sites (a module output such as ``blocks.0.attn.pattern``, or the second element
of a HuggingFace eager attention module: ``Site("encoder.layer.0.attention.self", element=1)``), with
padding masked from the inputs' ``attention_mask``. `attention_rollout` and `attention_flow` compose
the layers (Abnar & Zuidema 2020): each layer's head-averaged attention plus the residual identity,
multiplied through the layers (rollout) or read as capacities of a max-flow over the layer graph
(flow). `rollout` and `flow` are the same computations on tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from ..core.batching import batches, stream
from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError
from ..core.inputs import validate_inputs
from ..core.results import Result, new_figure
from ..core.sites import Site, as_sites, resolve_site
from ..core.types import Inputs
from ..evidence.finding import Finding

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["AttentionMaps", "attention_patterns", "attention_rollout", "attention_flow", "rollout", "flow"]

#: Max-flow capacities are quantised to multiples of 2**-24 for scipy's integer max-flow (the fast path).
_SCALE = 2 ** 24


@dataclass(frozen=True)
class AttentionMaps(Result):
    """Attention maps per example, layer and head: ``values[b, l, h, i, j]`` is what query ``i`` takes from ``j``.

    For raw patterns ``j`` is a position of the layer's input; for rollout and flow ``j`` is an
    *input* token and ``l`` the layer whose output position ``i`` is explained (one "head").

    Attributes:
        sites: the attention sites, one per layer, in order.
        method: ``"attention"``, ``"rollout"`` or ``"flow"``.
        values: ``(batch, layers, heads, seq, seq)``; rows and columns of padding are 0.
        mask: ``(batch, seq)`` bool, True on real tokens.
        tokens: the token strings of each example (``None``: positions are numbered).
    """

    sites: tuple[Site, ...]
    method: str
    values: Tensor
    mask: Tensor
    tokens: tuple[tuple[str, ...], ...] | None = None

    def labels(self, example: int = 0) -> list[str]:
        """The position labels of one example: its tokens, or ``"0", "1", ...``."""
        seq = self.values.shape[-1]
        if self.tokens is None:
            return [str(i) for i in range(seq)]
        return list(self.tokens[example])

    def importance(self, position: int = -1, *, layer: int = -1) -> Tensor:
        """``(batch, seq)``: the head-averaged row of query ``position`` at ``layer`` (0 on padding).

        For rollout and flow this is the attribution of that position's output to each input token.
        """
        return self.values[:, layer].mean(1)[:, position]

    def to_findings(self, site: str, *, position: int = -1, k: int = 1, target: int | None = None) -> list[Finding]:
        """A ``"route"`` `Finding`: position ``position`` reads the ``k`` input positions it takes most from.

        The positions are ranked by their importance (`importance` at the top layer, averaged over the
        examples; the query position itself left out). ``site`` names where `validate` blanks them
        (e.g. the token embedding ``"embed"``), against random other positions.

        Example:
            >>> from seethrough.bench.zoo import TinyTransformer
            >>> model = TinyTransformer(10, 5, n_layers=2)
            >>> r = attention_rollout(model, torch.arange(5)[None], ["blocks.0.attn.pattern", "blocks.1.attn.pattern"])
            >>> r.to_findings("embed")[0].site.positions
            (0,)
        """
        seq = self.values.shape[-1]
        query = check_int("position", position, at_least=-seq, at_most=seq - 1) % seq
        n = check_int("k", k, at_least=1, at_most=seq - 1)
        mean = self.importance(query).double().mean(0)
        mean[query] = -float("inf")
        top = mean.topk(n).indices.tolist()
        names = self.labels(0)
        claim = (f"{self.method}: position {query} ({names[query]!r}) reads input position(s) {top} "
                 f"({', '.join(repr(names[p]) for p in top)})")
        return [Finding("route", claim, site=Site(site, positions=top), target=target,
                        score=float(mean[top].sum()),
                        evidence={"method": self.method, "position": query, "importance": mean.clamp_min(0).tolist()})]

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        b, n_layers, n_heads, seq, _ = self.values.shape
        idx = torch.cartesian_prod(torch.arange(b), torch.arange(n_layers), torch.arange(n_heads), torch.arange(seq),
                                   torch.arange(seq)).view(-1, 5)
        keep = self.mask[idx[:, 0], idx[:, 3]] & self.mask[idx[:, 0], idx[:, 4]]
        idx = idx[keep]
        flat = self.values[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3], idx[:, 4]]
        labels = [self.labels(e) for e in range(b)]
        return pd.DataFrame({
            "example": idx[:, 0].numpy(), "layer": idx[:, 1].numpy(),
            "site": [self.sites[int(i)].path for i in idx[:, 1]], "head": idx[:, 2].numpy(),
            "query": idx[:, 3].numpy(), "key": idx[:, 4].numpy(),
            "query_token": [labels[int(e)][int(i)] for e, i in zip(idx[:, 0], idx[:, 3], strict=True)],
            "key_token": [labels[int(e)][int(j)] for e, j in zip(idx[:, 0], idx[:, 4], strict=True)],
            "value": flat.double().numpy(),
        })

    def plot(self, example: int = 0) -> Figure:
        """One heatmap per layer (heads averaged) for ``example``, queries down, keys across, with token labels."""
        n_layers = self.values.shape[1]
        real = self.mask[example]
        labels = [t for t, keep in zip(self.labels(example), real.tolist(), strict=True) if keep]
        cols = min(n_layers, 4)
        rows = -(-n_layers // cols)
        fig = new_figure(2.6 * cols + 0.5, 2.6 * rows)
        for layer in range(n_layers):
            ax = fig.add_subplot(rows, cols, layer + 1)
            grid = self.values[example, layer].mean(0)[real][:, real].double().numpy()
            ax.imshow(grid, cmap="viridis", vmin=0.0)
            ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
            ax.set_yticks(range(len(labels)), labels, fontsize=6)
            ax.set_title(f"{self.method} · layer {layer}", fontsize=8)
        return fig


# -- engines on tensors --------------------------------------------------------------------------


def _check_maps(attentions: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    if not isinstance(attentions, Tensor) or not attentions.is_floating_point():
        raise InputTypeError(f"attentions must be a float tensor (batch, layers, heads, seq, seq), got "
                             f"{type(attentions).__name__}.")
    if attentions.ndim != 5 or attentions.shape[-1] != attentions.shape[-2]:
        raise InputError(f"attentions must be (batch, layers, heads, seq, seq), got shape {tuple(attentions.shape)}.")
    if not bool(torch.isfinite(attentions).all()) or bool((attentions < 0).any()):
        raise InputError("attentions must be finite and non-negative (attention probabilities).")
    b, _, _, seq, _ = attentions.shape
    if mask is None:
        mask = torch.ones(b, seq, dtype=torch.bool)
    mask = torch.as_tensor(mask).to(attentions.device)
    if tuple(mask.shape) != (b, seq):
        raise InputError(f"mask must be (batch, seq) = {(b, seq)}, got {tuple(mask.shape)}.")
    return attentions.double(), mask.bool()


def _residual_maps(attentions: Tensor, mask: Tensor, residual: float) -> Tensor:
    """``(batch, layers, seq, seq)``: head-averaged attention over real keys, mixed with the identity, rows summing to 1."""
    keys = mask[:, None, None, :].to(attentions.dtype)
    a = attentions.mean(2) * keys
    sums = a.sum(-1, keepdim=True)
    a = torch.where(sums > 0, a / sums.clamp_min(1e-300), a)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return residual * eye + (1 - residual) * a


def _mask_rows_cols(values: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(values.dtype)
    return values * m[:, None, None, :, None] * m[:, None, None, None, :]


def rollout(attentions: Tensor, mask: Tensor | None = None, *, residual: float = 0.5) -> Tensor:
    """Attention rollout: ``R_l = Ã_l R_{l-1}``, ``Ã_l = residual·I + (1 - residual)·mean_heads(A_l)``.

    Args:
        attentions: ``(batch, layers, heads, seq, seq)`` attention probabilities, layers in order.
        mask: ``(batch, seq)``, True on real tokens (``None``: all real). Attention to padding is
            dropped and each row renormalised over the real keys.
        residual: the identity's weight (Abnar & Zuidema: 0.5; 0 multiplies the raw attentions).

    Returns:
        ``(batch, layers, 1, seq, seq)`` float64: row ``i`` of layer ``l`` is how much output
        position ``i`` of layer ``l`` takes from each input token (rows sum to 1 over real tokens).

    Example:
        >>> a = torch.tensor([[1.0, 0.0], [0.5, 0.5]]).expand(1, 2, 1, 2, 2)
        >>> rollout(a)[0, 1, 0]
        tensor([[1.0000, 0.0000],
                [0.4375, 0.5625]], dtype=torch.float64)

    References:
        Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020.
    """
    weight = check_float("residual", residual, at_least=0.0, at_most=1.0)
    maps, m = _check_maps(attentions, mask)
    step = _residual_maps(maps, m, weight)
    out = torch.empty_like(step)
    current = step[:, 0]
    out[:, 0] = current
    for layer in range(1, step.shape[1]):
        current = step[:, layer] @ current
        out[:, layer] = current
    return _mask_rows_cols(out[:, :, None], m)


def _flows_fast(caps: list[np.ndarray], queries: list[int]) -> np.ndarray:
    """Max-flows from each input token to the ``queries`` positions of each layer (the fast path).

    The first two layers have closed forms: into layer 1 the only path from token ``j`` to ``(1, i)``
    is its edge, so the flow is ``Ã_1[i, j]``; into layer 2 the paths ``j → (1, k) → (2, i)`` share no
    edge, so the flow is ``Σ_k min(Ã_1[k, j], Ã_2[i, k])``. Deeper layers run scipy's compiled
    max-flow on capacities quantised to multiples of 2⁻²⁴.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    n_layers, s = len(caps), caps[0].shape[0]
    out = np.zeros((n_layers, s, s))
    out[0, queries] = caps[0][queries]
    if n_layers > 1:
        out[1, queries] = np.minimum(caps[1][queries][:, :, None], caps[0][None, :, :]).sum(1)
    for layer in range(2, n_layers):
        n = (layer + 2) * s
        rows, cols, data = [], [], []
        for k in range(layer + 1):  # edges from layer-k nodes (input side) to layer-(k+1) nodes
            w = np.rint(caps[k] * _SCALE).astype(np.int32)  # w[i, j]: node (k+1, i) takes from (k, j)
            i, j = np.nonzero(w)
            rows.append(k * s + j)
            cols.append((k + 1) * s + i)
            data.append(w[i, j])
        graph = csr_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        for i in queries:
            sink = (layer + 1) * s + i
            for j in range(s):
                out[layer, i, j] = maximum_flow(graph, j, sink).flow_value / _SCALE
    return out


def _flows_exact(caps: list[np.ndarray], queries: list[int]) -> np.ndarray:
    """The same max-flows with networkx on float capacities, every layer (the slow reference)."""
    import networkx as nx

    s = caps[0].shape[0]
    out = np.zeros((len(caps), s, s))
    for layer in range(len(caps)):
        graph = nx.DiGraph()
        for k in range(layer + 1):
            for i in range(s):
                for j in range(s):
                    if caps[k][i, j] > 0:
                        graph.add_edge((k, j), (k + 1, i), capacity=float(caps[k][i, j]))
        for i in queries:
            for j in range(s):
                if (0, j) in graph and (layer + 1, i) in graph:
                    out[layer, i, j] = nx.maximum_flow_value(graph, (0, j), (layer + 1, i))
    return out


def flow(attentions: Tensor, mask: Tensor | None = None, *, residual: float = 0.5, exact: bool = False,
         positions: Sequence[int] | None = None) -> Tensor:
    """Attention flow: the max-flow from each input token to each position of each layer, rows normalised.

    The layer graph has a node per (layer, position); node ``(l, i)`` takes from ``(l-1, j)`` with
    capacity ``Ã_l[i, j]`` (as in `rollout`). Each value is the maximum flow from input token ``j``
    to node ``(l, i)``; each row is then divided by its sum over input tokens, as the reference
    implementation of Abnar & Zuidema does. That is up to ``layers · seq²`` max-flows per example, so
    flow is meant for short sequences (and ``positions`` computes only the rows asked for). The fast
    path uses closed forms for the first two layers (into layer 2 the paths through different middle
    nodes share no edge) and scipy's compiled max-flow, on capacities quantised to multiples of 2⁻²⁴,
    beyond; ``exact=True`` runs networkx on the float capacities at every layer (the slow reference).

    Args:
        attentions: ``(batch, layers, heads, seq, seq)`` attention probabilities.
        mask: ``(batch, seq)``, True on real tokens (``None``: all real); padding is left out of the graph.
        residual: the identity's weight in ``Ã``.
        exact: use networkx on float capacities instead of the fast path.
        positions: the query positions (rows) to compute, negative counting from the end; ``None``:
            all. Other rows are 0, as are padded positions.

    Returns:
        ``(batch, layers, 1, seq, seq)`` float64 (rows sum to 1 over real tokens; padding 0).

    Example:
        >>> a = torch.tensor([[1.0, 0.0], [0.5, 0.5]]).expand(1, 2, 1, 2, 2)
        >>> flow(a)[0, 1, 0].round(decimals=4)
        tensor([[1.0000, 0.0000],
                [0.4000, 0.6000]], dtype=torch.float64)

    References:
        Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020.
    """
    weight = check_float("residual", residual, at_least=0.0, at_most=1.0)
    if not isinstance(exact, bool):
        raise InputTypeError(f"exact must be a bool, got {type(exact).__name__}.")
    maps, m = _check_maps(attentions, mask)
    step = _residual_maps(maps, m, weight)
    b, n_layers, seq, _ = step.shape
    wanted = _positions(positions, seq)
    out = torch.zeros(b, n_layers, 1, seq, seq, dtype=torch.float64)
    for e in range(b):
        real = m[e].nonzero().squeeze(1)
        where = {int(p): k for k, p in enumerate(real.tolist())}
        queries = [where[p] for p in wanted if p in where]
        caps = [step[e, k][real][:, real].cpu().numpy() for k in range(n_layers)]
        values = (_flows_exact if exact else _flows_fast)(caps, queries)
        sums = values.sum(-1, keepdims=True)
        values = np.divide(values, sums, out=np.zeros_like(values), where=sums > 0)
        block = torch.from_numpy(values)
        out[e, :, 0, real[:, None], real[None, :]] = block
    return out


def _positions(positions: Sequence[int] | None, seq: int) -> list[int]:
    if positions is None:
        return list(range(seq))
    if isinstance(positions, (str, bytes)) or not isinstance(positions, Sequence) or not positions:
        raise InputTypeError(f"positions must be a non-empty list of ints, got {positions!r}.")
    out = []
    for p in positions:
        k = check_int("positions[...]", p, at_least=-seq, at_most=seq - 1)
        out.append(k % seq)
    return sorted(set(out))


# -- on a model ----------------------------------------------------------------------------------


def _real_mask(inputs: Inputs, batch: int, seq: int) -> Tensor:
    if isinstance(inputs, dict) and isinstance(inputs.get("attention_mask"), Tensor):
        mask = inputs["attention_mask"].detach().cpu().bool()
        if tuple(mask.shape) != (batch, seq):
            raise InputError(f"inputs['attention_mask'] has shape {tuple(mask.shape)} but the attention maps "
                             f"are for (batch, seq) = {(batch, seq)}.")
        return mask
    return torch.ones(batch, seq, dtype=torch.bool)


def _check_tokens(tokens: Sequence[Sequence[str]] | None, batch: int, seq: int) -> tuple[tuple[str, ...], ...] | None:
    if tokens is None:
        return None
    if isinstance(tokens, str) or not isinstance(tokens, Sequence) or len(tokens) != batch:
        raise InputError(f"tokens must be one list of {seq} strings per example ({batch} examples), e.g. from "
                         "seethrough.hf.token_strings(tokenizer, inputs).")
    out = tuple(tuple(str(t) for t in row) for row in tokens)
    if any(len(row) != seq for row in out):
        raise InputError(f"every example's tokens must have {seq} entries (one per position, padding included).")
    return out


def attention_patterns(model: nn.Module, inputs: Inputs, sites: Site | str | Sequence[Site | str], *,
                       tokens: Sequence[Sequence[str]] | None = None, batch_size: int = 64) -> AttentionMaps:
    """Capture the attention probabilities at ``sites`` (one per layer, in order), padding masked.

    Each site's value must be ``(batch, heads, seq, seq)`` probabilities (rows sum to 1; a
    ``(batch, seq, seq)`` value is one head): e.g.
    ``blocks.{i}.attn.pattern`` of the zoo's `TinyTransformer`, or
    ``Site("encoder.layer.{i}.attention.self", element=1)`` of a HuggingFace BERT loaded with eager
    attention (``seethrough.hf.load_minilm(eager_attention=True)``). A dict input's
    ``attention_mask`` marks the real tokens; attention rows and columns of padding are set to 0.

    Args:
        model: any ``nn.Module`` (left as found).
        inputs: as for `capture`.
        sites: the attention sites, first layer first.
        tokens: each example's token strings (labels for tables and plots).
        batch_size: rows per forward pass.

    Returns:
        `AttentionMaps` with ``method="attention"``.

    Raises:
        SiteNotFoundError: unknown site (before any forward pass).
        InputError: a site's value is not ``(batch, heads, seq, seq)`` probabilities.

    Example:
        >>> from seethrough.bench.zoo import TinyTransformer
        >>> model = TinyTransformer(10, 6, n_layers=2)
        >>> maps = attention_patterns(model, torch.arange(6)[None], ["blocks.0.attn.pattern", "blocks.1.attn.pattern"])
        >>> tuple(maps.values.shape), float(maps.values[0, 0, 0, 0, 1])  # causal: position 0 sees itself only
        ((1, 2, 2, 6, 6), 0.0)
    """
    check_int("batch_size", batch_size, at_least=1)
    keys = as_sites(sites)
    resolved = [resolve_site(model, s)[0] for s in keys]
    validate_inputs(model, inputs)
    parts: list[Tensor] = []
    for _, values in stream(model, batches(inputs, batch_size), keys):
        layer_maps = []
        for key, site in zip(keys, resolved, strict=True):
            v = values[key]
            if v.ndim == 3:  # a single head: (batch, seq, seq)
                v = v[:, None]
            if v.ndim != 4 or v.shape[-1] != v.shape[-2] or not v.is_floating_point():
                raise InputError(f"{site!r} gives a value of shape {tuple(v.shape)}; attention probabilities are "
                                 "(batch, heads, seq, seq) or (batch, seq, seq). Name the attention module's "
                                 "probabilities (e.g. element=1 of a HuggingFace attention module with eager "
                                 "attention).")
            layer_maps.append(v.detach().cpu().float())
        shapes = {tuple(t.shape[2:]) for t in layer_maps}
        if len(shapes) != 1:
            raise InputError(f"the sites' attention maps differ in shape: {sorted(shapes)}; give sites of one model.")
        parts.append(torch.stack(layer_maps, 1))
    values = torch.cat(parts)
    b, seq = values.shape[0], values.shape[-1]
    mask = _real_mask(inputs, b, seq)
    rows = values.sum(-1)
    real_rows = mask[:, None, None, :].expand_as(rows)
    if bool(((rows[real_rows] - 1).abs() > 1e-3).any()):
        raise InputError("the captured maps' rows do not sum to 1; these sites do not hold attention probabilities "
                         "(did you name the scores before the softmax?).")
    return AttentionMaps(tuple(resolved), "attention", _mask_rows_cols(values, mask).float(), mask,
                         _check_tokens(tokens, b, seq))


def attention_rollout(model: nn.Module, inputs: Inputs, sites: Site | str | Sequence[Site | str], *,
                      residual: float = 0.5, tokens: Sequence[Sequence[str]] | None = None,
                      batch_size: int = 64) -> AttentionMaps:
    """Attention rollout (`rollout`) of the patterns at ``sites``: how much each position takes from each input token.

    Args:
        model, inputs, sites, tokens, batch_size: as for `attention_patterns`.
        residual: the identity's weight per layer (0.5 as in Abnar & Zuidema).

    Returns:
        `AttentionMaps` with ``method="rollout"`` and one "head".

    Example:
        >>> from seethrough.bench.zoo import TinyTransformer
        >>> model = TinyTransformer(10, 6, n_layers=2)
        >>> r = attention_rollout(model, torch.arange(6)[None], ["blocks.0.attn.pattern", "blocks.1.attn.pattern"])
        >>> round(float(r.importance(-1).sum()), 6)
        1.0

    References:
        Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020.
    """
    check_float("residual", residual, at_least=0.0, at_most=1.0)
    raw = attention_patterns(model, inputs, sites, tokens=tokens, batch_size=batch_size)
    values = rollout(raw.values, raw.mask, residual=residual).float()
    return AttentionMaps(raw.sites, "rollout", values, raw.mask, raw.tokens)


def attention_flow(model: nn.Module, inputs: Inputs, sites: Site | str | Sequence[Site | str], *,
                   residual: float = 0.5, exact: bool = False, positions: Sequence[int] | None = None,
                   tokens: Sequence[Sequence[str]] | None = None, batch_size: int = 64) -> AttentionMaps:
    """Attention flow (`flow`) of the patterns at ``sites``: max-flow from each input token, rows normalised.

    Args:
        model, inputs, sites, tokens, batch_size: as for `attention_patterns`.
        residual: the identity's weight per layer.
        exact: networkx on float capacities instead of the fast path.
        positions: the query positions to compute (``None``: all; see `flow`).

    Returns:
        `AttentionMaps` with ``method="flow"`` and one "head".

    Example:
        >>> from seethrough.bench.zoo import TinyTransformer
        >>> model = TinyTransformer(10, 4, n_layers=2)
        >>> f = attention_flow(model, torch.arange(4)[None], ["blocks.0.attn.pattern", "blocks.1.attn.pattern"])
        >>> round(float(f.importance(-1).sum()), 6)
        1.0

    References:
        Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020.
    """
    check_float("residual", residual, at_least=0.0, at_most=1.0)
    if not isinstance(exact, bool):
        raise InputTypeError(f"exact must be a bool, got {type(exact).__name__}.")
    raw = attention_patterns(model, inputs, sites, tokens=tokens, batch_size=batch_size)
    values = flow(raw.values, raw.mask, residual=residual, exact=exact, positions=positions).float()
    return AttentionMaps(raw.sites, "flow", values, raw.mask, raw.tokens)
