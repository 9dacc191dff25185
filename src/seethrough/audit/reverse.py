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

The engine is family-generic: a `seethrough.audit.families.Parametrisation` says what one class's
search optimises (``"warp"`` searches a smooth displacement field). `neural_cleanse` schedules the
classes' searches: ``schedule="k-arm"`` (default) explores every class cheaply, then spends the
steps on the few smallest and prunes the hopeless (Shen et al. 2021); ``schedule="full"`` searches
every class to the end. Both count the forward+backward passes they spend.

References:
    Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural Networks", 2019.
    Shen et al., "Backdoor Scanning for Deep Neural Networks through K-Arm Optimization", ICML 2021.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError
from ..core.inputs import validate_inputs
from ..core.results import Result, new_figure
from ..evidence.trigger import Trigger
from ._forward import checked_logits, model_failures
from ._search import ReversedTrigger, Search, run_together
from .families import Parametrisation, PatternRange, parametrisation

__all__ = ["ReversedTrigger", "NeuralCleanse", "reverse_engineer_trigger", "neural_cleanse", "anomaly_index",
           "data_range", "SHRINK_TOLERANCE", "SCHEDULES", "k_arm_keeps"]

#: A search has converged when its smallest successful mask shrank by at most this fraction over the
#: last quarter of its steps (and had begun to shrink). Measured per class on zoo digits models: at 300
#: steps at most 0.07 (MLP seed 11 clean, patch and blend; CNN seed 11 clean), at 200 steps at most 0.17
#: (MLP seeds 1000-1002), at 100 steps 0.16-0.60 (MLP seed 11: still shrinking); at 30-50 steps no mask
#: had begun to shrink below its first success.
SHRINK_TOLERANCE = 0.25

