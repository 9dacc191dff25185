"""Trigger reverse-engineering (Neural Cleanse): the smallest mask + pattern that flips inputs to a class.

For each candidate target class, optimise a mask ``m`` (H, W) in [0, 1] and a pattern ``p``
(C, H, W) in [0, 1] so that ``(1 - m) * x + m * p`` is classified as the target while ``|m|₁``
stays small. A trojan target needs an unusually small mask; the anomaly index (distance below
the median in units of the median absolute deviation) flags it. This is the plain baseline of
Wang et al. (2019); the audit builds its calibrated scan on it.

Two trigger families share the code: ``family="patch"`` learns a free mask per pixel (small
patches), ``family="blend"`` one mask value ``alpha`` for every pixel (a full-image, low-amplitude
blend, Chen et al. 2017). A patch search finds blend backdoors only through shortcuts that do not
recover the trigger; the blend search finds them directly (its size is ``alpha · H · W``).

References:
    Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural Networks", 2019.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.checks import check_int
from ..core.errors import InputError
from ..core.inputs import validate_inputs
from ..core.results import Result, new_figure
from ..evidence.trigger import FAMILIES, Trigger, stamp

__all__ = ["ReversedTrigger", "NeuralCleanse", "reverse_engineer_trigger", "neural_cleanse", "anomaly_index"]


@dataclass(frozen=True)
class ReversedTrigger(Result):
    """The smallest `Trigger` a search found, its L1 size and its success on the search inputs.

    ``steps_run`` is how many steps ran before the search stopped (early stopping ends it before
    ``steps``).
    """

    trigger: Trigger
    mask_l1: float
    attack_success: float
    steps_run: int = 0

    def to_frame(self) -> Any:
        """One row: the trigger's target and family, its L1 size, success and the steps run."""
        import pandas as pd

        return pd.DataFrame({"target": [self.trigger.target], "family": [self.trigger.family],
                             "mask_l1": [self.mask_l1], "attack_success": [self.attack_success],
                             "steps_run": [self.steps_run]})

    def plot(self) -> Any:
        """The trigger's mask and ``mask × pattern`` (`Trigger.plot`)."""
        return self.trigger.plot()


def reverse_engineer_trigger(model: nn.Module, inputs: Tensor, target: int, *, family: str = "patch",
                             steps: int = 300, lr: float = 0.1, init_cost: float = 1e-3, success_goal: float = 0.95,
                             batch_size: int = 128, patience: int | None = 100, restarts: int = 1,
                             seed: int = 0) -> ReversedTrigger:
    """Optimise the smallest mask + pattern that sends ``inputs`` to ``target``.

    The L1 weight adapts as in Neural Cleanse: it grows while the attack succeeds (to shrink the
    mask) and shrinks while it fails. The smallest mask reaching ``success_goal`` is returned
    (or, if none does, the last one). Gradients flow only to the mask and pattern: parameters,
    their ``.grad`` and the model's modes are untouched; run it on a model in eval mode.

    Args:
        model: an image classifier returning logits ``(batch, n_classes)``.
        inputs: clean images ``(N, C, H, W)``, ideally not of class ``target``.
        target: the class to reach.
        family: ``"patch"`` (a mask value per pixel) or ``"blend"`` (one mask value for all pixels).
        steps: the most optimisation steps (mini-batches of ``batch_size``) per restart.
        patience: early stopping: once the goal is reached, stop when the smallest successful
            mask has not shrunk by 1% for this many steps (``None``: run every step).
        restarts: independent runs from different initialisations; the smallest trigger wins.
        seed: seeds the initialisation and the batch order.
    """
    if not isinstance(inputs, Tensor) or inputs.ndim != 4:
        raise InputError(f"inputs must be images (N, C, H, W); got {getattr(inputs, 'shape', type(inputs).__name__)}.")
    if family not in FAMILIES:
        raise InputError(f"family must be 'patch' or 'blend', got {family!r}.")
    check_int("restarts", restarts, at_least=1)
    check_int("steps", steps, at_least=1)
    if patience is not None:
        check_int("patience", patience, at_least=1)
    validate_inputs(model, inputs)
    with torch.no_grad():
        width = int(model(inputs[:1]).shape[-1])
    check_int("target", target, at_least=0, at_most=width - 1)
    found = [_reverse_once(model, inputs, target, family, steps, lr, init_cost, success_goal, batch_size, patience,
                           seed + 7919 * r) for r in range(restarts)]
    return min(found, key=lambda t: (t.attack_success < success_goal, t.mask_l1))


