"""Learned weight masks: the fewest weights of a frozen network that keep a behaviour (Csordás et al. 2021).

The weights area of the taxonomy (weight masking). `learn_mask` trains one logit per weight of a
frozen model: a stochastic binary mask drawn from a Gumbel (logistic) sigmoid with a straight-through
gradient, under the task loss plus a penalty on the expected fraction of weights kept. The result,
`WeightMask`, holds the mask probabilities; ``apply`` and ``ablate`` return edited copies.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError
from ..core.io import load_tensors, save_tensors
from ..core.results import Result
from ..core.types import Inputs
from ._functional import (
    Loss,
    check_logits,
    cross_entropy,
    eval_mode,
    frozen_parameters,
    mask_figure,
    mask_table,
    masked_copy,
    prepare,
    run,
)

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["WeightMask", "learn_mask"]


@dataclass(frozen=True)
class WeightMask(Result):
    """A learned mask per parameter: the probability (in [0, 1]) that each weight is kept.

    Attributes:
        masks: ``{parameter name: tensor in [0, 1] shaped like the parameter}``; a weight is kept when > 0.5.
        accuracy: accuracy on the training inputs with the binary mask applied (NaN for a custom loss).
        dense_accuracy: accuracy of the unmasked model on the same inputs (NaN for a custom loss).
        density: the fraction of masked weights kept.
    """

    masks: dict[str, Tensor]
    accuracy: float
    dense_accuracy: float
    density: float

    def binary(self) -> dict[str, Tensor]:
        """``{name: bool tensor}``: the weights the mask keeps (probability > 0.5)."""
        return {n: m > 0.5 for n, m in self.masks.items()}

    def apply(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` with every masked weight that the binary mask drops set to zero (``model`` untouched)."""
        return self._edited(model, keep=True)

    def ablate(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` with the weights the mask keeps set to zero: the complement of `apply`."""
        return self._edited(model, keep=False)

    def _edited(self, model: nn.Module, *, keep: bool) -> nn.Module:
        return masked_copy(model, self.binary(), keep=keep)

    def save(self, path: str | Path) -> None:
        """Write the masks as safetensors (``path``) with a JSON sidecar (accuracies, density)."""
        meta = {k: (v if v == v else None) for k, v in (("accuracy", self.accuracy),
                                                          ("dense_accuracy", self.dense_accuracy),
                                                          ("density", self.density))}
        save_tensors(path, self.masks, meta)

    @classmethod
    def load(cls, path: str | Path) -> WeightMask:
        """Read what `save` wrote."""
        tensors, meta = load_tensors(path)

        def number(key: str) -> float:
            value = meta.get(key)
            return float("nan") if value is None else float(value)
        return cls(tensors, number("accuracy"), number("dense_accuracy"), number("density"))

    def to_frame(self) -> pandas.DataFrame:
        return mask_table({n: m > 0.5 for n, m in self.masks.items()})

    def plot(self) -> Figure:
        return mask_figure({n: m > 0.5 for n, m in self.masks.items()},
                           f"accuracy {self.accuracy:.3f} (dense {self.dense_accuracy:.3f}), density {self.density:.3f}")


def learn_mask(
    model: nn.Module,
    inputs: Inputs,
    targets: Any,
    *,
    seed: int = 0,
    parameters: list[str] | None = None,
    steps: int = 400,
    lr: float = 0.05,
    penalty: float = 0.5,
    init: float = 3.0,
    tolerance: float = 0.02,
    loss: Loss | None = None,
) -> WeightMask:
    """Learn a binary mask over ``model``'s frozen weights that keeps its behaviour on ``inputs`` with few weights.

    Each weight gets a logit ``l``; every step draws a mask ``1[σ(l + logistic noise) > 0.5]`` with a
    straight-through gradient and minimises ``loss(f(x; θ ⊙ mask), targets) + penalty · mean σ(l)``
    with Adam (full batch); the penalty is switched off on steps where the binary mask loses more than
    ``tolerance`` accuracy, and the sparsest binary mask within ``tolerance`` is kept. The model's weights never change; it runs through
    `torch.func.functional_call` in eval mode and is left exactly as found.

    Args:
        model: any ``nn.Module`` (for accuracy, logits ``(batch, n_classes)``).
        inputs: the examples whose behaviour the mask must keep.
        targets: ``(batch,)`` class indices (or what ``loss`` takes). To keep the model's own behaviour
            pass its predictions.
        seed: the noise draws (a local generator; the global RNG is untouched).
        parameters: names of the parameters to mask (default: all).
        steps: optimisation steps.
        lr: Adam's learning rate on the logits.
        penalty: weight of the expected density term: higher keeps fewer weights.
        init: the initial logit (σ(3) ≈ 0.95: start from the whole network).
        tolerance: the accuracy the binary mask may lose against the dense model. The density penalty
            acts only on steps where the current binary mask is within it, and the sparsest binary
            mask seen within it is returned (with the default loss).
        loss: ``loss(output, targets) -> scalar``; default cross-entropy on class indices.

    Returns:
        `WeightMask`: ``.masks`` (probabilities σ(l)), the binary mask's accuracy beside the dense
        accuracy, and the density kept. Warns when the binary mask loses more than ``tolerance``.

    Example:
        >>> torch.manual_seed(0) and None
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x = torch.randn(32, 4)
        >>> m = learn_mask(model, x, model(x).argmax(1), steps=50)
        >>> m.masks["0.weight"].shape, 0.0 <= m.density <= 1.0
        (torch.Size([8, 4]), True)

    References:
        Csordás, van Steenkiste and Schmidhuber 2021, "Are neural nets modular? Inspecting functional
        modularity through differentiable weight masks".
    """
    seed = check_int("seed", seed)
    steps = check_int("steps", steps, at_least=1)
    lr = check_float("lr", lr, at_least=0.0)
    penalty = check_float("penalty", penalty, at_least=0.0)
    init = check_float("init", init)
    tolerance = check_float("tolerance", tolerance, at_least=0.0, at_most=1.0)
    names = [n for n, _ in model.named_parameters()]
    chosen = names if parameters is None else list(parameters)
    unknown = sorted(set(chosen) - set(names))
    if unknown or not chosen:
        raise InputError(f"parameters must name parameters of the model, got unknown {unknown[:3]}; "
                         f"it has {names[:6]}{'...' if len(names) > 6 else ''}.")
    n, target = prepare(model, inputs, targets, loss)
    objective = loss or cross_entropy
    params, buffers = frozen_parameters(model)
    gen = torch.Generator().manual_seed(seed)
    logits = {k: torch.full_like(params[k], init, requires_grad=True) for k in chosen}
    optimiser = torch.optim.Adam(list(logits.values()), lr=lr)
    total = sum(v.numel() for v in logits.values())
    with eval_mode(model):
        with torch.no_grad():
            dense_out = run(model, params, buffers, inputs)
        if loss is None:
            check_logits(dense_out, target)
            floor = _accuracy(dense_out, target) - tolerance
        best: tuple[float, dict[str, Tensor]] | None = None
        for _ in range(steps):
            masked = dict(params)
            for k, logit in logits.items():
                u = torch.rand(logit.shape, generator=gen).clamp_(1e-6, 1 - 1e-6)
                soft = torch.sigmoid(logit + torch.log(u) - torch.log1p(-u))
                hard = (soft > 0.5).to(soft.dtype)
                masked[k] = params[k] * (hard + soft - soft.detach())  # straight-through
            with torch.no_grad():  # the deterministic mask as it stands: does it still keep the behaviour?
                kept_now, density_now = _binary(params, logits, total)
                keeps = loss is not None or _accuracy(run(model, kept_now, buffers, inputs), target) >= floor
            if keeps and (best is None or density_now < best[0]):
                best = (density_now, {k: v.detach().clone() for k, v in logits.items()})
            # the density penalty applies only while the behaviour is kept (a switching constraint)
            expected = sum(torch.sigmoid(v).sum() for v in logits.values()) / total
            value = objective(run(model, masked, buffers, inputs), target) + (penalty * expected if keeps else 0.0)
            optimiser.zero_grad(set_to_none=True)
            value.backward()
            optimiser.step()
        final = best[1] if best is not None and loss is None else {k: v.detach() for k, v in logits.items()}
        probs = {k: torch.sigmoid(v) for k, v in final.items()}
        with torch.no_grad():
            masked_out = run(model, _binary(params, final, total)[0], buffers, inputs)
    density = sum(int((v > 0.5).sum()) for v in probs.values()) / total
    if loss is None:
        accuracy, dense = _accuracy(masked_out, target), _accuracy(dense_out, target)
        if accuracy < dense - tolerance:
            warnings.warn(f"the learned mask keeps accuracy {accuracy:.3f} of the dense {dense:.3f}; lower penalty "
                          "or raise steps to keep the behaviour.", stacklevel=2)
    else:
        accuracy = dense = float("nan")
    return WeightMask(probs, accuracy, dense, density)


def _binary(params: dict[str, Tensor], logits: dict[str, Tensor], total: int) -> tuple[dict[str, Tensor], float]:
    """The parameters with the binary mask (σ(logit) > 0.5) applied, and the fraction of masked weights kept."""
    out = dict(params)
    kept = 0
    for k, logit in logits.items():
        keep = torch.sigmoid(logit) > 0.5  # exactly the rule WeightMask.binary applies
        out[k] = params[k] * keep.to(params[k].dtype)
        kept += int(keep.sum())
    return out, kept / total


def _accuracy(output: Tensor, target: Tensor | None) -> float:
    return float((output.argmax(-1) == target).float().mean())
