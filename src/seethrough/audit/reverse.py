"""Trigger reverse-engineering (Neural Cleanse): the smallest mask + pattern that flips inputs to a class.

For each candidate target class, optimise a mask ``m`` (H, W) in [0, 1] and a pattern ``p``
(C, H, W) in [0, 1] so that ``(1 - m) * x + m * p`` is classified as the target while ``|m|₁``
stays small. A trojan target needs an unusually small mask; the anomaly index (distance below
the median in units of the median absolute deviation) flags it. This is the plain baseline of
Wang et al. (2019); the audit builds its calibrated scan on it.

The pattern lives in a box, ``pattern_range`` (the data's value range; [0, 1] by default), so
inputs on another scale (0-255, standardised) are searched on their own scale.

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

from ..core.checks import check_float, check_int
from ..core.errors import InputError
from ..core.inputs import validate_inputs
from ..core.results import Result, new_figure
from ..evidence.trigger import FAMILIES, Trigger, stamp
from ._forward import checked_logits, model_failures

__all__ = ["ReversedTrigger", "NeuralCleanse", "reverse_engineer_trigger", "neural_cleanse", "anomaly_index",
           "data_range", "SHRINK_TOLERANCE"]

#: A search has converged when its smallest successful mask shrank by at most this fraction over the
#: last quarter of its steps (and had begun to shrink). Measured per class on zoo digits models: at 300
#: steps at most 0.07 (MLP seed 11 clean, patch and blend; CNN seed 11 clean), at 200 steps at most 0.17
#: (MLP seeds 1000-1002), at 100 steps 0.16-0.60 (MLP seed 11: still shrinking); at 30-50 steps no mask
#: had begun to shrink below its first success.
SHRINK_TOLERANCE = 0.25

PatternRange = tuple[float | Tensor, float | Tensor]


@dataclass(frozen=True)
class ReversedTrigger(Result):
    """The smallest `Trigger` a search found, its L1 size and its success on the search inputs.

    ``steps_run`` is how many steps ran before the search stopped (early stopping ends it before
    ``steps``). How far the search got: ``reached_goal`` (some mask reached the success goal),
    ``recent_shrink`` (the fraction by which the smallest successful mask shrank over the last
    quarter of the steps run; 0 after early stopping), ``finite`` (``False`` when the model's
    outputs or gradients became NaN/inf and the search stopped there) and ``converged``: the goal
    was reached, finitely, the smallest successful mask has shrunk below the first successful one
    (the L1 weight has started to act: before that the mask grows) and it shrank by at most the
    search's ``shrink_tolerance`` over the last quarter (or early stopping ended the search).
    """

    trigger: Trigger
    mask_l1: float
    attack_success: float
    steps_run: int = 0
    reached_goal: bool = True
    recent_shrink: float = 0.0
    finite: bool = True
    converged: bool = True

    def to_frame(self) -> Any:
        """One row: the trigger's target and family, its L1 size, success, the steps run and convergence."""
        import pandas as pd

        return pd.DataFrame({"target": [self.trigger.target], "family": [self.trigger.family],
                             "mask_l1": [self.mask_l1], "attack_success": [self.attack_success],
                             "steps_run": [self.steps_run], "reached_goal": [self.reached_goal],
                             "recent_shrink": [self.recent_shrink], "finite": [self.finite],
                             "converged": [self.converged]})

    def plot(self) -> Any:
        """The trigger's mask and ``mask × pattern`` (`Trigger.plot`)."""
        return self.trigger.plot()


