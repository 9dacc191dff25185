"""The unit graph of a transformer: attention heads as node groups on a residual stream (for `partition`).

Supported attention layouts: a module with ``nn.Linear`` children ``q, k, v, o`` (or ``q_proj, k_proj,
v_proj`` and ``o_proj`` / ``out_proj``, or ``query, key, value, out``) and an int attribute
``n_heads`` / ``num_heads`` / ``n_head`` / ``num_attention_heads``; and ``nn.MultiheadAttention``
with packed ``in_proj_weight``. Unit ``i`` of q, k and v belongs to head ``i // d_head``. Any
other module whose class name says "attention" is an unsupported layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from ..core.errors import InputError

_NAMES = (("q", "k", "v", "o"), ("q_proj", "k_proj", "v_proj", "o_proj"), ("q_proj", "k_proj", "v_proj", "out_proj"),
          ("query", "key", "value", "out"))
_HEAD_ATTRS = ("n_heads", "num_heads", "n_head", "num_attention_heads")
SUPPORTED = ("a module with nn.Linear children q, k, v, o (or q_proj/k_proj/v_proj/o_proj|out_proj, or "
             "query/key/value/out) and an int n_heads / num_heads / n_head / num_attention_heads attribute, or "
             "nn.MultiheadAttention with a packed in_proj_weight")


@dataclass(frozen=True)
class Layout:
    """One attention module: its path, number of heads, and |W| of q, k, v ``(d_in, n)`` and o ``(n, d_out)``."""

    path: str
    n_heads: int
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    o: np.ndarray
    q_path: str  # the module path of q, k, v ("" for a packed projection: not an nn.Linear)
    k_path: str
    v_path: str
    o_path: str


def _abs_t(weight: object) -> np.ndarray:
    return weight.detach().abs().double().cpu().T.numpy()  # type: ignore[attr-defined]  # a weight tensor


def layouts(model: nn.Module) -> tuple[list[Layout], list[str]]:
    """The supported attention modules of ``model`` and the paths of unsupported attention-like ones."""
    found: list[Layout] = []
    unknown: list[str] = []
    inside: set[str] = set()
    for path, module in model.named_modules():
        if any(path.startswith(p + ".") for p in inside):
            continue
        if isinstance(module, nn.MultiheadAttention):
            if not module._qkv_same_embed_dim or module.in_proj_weight is None:
                unknown.append(path)
                continue
            w = module.in_proj_weight
            d = module.embed_dim
            found.append(Layout(path, module.num_heads, _abs_t(w[:d]), _abs_t(w[d:2 * d]), _abs_t(w[2 * d:]),
                                _abs_t(module.out_proj.weight), "", "", "", f"{path}.out_proj"))
            inside.add(path)
            continue
        children = dict(module.named_children())
        names = next((n for n in _NAMES if all(isinstance(children.get(c), nn.Linear) for c in n)), None)
        heads = next((getattr(module, a) for a in _HEAD_ATTRS if isinstance(getattr(module, a, None), int)), None)
        if names is not None and heads is not None and heads > 0:
            q, k, v, o = (children[c] for c in names)
            if q.out_features % heads or k.out_features != q.out_features or o.in_features != v.out_features:
                unknown.append(path)
                continue
            prefix = f"{path}." if path else ""
            found.append(Layout(path, heads, _abs_t(q.weight), _abs_t(k.weight), _abs_t(v.weight), _abs_t(o.weight),
                                *(prefix + c for c in names)))
            inside.add(path)
        elif "attention" in type(module).__name__.lower() and path:
            unknown.append(path)
    return found, unknown


def residual_graph(model: nn.Module, found: list[Layout]) -> tuple[list[str | None], list[int],
                                                                list[tuple[int, int, np.ndarray]], list[np.ndarray],
                                                                list[tuple[str, int]]]:
    """Groups, sizes, edges, merge keys and heads of the residual-stream unit graph.

    Group 0 is the stream's origin (the embedding: ``d_model`` unlabelled input nodes). A layer that
    reads ``d_model`` features reads the stream: an edge from every earlier writer (group 0, each
    attention output ``o``, each layer that writes ``d_model`` features); any other layer reads the
    latest earlier layer of its input size. q, k and v read the stream; o reads v.
    """
    d = found[0].q.shape[0]
    if any(lay.q.shape[0] != d or lay.o.shape[1] != d for lay in found):
        raise InputError("the attention modules read or write streams of different widths; partition reads one "
                         "residual stream.")
    members = {p for lay in found for p in (lay.q_path, lay.k_path, lay.v_path, lay.o_path) if p}
    by_path = {lay.path: lay for lay in found}
    paths: list[str | None] = [None]
    sizes, edges, merge = [d], [], [np.full(d, -1)]
    writers = [0]
    heads: list[tuple[str, int]] = []
    weighted = [(p, m) for p, m in model.named_modules()
                if p in by_path or (isinstance(m, (nn.Linear, nn.Conv2d)) and p not in members)]
    for i, (path, module) in enumerate(weighted):
        if isinstance(module, nn.Conv2d):
            raise InputError(f"{path!r} is a conv layer in a model with attention; partition reads such a model as a "
                             "residual stream of linear layers and attention heads only.")
        if path in by_path:
            lay = by_path[path]
            n_units = lay.q.shape[1]
            keys = sum(h for _, h in heads) + np.arange(n_units) // (n_units // lay.n_heads)
            for block, name in ((lay.q, lay.q_path), (lay.k, lay.k_path), (lay.v, lay.v_path)):
                paths.append(name or f"{path}.in_proj")
                sizes.append(block.shape[1])
                merge.append(keys if block.shape[1] == n_units else np.full(block.shape[1], -1))
                edges.extend((w, len(paths) - 1, block) for w in writers)
            v_group = len(paths) - 1
            paths.append(lay.o_path)
            sizes.append(d)
            merge.append(np.full(d, -1))
            edges.append((v_group, len(paths) - 1, lay.o))
            writers.append(len(paths) - 1)
            heads.append((path, lay.n_heads))
            continue
        block = _abs_t(module.weight)
        n_in, n_out = block.shape
        last = i == len(weighted) - 1
        if n_in == d and n_out == d and not last:
            raise InputError(f"layer {path!r} maps {d} features to {d}, the width of the residual stream, so partition "
                             "cannot tell whether it reads the stream or the layer before it; pass heads=False to read "
                             "the layers as a plain chain.")
        if n_in == d:
            edges.extend((w, len(paths), block) for w in writers)
        else:
            source = next((g for g in range(len(paths) - 1, 0, -1) if sizes[g] == n_in and g not in writers
                           and merge[g].max(initial=-1) < 0), None)
            if source is None:
                raise InputError(f"no earlier layer gives the {n_in} inputs of {path!r}, and it does not read the "
                                 f"{d}-wide residual stream.")
            edges.append((source, len(paths), block))
        paths.append(path)
        sizes.append(n_out)
        merge.append(np.full(n_out, -1))
        if n_out == d and not last:
            writers.append(len(paths) - 1)
    return paths, sizes, edges, merge, heads
