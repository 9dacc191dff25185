"""Weight importance: which weights matter for a task (EWC's Fisher, MAS, magnitude, SNIP, Taylor).

The weights area of the taxonomy (continual learning as a lens, frivolous weights). `importance`
returns an `Importance` map, one non-negative score per weight, shaped like each parameter, with
per-unit and per-layer reductions, the top weights as a boolean mask and safetensors I/O. Fisher
and MAS need per-example gradients: one ``vmap(grad(...))`` over the batch (`_functional`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, jacrev, vmap

from ..core.checks import check_float, check_int
from ..core.errors import InputError
from ..core.io import load_tensors, save_tensors
from ..core.results import Result, new_figure
from ..core.types import Inputs
from ._functional import (
    Loss,
    check_logits,
    cross_entropy,
    eval_mode,
    frozen_parameters,
    per_example_mean,
    prepare,
    run,
    split_inputs,
)

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["Importance", "importance", "METHODS", "FISHER_VARIANTS"]

METHODS = ("fisher", "mas", "magnitude", "snip", "taylor")
#: ``empirical``: squared per-example gradients at the given targets (EWC as usually implemented);
#: ``exact``: the expectation over the model's own predictive distribution (all classes);
#: ``sampled``: one label per example drawn from the model (``seed``); ``batched``: squared gradients of
#: mini-batch mean losses (Avalanche's EWC), which shrinks with the batch size.
FISHER_VARIANTS = ("empirical", "exact", "sampled", "batched")
#: Examples per vectorised chunk by default: 32-64 measured fastest (benchmarks/weights.py), ~0.6x a
#: Python loop of per-example passes on an MLP, where materialising all 256 gradients at once was 1.2x.
_CHUNK = 64


@dataclass(frozen=True)
class Importance(Result):
    """One importance score per weight (≥ 0, higher = more important), shaped like each parameter.

    Attributes:
        scores: ``{parameter name: tensor shaped like the parameter}``.
        method: ``"fisher"``, ``"mas"``, ``"magnitude"``, ``"snip"`` or ``"taylor"``.
        variant: the Fisher variant (``""`` for the other methods).
        n_examples: how many examples the scores average over (0 for magnitude).
    """

    scores: dict[str, Tensor]
    method: str
    variant: str = ""
    n_examples: int = 0

    def per_unit(self) -> dict[str, Tensor]:
        """``{name: (shape[0],)}``: each output unit's (row's, channel's) total score; a scalar parameter keeps its value."""
        return {n: s.reshape(s.shape[0], -1).sum(1) if s.ndim else s.reshape(1) for n, s in self.scores.items()}

    def per_layer(self) -> dict[str, float]:
        """``{module path: total score of its parameters}`` (``"fc1.weight"`` and ``"fc1.bias"`` add to ``"fc1"``)."""
        out: dict[str, float] = {}
        for n, s in self.scores.items():
            path = n.rpartition(".")[0]
            out[path] = out.get(path, 0.0) + float(s.sum())
        return out

    def top(self, fraction: float) -> dict[str, Tensor]:
        """Boolean masks of the ``fraction`` highest-scoring weights over the whole model (ties broken by order).

        Example:
            >>> r = Importance({"w": torch.tensor([0.1, 3.0, 2.0, 0.0])}, "magnitude")
            >>> r.top(0.5)["w"].tolist()
            [False, True, True, False]
        """
        fraction = check_float("fraction", fraction, at_least=0.0, at_most=1.0)
        flat = torch.cat([s.flatten() for s in self.scores.values()])
        keep = torch.zeros(flat.numel(), dtype=torch.bool)
        k = round(fraction * flat.numel())
        keep[torch.argsort(flat, descending=True, stable=True)[:k]] = True
        out, start = {}, 0
        for n, s in self.scores.items():
            out[n] = keep[start:start + s.numel()].reshape(s.shape)
            start += s.numel()
        return out

    def save(self, path: str | Path) -> None:
        """Write the scores as safetensors (``path``) with a JSON sidecar (method, variant, n_examples)."""
        save_tensors(path, self.scores, {"method": self.method, "variant": self.variant,
                                         "n_examples": self.n_examples})

    @classmethod
    def load(cls, path: str | Path) -> Importance:
        """Read what `save` wrote."""
        tensors, meta = load_tensors(path)
        return cls(tensors, str(meta.get("method", "")), str(meta.get("variant", "")), int(meta.get("n_examples", 0)))

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        rows = [{"parameter": n, "numel": s.numel(), "total": float(s.sum()), "mean": float(s.mean()),
                 "max": float(s.max())} for n, s in self.scores.items()]
        return pd.DataFrame(rows, columns=["parameter", "numel", "total", "mean", "max"])

    def plot(self) -> Figure:
        names = list(self.scores)
        fig = new_figure(max(4.0, 0.5 * len(names) + 2), 3)
        ax = fig.add_subplot()
        ax.bar(range(len(names)), [float(s.mean()) for s in self.scores.values()])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_ylabel("mean importance per weight")
        ax.set_title(f"{self.method} {self.variant}".strip())
        return fig