def reverse_engineer_trigger(model: nn.Module, inputs: Tensor, target: int, *, family: str = "patch",
                             steps: int = 300, lr: float = 0.1, init_cost: float = 1e-3, success_goal: float = 0.95,
                             batch_size: int = 128, patience: int | None = 100, restarts: int = 1,
                             pattern_range: PatternRange = (0.0, 1.0), shrink_tolerance: float = SHRINK_TOLERANCE,
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
        pattern_range: ``(low, high)``, the box the pattern lives in: floats, or per-channel tensors
            shaped ``(C, 1, 1)``; the inputs' value range (`data_range`) for data not in [0, 1].
        shrink_tolerance: the most the smallest successful mask may shrink over the last quarter of
            the steps for the search to count as converged (``ReversedTrigger.converged``).
        seed: seeds the initialisation and the batch order.

    A search whose model outputs or gradients become NaN/inf stops there (``finite=False``).
    """
    if not isinstance(inputs, Tensor) or inputs.ndim != 4:
        raise InputError(f"inputs must be images (N, C, H, W); got {getattr(inputs, 'shape', type(inputs).__name__)}.")
    if family not in FAMILIES:
        raise InputError(f"family must be 'patch' or 'blend', got {family!r}.")
    check_int("restarts", restarts, at_least=1)
    check_int("steps", steps, at_least=1)
    if patience is not None:
        check_int("patience", patience, at_least=1)
    check_float("shrink_tolerance", shrink_tolerance, at_least=0.0)
    validate_inputs(model, inputs)
    with torch.no_grad(), model_failures(model, inputs, "trigger search"):
        width = int(model(inputs[:1]).shape[-1])
    check_int("target", target, at_least=0, at_most=width - 1)
    with model_failures(model, inputs, "trigger search"):
        found = [_reverse_once(model, inputs, target, family, steps, lr, init_cost, success_goal, batch_size,
                               patience, pattern_range, shrink_tolerance, seed + 7919 * r) for r in range(restarts)]
    return min(found, key=lambda t: (not t.finite, t.attack_success < success_goal, t.mask_l1))


def data_range(inputs: Tensor) -> tuple[Tensor, Tensor]:
    """The per-channel ``(low, high)`` of images ``(N, C, H, W)``, each ``(C, 1, 1)``: the box a trigger's
    pattern is searched in, so that a stamped input stays within the values the data takes.

    Example:
        >>> low, high = data_range(torch.tensor([[[[0.0, 255.0]]], [[[3.0, 7.0]]]]))
        >>> low.flatten().tolist(), high.flatten().tolist()
        ([0.0], [255.0])
    """
    if not isinstance(inputs, Tensor) or inputs.ndim != 4:
        raise InputError(f"data_range needs images (N, C, H, W); got {getattr(inputs, 'shape', type(inputs).__name__)}.")
    values = inputs.detach().transpose(0, 1).flatten(1)
    return values.amin(1)[:, None, None], values.amax(1)[:, None, None]


def _reverse_once(model: nn.Module, inputs: Tensor, target: int, family: str, steps: int, lr: float, init_cost: float,
                  success_goal: float, batch_size: int, patience: int | None, pattern_range: PatternRange,
                  shrink_tolerance: float, seed: int) -> ReversedTrigger:
    gen = torch.Generator().manual_seed(seed)
    _, c, h, w = inputs.shape
    low, high = pattern_range
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
    first_success = float("inf")
    smallest: list[float] = []  # the smallest successful L1 after each step (inf before the first success)
    finite, stopped_early = True, False
    for step in range(steps):
        index = torch.randint(0, inputs.shape[0], (labels.shape[0],), generator=gen)
        x = inputs[index]
        mask = torch.sigmoid(mask_logit).expand(h, w)
        pattern = low + (high - low) * torch.sigmoid(pattern_logit)
        logits = model(stamp(x, Trigger(mask, pattern, target, family)))
        loss = F.cross_entropy(logits, labels) + cost * mask.sum()
        grads = torch.autograd.grad(loss, [mask_logit, pattern_logit])
        if not (bool(torch.isfinite(logits).all()) and all(bool(torch.isfinite(g).all()) for g in grads)):
            finite = False  # never score a NaN: stop with what was found before
            break
        opt.zero_grad(set_to_none=True)
        mask_logit.grad, pattern_logit.grad = grads
        opt.step()
        hits = float((logits.argmax(-1) == target).float().mean())
        window.append(hits)
        l1 = float(mask.detach().sum())
        if hits >= success_goal and (best is None or l1 < best[0]):
            if best is None or l1 < 0.99 * best[0]:
                last_gain = step
            first_success = min(first_success, l1) if best is None else first_success
            best = (l1, mask.detach().clone(), pattern.detach().clone(), hits)
        smallest.append(best[0] if best is not None else float("inf"))
        if patience is not None and best is not None and step - last_gain >= patience:
            stopped_early = True
            break
        if (step + 1) % 10 == 0:  # adapt the L1 weight on the last 10 steps' success
            cost = cost * 1.5 if sum(window) / len(window) >= success_goal else cost / 1.5 ** 1.5
            window.clear()
    steps_run = len(smallest) + (0 if finite else 1)
    reached = best is not None
    if best is None:  # the last mask and pattern (the optimiser's state after its last finite step)
        mask = torch.sigmoid(mask_logit).detach().expand(h, w).clone()
        pattern = low + (high - low) * torch.sigmoid(pattern_logit).detach()
        best = (float(mask.sum()), mask, pattern, hits if finite else 0.0)
    l1, mask, pattern, success = best
    shrink = 0.0
    if reached and not stopped_early:  # how much the smallest successful mask shrank over the last quarter
        before = smallest[len(smallest) - 1 - max(1, len(smallest) // 4)] if len(smallest) > 1 else float("inf")
        shrink = 1.0 if before == float("inf") else 1.0 - l1 / max(before, 1e-12)
    converged = (reached and finite and l1 < 0.99 * first_success
                 and (stopped_early or shrink <= shrink_tolerance))
    return ReversedTrigger(Trigger(mask, pattern, target, family), l1, success, steps_run=steps_run,
                           reached_goal=reached, recent_shrink=shrink, finite=finite, converged=converged)


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
    logits = checked_logits(model, inputs, batch_size=inputs.shape[0])  # refuses NaN/inf outputs, wraps failures
    if logits.shape[1] != n_classes:
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