#: The scan's schedules across classes: ``"k-arm"`` (the default) and ``"full"`` (every class to the end).
SCHEDULES = ("k-arm", "full")
#: K-Arm: the fraction of ``steps`` every class explores before the ranking decides which continue.
K_ARM_EXPLORE = 1 / 3
#: K-Arm: exploring steps use mini-batches this many times smaller than ``batch_size``.
K_ARM_EXPLORE_SHRINK = 4
#: K-Arm: how many of the smallest classes always run to the end (the suspect, the runner-up, and a spare
#: so that a second planted target has its runner-up too).
K_ARM_KEEP = 3
#: K-Arm: a class beyond the first K_ARM_KEEP also continues while its size is within this multiple of the
#: K_ARM_KEEP-th smallest.
K_ARM_PRUNE_RATIO = 1.15
#: K-Arm: at most this many classes continue after the exploration (the smallest first), so that a model
#: whose classes all need similar triggers costs no more than one with a clear suspect.
K_ARM_MOST = 4
#: K-Arm: exploiting steps (the classes that continue after the exploration) use mini-batches this many
#: times smaller than ``batch_size``: half a pass per step. Chosen for cost (issue #11: ≤ 2,500 passes for
#: a three-family image audit) on dev zoo models only (digits MLP seeds 0-7, CNN seeds 0-2; patch-, blend-,
#: warp-trojaned and clean; patch, blend and warp scans; 300 steps; scoring seeds 1000+ never used), against
#: the full schedule's sizes on the same models. With 2 (and the other constants as they are) a family
#: scan cost 575 passes on average on the MLPs (at most 650) and 589 on the CNNs (at most 650), against
#: 909 and 904 (at most 1,050) on full-batch exploits, and gave the full scan's suspect on the same side
#: of the threshold in 65 of the 66 patch and blend scans of patch, blend and clean models (as full
#: batches did; the exception a near-tie below the threshold in both), 44 of 54 warp-related scans
#: (full batches 45; every difference a near-tie suspect below the threshold, jumps ≤ 1.23 in both scans,
#: or one of 2 blend models' warp scans that the full scan flags at the blend's target and neither K-Arm
#: flags) and the same flagged classes in 118 of 120 (as full batches did). Rejected on the MLPs: at most
#: 3 continuing classes with an 8-fold smaller exploration (678 passes; it misranked warp runners-up and
#: flagged an extra class on 2 of 8 warp models' warp scans), that with an exploit patience of 50 instead
#: (649; a second class flagged on a patch model's warp scan), at most 3 alone (813; the same).
K_ARM_EXPLOIT_SHRINK = 2
#: K-Arm: the most searches stacked into one forward pass.
K_ARM_STACK = 16
_SEARCH_DEFAULTS: dict[str, Any] = {"lr": 0.1, "init_cost": 1e-3, "success_goal": 0.95, "batch_size": 128,
                                    "patience": 100, "restarts": 1, "pattern_range": (0.0, 1.0),
                                    "shrink_tolerance": SHRINK_TOLERANCE}


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
        family: ``"patch"`` (a mask value per pixel), ``"blend"`` (one mask value for all pixels) or
            ``"warp"``: the `seethrough.audit.families.Parametrisation` searched (`parametrisation`).
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
    param = parametrisation(family)
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
        found = []
        for r in range(restarts):
            search = Search(param, inputs, target, lr=lr, init_cost=init_cost, success_goal=success_goal,
                             batch_size=batch_size, patience=patience, pattern_range=pattern_range,
                             seed=seed + 7919 * r)
            while not search.done and search.steps < steps:
                run_together(model, [search])
            found.append(search.result(shrink_tolerance))
    best = min(found, key=lambda t: (not t.finite, t.attack_success < success_goal, t.mask_l1))
    return replace(best, passes=sum(t.passes for t in found))


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
    """Per-class reversed triggers, their mask sizes and anomaly indices, and the verdict.

    ``passes``: the forward+backward passes of the model the scan spent (examples through the model
    with a backward pass / ``batch_size``); ``schedule``: ``"k-arm"`` or ``"full"``.
    """

    triggers: tuple[ReversedTrigger, ...]
    anomaly: Tensor
    threshold: float
    passes: float = 0.0
    schedule: str = "full"

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
                   family: str = "patch", schedule: str = "k-arm", seed: int = 0,
                   progress: Callable[[int, int], None] | None = None, **kwargs: Any) -> NeuralCleanse:
    """Reverse-engineer a trigger of ``family`` for every class and flag the anomalously small one.

    Extra keyword arguments go to `reverse_engineer_trigger` (``lr``, ``init_cost``,
    ``success_goal``, ``batch_size``, ``patience``, ``restarts``, ``pattern_range``,
    ``shrink_tolerance``). For each class, inputs already predicted as that class are left out of
    its optimisation; a class every input is already predicted as needs no trigger at all (mask L1
    0, success 1). ``progress(done, total)`` is called as classes finish.

    ``schedule="full"`` searches every class to the end in turn (plain Neural Cleanse).
    ``schedule="k-arm"`` (K-Arm, Shen et al. 2021) starts every class together on cheap quarter-size
    batches for a third of the steps, then gives the remaining steps, on half-size batches, to the
    classes whose smallest successful triggers are smallest, and stops ("prunes") classes whose
    triggers are far larger: the smallest `K_ARM_KEEP` classes always run on to early stopping or
    ``steps``, so the suspect and the runner-up, and with them the gap, are searched to the end as
    before (their sizes count only successes on the exploit's batches). Pruned classes are marked
    (``ReversedTrigger.pruned``); their size is their exploration's. The classes that step together
    share one forward pass of the model (their stamped batches stacked). On the zoo's digits MLPs
    (seeds 0-7) and CNNs (seeds 0-2) it gave the full scan's suspects on the same side of the
    threshold in 65 of 66 patch and blend scans for about a fifth of the passes (575-589 a family
    scan on average, at most 650, against 2,160-2,990 for the full scan; `K_ARM_EXPLOIT_SHRINK`).
    ``NeuralCleanse.passes`` counts the forward+backward passes either schedule spent.

    Raises:
        InputError: ``n_classes`` below 2 or not the model's output width, inputs that are not
            images, an unknown family, schedule or keyword argument.

    References:
        Shen et al., "Backdoor Scanning for Deep Neural Networks through K-Arm Optimization", ICML 2021.
    """
    check_int("n_classes", n_classes, at_least=2)
    param = parametrisation(family)
    if schedule not in SCHEDULES:
        raise InputError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}.")
    unknown = sorted(set(kwargs) - set(_SEARCH_DEFAULTS))
    if unknown:
        raise InputError(f"neural_cleanse got unknown keyword argument(s) {unknown}; it passes on only "
                         f"{sorted(_SEARCH_DEFAULTS)} to reverse_engineer_trigger.")
    check_int("steps", steps, at_least=1)
    if not isinstance(inputs, Tensor) or inputs.ndim != 4:
        raise InputError(f"inputs must be images (N, C, H, W); got {getattr(inputs, 'shape', type(inputs).__name__)}.")
    validate_inputs(model, inputs)
    logits = checked_logits(model, inputs, batch_size=inputs.shape[0])  # refuses NaN/inf outputs, wraps failures
    if logits.shape[1] != n_classes:
        raise InputError(f"n_classes={n_classes} but the model returns {tuple(logits.shape)}; pass the width of its "
                         "logits (batch, n_classes).")
    predicted = logits.argmax(-1)
    if schedule == "full":
        triggers = []
        for k in range(n_classes):
            others = inputs[predicted != k]
            if others.shape[0] == 0:
                triggers.append(_no_trigger_needed(inputs, k, family))
            else:
                triggers.append(reverse_engineer_trigger(model, others, k, family=family, steps=steps, seed=seed + k,
                                                         **kwargs))
            if progress is not None:
                progress(k + 1, n_classes)
    else:
        options = {**_SEARCH_DEFAULTS, **kwargs}
        check_int("restarts", options["restarts"], at_least=1)
        if options["patience"] is not None:
            check_int("patience", options["patience"], at_least=1)
        check_float("shrink_tolerance", options["shrink_tolerance"], at_least=0.0)
        with model_failures(model, inputs, "trigger search"):
            triggers = _k_arm(model, inputs, predicted, param, n_classes, steps, seed, options, progress)
    anomaly = anomaly_index([t.mask_l1 for t in triggers])
    return NeuralCleanse(tuple(triggers), anomaly, threshold, passes=sum(t.passes for t in triggers),
                         schedule=schedule)