def importance(
    model: nn.Module,
    inputs: Inputs,
    targets: Any,
    *,
    method: str,
    variant: str = "empirical",
    loss: Loss | None = None,
    batch_size: int | None = None,
    seed: int = 0,
) -> Importance:
    """Score every weight of ``model`` for the task given by ``inputs`` and ``targets``.

    With ``g_i`` the gradient of example i's loss and ``ḡ`` that of the mean loss:

    - ``"fisher"``: the diagonal Fisher of EWC, ``mean_i g_i²`` (``variant="empirical"``); ``"exact"``
      takes the expectation over the model's predictive distribution, ``mean_i Σ_c p_ic (∇ log p_ic)²``;
      ``"sampled"`` draws one label per example from the model; ``"batched"`` is ``mean_b ḡ_b²`` over
      mini-batches of ``batch_size`` (default 32), as Avalanche's EWC computes it.
    - ``"mas"``: memory-aware synapses, ``mean_i |∂‖f(x_i)‖²/∂θ|`` (targets unused).
    - ``"magnitude"``: ``|θ|`` (inputs and targets unused).
    - ``"snip"``: connection sensitivity ``|θ ⊙ ḡ|``.
    - ``"taylor"``: the first-order Taylor estimate of the loss change when a weight is removed,
      per example, ``mean_i |θ ⊙ g_i|``.

    The model runs in eval mode through `torch.func.functional_call` on detached copies of its
    parameters: it is left exactly as found (no ``.grad``, flags, modes or hooks touched).

    Args:
        model: any ``nn.Module``.
        inputs: a tensor, tuple or dict of keyword arguments with ``batch`` rows.
        targets: ``(batch,)`` class indices for the default cross-entropy loss, or whatever ``loss``
            takes; may be None for ``"mas"``, ``"magnitude"`` and the exact and sampled Fisher.
        method: one of `METHODS`.
        variant: the Fisher variant, one of `FISHER_VARIANTS` (only with ``method="fisher"``).
        loss: ``loss(output, targets) -> scalar`` (mean over rows); default cross-entropy on logits.
            ``"exact"`` and ``"sampled"`` need logits and the default loss, and ignore ``targets``.
        batch_size: examples per vectorised chunk (default 64; memory is ``batch_size × parameters``);
            the mini-batch size of ``"batched"`` (default 32).
        seed: the labels drawn by ``"sampled"``.

    Returns:
        `Importance` with ``.scores`` ``{parameter name: tensor shaped like the parameter, ≥ 0}``.

    Raises:
        InputError: unknown method or variant, targets of the wrong length or range, an output that
            is not logits where logits are needed.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> r = importance(model, torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1]), method="fisher")
        >>> sorted(r.scores), r.scores["0.weight"].shape
        (['0.bias', '0.weight', '2.bias', '2.weight'], torch.Size([4, 3]))

    References:
        Kirkpatrick et al. 2017 (EWC); Kunstner et al. 2019 (empirical vs true Fisher); Aljundi et al.
        2018 (MAS); Lee et al. 2019 (SNIP); Molchanov et al. 2017, 2019 (Taylor pruning).
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    if variant not in FISHER_VARIANTS:
        raise InputError(f"variant must be one of {', '.join(FISHER_VARIANTS)}, got {variant!r}.")
    if variant != "empirical" and method != "fisher":
        raise InputError(f"variant={variant!r} applies to method='fisher' only; drop it for method={method!r}.")
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, at_least=1)
    seed = check_int("seed", seed)
    if method == "magnitude":
        return Importance({n: p.detach().abs().clone() for n, p in model.named_parameters()}, method)
    if method == "fisher" and variant in ("exact", "sampled") and loss is not None:
        raise InputError(f"the {variant} Fisher samples from the model's own categorical distribution, so it needs "
                         "logits and the default loss; drop loss= (or use variant='empirical').")
    model_labels = method == "fisher" and variant in ("exact", "sampled")
    n, target = prepare(model, inputs, targets, loss, need_targets=method != "mas" and not model_labels)
    objective = loss or cross_entropy
    params, buffers = frozen_parameters(model)
    chunk = batch_size or _CHUNK
    with eval_mode(model), torch.no_grad():
        if loss is None or model_labels:
            first = split_inputs(inputs, n)
            check_logits(run(model, params, buffers, first[1]([t[:1] for t in first[0]])), target)
    with eval_mode(model):
        if method == "mas":
            scores = per_example_mean(model, params, buffers, inputs, n, _squared_norm, None, chunk,
                                      lambda k, g: g.abs())
        elif method == "snip":
            g = grad(lambda p: objective(run(model, p, buffers, inputs), target))(params)
            scores = {k: (params[k] * g[k]).abs() for k in params}
        elif method == "taylor":
            scores = per_example_mean(model, params, buffers, inputs, n, objective, target, chunk,
                                      lambda k, g: (params[k] * g).abs())
        elif variant == "batched":
            scores = _batched_fisher(model, params, buffers, inputs, n, objective, target, batch_size or 32)
        elif variant == "exact":
            scores = _exact_fisher(model, params, buffers, inputs, n, batch_size)
        else:
            if variant == "sampled":
                target = _sample_labels(model, params, buffers, inputs, seed)
            scores = per_example_mean(model, params, buffers, inputs, n, objective, target, chunk,
                                      lambda k, g: g.square())
    return Importance({k: v.detach() for k, v in scores.items()}, method,
                      variant if method == "fisher" else "", n)


def _squared_norm(output: Any, target: Tensor | None) -> Tensor:
    """MAS's objective: the squared L2 norm of the output (of one example)."""
    return output.square().sum()