def _reverse_once(model: nn.Module, inputs: Tensor, target: int, family: str, steps: int, lr: float, init_cost: float,
                  success_goal: float, batch_size: int, patience: int | None, seed: int) -> ReversedTrigger:
    gen = torch.Generator().manual_seed(seed)
    _, c, h, w = inputs.shape
    shape = (h, w) if family == "patch" else ()
    mask_logit = (torch.randn(shape, generator=gen) * 0.1 - 2.0).requires_grad_(True)
    pattern_logit = (torch.randn(c, h, w, generator=gen) * 0.1).requires_grad_(True)
    opt = torch.optim.Adam([mask_logit, pattern_logit], lr=lr, betas=(0.5, 0.9))
    cost = init_cost
    best: tuple[float, Tensor, Tensor, float] | None = None
    labels = torch.full((min(batch_size, inputs.shape[0]),), target, dtype=torch.long)
    hits = 0.0
    window: list[float] = []
    last_gain = 0
    for step in range(steps):
        index = torch.randint(0, inputs.shape[0], (labels.shape[0],), generator=gen)
        x = inputs[index]
        mask = torch.sigmoid(mask_logit).expand(h, w)
        pattern = torch.sigmoid(pattern_logit)
        logits = model(stamp(x, Trigger(mask, pattern, target, family)))
        loss = F.cross_entropy(logits, labels) + cost * mask.sum()
        grads = torch.autograd.grad(loss, [mask_logit, pattern_logit])
        opt.zero_grad(set_to_none=True)
        mask_logit.grad, pattern_logit.grad = grads
        opt.step()
        hits = float((logits.argmax(-1) == target).float().mean())
        window.append(hits)
        l1 = float(mask.detach().sum())
        if hits >= success_goal and (best is None or l1 < best[0]):
            if best is None or l1 < 0.99 * best[0]:
                last_gain = step
            best = (l1, mask.detach().clone(), pattern.detach().clone(), hits)
        if patience is not None and best is not None and step - last_gain >= patience:
            break
        if (step + 1) % 10 == 0:  # adapt the L1 weight on the last 10 steps' success
            cost = cost * 1.5 if sum(window) / len(window) >= success_goal else cost / 1.5 ** 1.5
            window.clear()
    if best is None:
        mask = torch.sigmoid(mask_logit).detach().expand(h, w).clone()
        pattern = torch.sigmoid(pattern_logit).detach()
        best = (float(mask.sum()), mask, pattern, hits)
    l1, mask, pattern, success = best
    return ReversedTrigger(Trigger(mask, pattern, target, family), l1, success, steps_run=step + 1)


def anomaly_index(values: Sequence[float]) -> Tensor:
    """Signed MAD anomaly index: ``(median - v) / (1.4826 · MAD)``; large positive = unusually small.

    Example:
        >>> anomaly_index([10.0, 11.0, 9.0, 10.0, 2.0]).round(decimals=2).tolist()
        [0.0, -0.67, 0.67, 0.0, 5.4]
    """
    v = torch.tensor([float(x) for x in values], dtype=torch.float64)
    median = v.median()
    mad = (v - median).abs().median() * 1.4826
    return (median - v) / mad.clamp_min(1e-12)


@dataclass(frozen=True)
class NeuralCleanse(Result):
    """Per-class reversed triggers, their mask sizes and anomaly indices, and the verdict."""

    triggers: tuple[ReversedTrigger, ...]
    anomaly: Tensor
    threshold: float

    @property
    def norms(self) -> Tensor:
        return torch.tensor([t.mask_l1 for t in self.triggers])

    @property
    def suspect(self) -> int:
        """The class with the smallest reversed trigger (the target, if the model is trojaned)."""
        return int(self.norms.argmin())

    @property
    def flagged(self) -> bool:
        """Whether the suspect's anomaly index exceeds the threshold."""
        return bool(self.anomaly[self.suspect] > self.threshold)

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame({"class": [t.trigger.target for t in self.triggers], "mask_l1": self.norms.tolist(),
                             "attack_success": [t.attack_success for t in self.triggers],
                             "anomaly_index": self.anomaly.tolist()})

    def plot(self) -> Any:
        """The reversed trigger size per class, the flag threshold's view (MAD index) beside it."""
        fig = new_figure(7, 2.6)
        ax1, ax2 = fig.subplots(1, 2)
        classes = [t.trigger.target for t in self.triggers]
        ax1.bar(classes, self.norms.tolist(), color=["crimson" if c == self.suspect else "0.6" for c in classes])
        ax1.set_xlabel("class")
        ax1.set_ylabel("reversed mask L1")
        ax2.bar(classes, self.anomaly.tolist(), color="0.6")
        ax2.axhline(self.threshold, color="black", linestyle="--", label=f"threshold {self.threshold:g}")
        ax2.set_xlabel("class")
        ax2.set_ylabel("anomaly index")
        ax2.legend(fontsize=7)
        return fig


def neural_cleanse(model: nn.Module, inputs: Tensor, *, n_classes: int, threshold: float = 2.0, steps: int = 300,
                   family: str = "patch", seed: int = 0, progress: Callable[[int, int], None] | None = None,
                   **kwargs: Any) -> NeuralCleanse:
    """Reverse-engineer a trigger of ``family`` for every class and flag the anomalously small one.

    Extra keyword arguments go to `reverse_engineer_trigger`. For each class, inputs already
    predicted as that class are left out of its optimisation; a class every input is already
    predicted as needs no trigger at all (mask L1 0, success 1). ``progress(done, total)`` is
    called after each class.
    """
    check_int("n_classes", n_classes, at_least=2)
    if family not in FAMILIES:
        raise InputError(f"family must be 'patch' or 'blend', got {family!r}.")
    if not isinstance(inputs, Tensor) or inputs.ndim != 4:
        raise InputError(f"inputs must be images (N, C, H, W); got {getattr(inputs, 'shape', type(inputs).__name__)}.")
    validate_inputs(model, inputs)
    with torch.no_grad():
        logits = model(inputs)
    if logits.ndim != 2 or logits.shape[1] != n_classes:
        raise InputError(f"n_classes={n_classes} but the model returns {tuple(logits.shape)}; pass the width of its "
                         "logits (batch, n_classes).")
    predicted = logits.argmax(-1)
    triggers = []
    for k in range(n_classes):
        others = inputs[predicted != k]
        if others.shape[0] == 0:
            empty = torch.zeros(inputs.shape[2:])
            triggers.append(ReversedTrigger(Trigger(empty, torch.zeros(inputs.shape[1:]), k, family), 0.0, 1.0))
        else:
            triggers.append(reverse_engineer_trigger(model, others, k, family=family, steps=steps, seed=seed + k,
                                                     **kwargs))
        if progress is not None:
            progress(k + 1, n_classes)
    anomaly = anomaly_index([t.mask_l1 for t in triggers])
    return NeuralCleanse(tuple(triggers), anomaly, threshold)