def _no_trigger_needed(inputs: Tensor, target: int, family: str) -> ReversedTrigger:
    """A class every input is already predicted as: the empty trigger (a zero mask; a warp's zero field)."""
    empty = torch.zeros(inputs.shape[2:])
    field = torch.zeros(2, *inputs.shape[2:]) if family == "warp" else None
    return ReversedTrigger(Trigger(empty, torch.zeros(inputs.shape[1:]), target, family, field=field), 0.0, 1.0)


def k_arm_keeps(sizes: Mapping[int, float]) -> set[int]:
    """The classes K-Arm keeps searching after the exploration, from their sizes (``inf``: no success yet).

    Ranked by size (then class): the first `K_ARM_KEEP`, and any other within `K_ARM_PRUNE_RATIO` of
    the `K_ARM_KEEP`-th smallest, `K_ARM_MOST` at most. The rest are hopeless arms. The audit's
    verdict reads the same rule to decide which unfinished searches could still change its flags.

    Example:
        >>> sorted(k_arm_keeps({0: 1.0, 1: 1.1, 2: 2.0, 3: 2.2, 4: 9.0, 5: float("inf")}))
        [0, 1, 2, 3]
    """
    ranked = sorted(sizes, key=lambda k: (sizes[k], k))
    if not ranked:
        return set()
    bar = sizes[ranked[min(K_ARM_KEEP, len(ranked)) - 1]]
    return {k for rank, k in enumerate(ranked)
            if rank < K_ARM_KEEP or (rank < K_ARM_MOST and sizes[k] <= K_ARM_PRUNE_RATIO * bar)}