def _batched_fisher(model: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], inputs: Inputs,
                    n: int, objective: Loss, target: Tensor | None, batch_size: int) -> dict[str, Tensor]:
    from ..core.inputs import slice_inputs

    total = {k: torch.zeros_like(v) for k, v in params.items()}
    n_batches = 0
    for start in range(0, n, batch_size):
        part = slice_inputs(inputs, start, start + batch_size)
        t = None if target is None else target[start:start + batch_size]
        g = grad(lambda p, part=part, t=t: objective(run(model, p, buffers, part), t))(params)
        for k in total:
            total[k] += g[k].square()
        n_batches += 1
    return {k: v / n_batches for k, v in total.items()}


def _exact_fisher(model: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], inputs: Inputs, n: int,
                  batch_size: int | None) -> dict[str, Tensor]:
    """``mean_i Σ_c p_ic (∇ log p_ic)²``: one Jacobian of the log-probabilities per example, vectorised."""
    tensors, rebuild = split_inputs(inputs, n)

    def log_probs(p: dict[str, Tensor], rows: list[Tensor]) -> Tensor:
        return F.log_softmax(run(model, p, buffers, rebuild([r.unsqueeze(0) for r in rows]))[0], -1)

    def one(rows: list[Tensor]) -> dict[str, Tensor]:
        jac = jacrev(log_probs)(params, rows)  # {name: (n_classes, *shape)}
        probs = log_probs(params, rows).exp()
        return {k: torch.einsum("c,c...->...", probs, j.square()) for k, j in jac.items()}

    per = vmap(one, in_dims=([0] * len(tensors),), chunk_size=batch_size)(tensors)
    return {k: v.mean(0) for k, v in per.items()}


def _sample_labels(model: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], inputs: Inputs,
                   seed: int) -> Tensor:
    with torch.no_grad():
        probs = F.softmax(run(model, params, buffers, inputs), -1)
    return torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed)).squeeze(1)