def _k_arm(model: nn.Module, inputs: Tensor, predicted: Tensor, param: Parametrisation, n_classes: int, steps: int,
           seed: int, options: dict[str, Any], progress: Callable[[int, int], None] | None) -> list[ReversedTrigger]:
    """The K-Arm schedule: every class's search (arm) explores cheaply, then the smallest run to the end.

    1. Explore: every arm runs ``K_ARM_EXPLORE · steps`` steps (a third) on mini-batches
       `K_ARM_EXPLORE_SHRINK` times smaller than its own (a quarter of a pass per step by default).
    2. Exploit: the classes ranked in the first `K_ARM_KEEP` by their smallest successful size (classes
       that never reached the success goal last), and any class within `K_ARM_PRUNE_RATIO` of the
       `K_ARM_KEEP`-th (at most `K_ARM_MOST` classes in all), continue on mini-batches
       `K_ARM_EXPLOIT_SHRINK` times smaller than their own (half a pass per step by default); every 10
       steps the ranking is redone, and a class
       outside the first `K_ARM_KEEP` whose size exceeds `K_ARM_PRUNE_RATIO` times the
       `K_ARM_KEEP`-th smallest is pruned. The others are pruned at once (hopeless arms).
    An arm ends as the full schedule's would (early stopping, ``steps``, non-finite outputs) or pruned.
    The arms that step together share one forward pass (at most `K_ARM_STACK` searches stacked).
    """
    search_options = {k: options[k] for k in ("lr", "init_cost", "success_goal", "batch_size", "patience",
                                              "pattern_range")}
    arms: dict[int, list[Search]] = {}
    for k in range(n_classes):
        others = inputs[predicted != k]
        if others.shape[0]:
            arms[k] = [Search(param, others, k, seed=seed + k + 7919 * r, **search_options)
                       for r in range(options["restarts"])]
    explore = max(1, round(K_ARM_EXPLORE * steps))
    for searches in arms.values():
        for search in searches:
            search.resize(max(1, search.labels.shape[0] // K_ARM_EXPLORE_SHRINK))
    pruned: set[int] = set()
    finished = n_classes - len(arms)

    def size(k: int) -> float:
        return min((s.smallest[-1] if s.smallest else float("inf")) for s in arms[k])

    def running(k: int) -> list[Search]:
        return [s for s in arms[k] if not s.done and s.steps < steps] if k not in pruned else []

    def step(group: list[Search]) -> None:
        for i in range(0, len(group), K_ARM_STACK):
            run_together(model, group[i:i + K_ARM_STACK])

    def report() -> None:
        nonlocal finished
        done_now = sum(1 for k in range(n_classes) if k not in arms or not running(k))
        if progress is not None and done_now > finished:
            progress(done_now, n_classes)
        finished = max(finished, done_now)

    while True:  # 1. explore
        group = [s for k in arms for s in running(k) if s.steps < explore]
        if not group:
            break
        step(group)
        report()
    for searches in arms.values():
        for search in searches:
            search.resize(max(1, options["batch_size"] // K_ARM_EXPLOIT_SHRINK))
    keeps = k_arm_keeps({k: size(k) for k in arms})
    pruned.update(k for k in arms if k not in keeps and running(k))  # the hopeless stop with their exploration's record
    for k in arms:
        for search in running(k):
            search.forget_successes()
    exploit = 0
    while True:  # 2. exploit: re-rank every 10 steps, prune the hopeless
        if exploit % 10 == 0 and exploit:  # among the arms still in the race, on full-batch sizes only
            ranked = sorted((k for k in arms if k not in pruned), key=lambda k: (size(k), k))
            bar = size(ranked[min(K_ARM_KEEP, len(ranked)) - 1])
            for k in ranked[K_ARM_KEEP:]:
                if running(k) and size(k) > K_ARM_PRUNE_RATIO * bar:  # an arm yet to succeed again runs on
                    pruned.add(k)
        group = [s for k in arms for s in running(k)]
        report()
        if not group:
            break
        step(group)
        exploit += 1
    results = []
    for k in range(n_classes):
        if k not in arms:
            results.append(_no_trigger_needed(inputs, k, param.family))
            continue
        found = [s.result(options["shrink_tolerance"], pruned=k in pruned) for s in arms[k]]
        best = min(found, key=lambda t: (not t.finite, t.attack_success < options["success_goal"], t.mask_l1))
        results.append(replace(best, passes=sum(t.passes for t in found)))
    return results
