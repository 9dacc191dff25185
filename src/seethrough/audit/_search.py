"""The trigger search's engine (private): one class's search, stepping several searches in one forward.

`Search` holds one class's search (one restart): its leaf tensors, optimiser, adaptive sparsity weight
and record; `run_together` steps several searches with their stamped batches stacked into one forward;
`ReversedTrigger` is what a search returns. `seethrough.audit.reverse` schedules searches (full or
K-Arm) and `seethrough.audit.refine` restarts one from a found trigger; both build on this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.results import Result
from ..evidence.trigger import Trigger, stamp
from .families import Parametrisation, PatternRange


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

    ``pruned``: a K-Arm scan (`neural_cleanse` with ``schedule="k-arm"``) stopped this class's search
    early because its trigger stayed far larger than the smallest classes' (a hopeless arm): its size
    is an upper bound on what a full search would find, and it is never ``converged``. ``passes``:
    the forward+backward passes of the model the search spent (examples through the model with a
    backward pass / ``batch_size``).
    """

    trigger: Trigger
    mask_l1: float
    attack_success: float
    steps_run: int = 0
    reached_goal: bool = True
    recent_shrink: float = 0.0
    finite: bool = True
    converged: bool = True
    pruned: bool = False
    passes: float = 0.0

    def to_frame(self) -> Any:
        """One row: the trigger's target and family, its L1 size, success, the steps run, convergence and cost."""
        import pandas as pd

        return pd.DataFrame({"target": [self.trigger.target], "family": [self.trigger.family],
                             "mask_l1": [self.mask_l1], "attack_success": [self.attack_success],
                             "steps_run": [self.steps_run], "reached_goal": [self.reached_goal],
                             "recent_shrink": [self.recent_shrink], "finite": [self.finite],
                             "converged": [self.converged], "pruned": [self.pruned], "passes": [self.passes]})

    def plot(self) -> Any:
        """The trigger's mask and ``mask × pattern`` (`Trigger.plot`)."""
        return self.trigger.plot()



def detached(trigger: Trigger) -> Trigger:
    """A copy of ``trigger`` whose tensors (mask, pattern and any other, e.g. a warp field) carry no graph."""
    tensors = {f.name: getattr(trigger, f.name).detach().clone() for f in fields(trigger)
               if isinstance(getattr(trigger, f.name), Tensor)}
    return replace(trigger, **tensors)


class Search:
    """One class's trigger search (one restart): its leaf tensors, optimiser, adaptive L1 weight and record.

    The engine drives it in three calls per step, so that several searches can share one forward:
    `stamped` (draw a batch and stamp the current trigger), `loss` (on the search's own logits),
    `advance` (an Adam step from the gradients, then the bookkeeping). Its draws come from its own
    generator, so a search makes the same steps whether it runs alone or beside others.
    """

    def __init__(self, family: Parametrisation, inputs: Tensor, target: int, *, lr: float, init_cost: float,
                 success_goal: float, batch_size: int, patience: int | None, pattern_range: PatternRange,
                 seed: int, anneal: float = 1.5) -> None:
        self.family, self.inputs, self.target = family, inputs, target
        self.anneal = anneal
        self.success_goal, self.patience, self.pattern_range = success_goal, patience, pattern_range
        self.batch_size = batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.params = [t.requires_grad_(True) for t in family.init(tuple(inputs.shape[1:]), self.gen)]
        self.opt = torch.optim.Adam(self.params, lr=lr, betas=(0.5, 0.9))
        self.cost = init_cost
        self.labels = torch.full((min(batch_size, inputs.shape[0]),), target, dtype=torch.long)
        self.best: tuple[float, Trigger, float] | None = None
        self.hits = 0.0
        self.window: list[float] = []
        self.last_gain = 0
        self.first_success = float("inf")
        self.smallest: list[float] = []  # the smallest successful size after each step (inf before the first success)
        self.finite, self.stopped_early, self.done = True, False, False
        self.examples = 0  # examples through the model with a backward pass
        self._trigger: Trigger | None = None
        self._size: Tensor | None = None

    def resize(self, batch: int) -> None:
        """Draw ``batch`` examples per step from now on (at most the number of inputs)."""
        self.labels = torch.full((min(batch, self.inputs.shape[0]),), self.target, dtype=torch.long)

    def forget_successes(self) -> None:
        """Start the record of successful triggers afresh (the optimiser's state and the weight carry on).

        Successes on small exploration batches are optimistic (31 of 32 is not 122 of 128), so an arm
        that continues on larger batches must reach the goal again on them before a size counts.
        """
        self.best, self.first_success, self.last_gain = None, float("inf"), len(self.smallest)
        self.smallest = [float("inf")] * len(self.smallest)

    @property
    def steps(self) -> int:
        return len(self.smallest)

    def stamped(self) -> Tensor:
        index = torch.randint(0, self.inputs.shape[0], (self.labels.shape[0],), generator=self.gen)
        self._trigger = self.family.trigger(self.params, self.target, self.pattern_range)
        self.examples += int(self.labels.shape[0])
        return stamp(self.inputs[index], self._trigger)

    def loss(self, logits: Tensor) -> Tensor:
        assert self._trigger is not None
        # the size is taken after the forward, as the engine always did: autograd then sums the mask's
        # two gradients in the same order, so a search reproduces earlier runs bit for bit
        self._size = self.family.size(self._trigger)
        return F.cross_entropy(logits, self.labels) + self.cost * self._size

    def advance(self, logits: Tensor, grads: Sequence[Tensor]) -> None:
        assert self._trigger is not None and self._size is not None
        if not (bool(torch.isfinite(logits).all()) and all(bool(torch.isfinite(g).all()) for g in grads)):
            self.finite, self.done = False, True  # never score a NaN: stop with what was found before
            return
        self.opt.zero_grad(set_to_none=True)
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
        self.opt.step()
        step = len(self.smallest)
        hits = self.hits = float((logits.argmax(-1) == self.target).float().mean())
        self.window.append(hits)
        size = float(self._size.detach())
        best = self.best
        if hits >= self.success_goal and (best is None or size < best[0]):
            if best is None or size < 0.99 * best[0]:
                self.last_gain = step
            self.first_success = size if best is None else self.first_success
            self.best = (size, detached(self._trigger), hits)
        self.smallest.append(self.best[0] if self.best is not None else float("inf"))
        if self.patience is not None and self.best is not None and step - self.last_gain >= self.patience:
            self.stopped_early = self.done = True
        if (step + 1) % 10 == 0:  # adapt the L1 weight on the last 10 steps' success
            success = sum(self.window) / len(self.window)
            self.cost = self.cost * self.anneal if success >= self.success_goal else self.cost / self.anneal ** 1.5
            self.window.clear()
        self._trigger = self._size = None

    def shrink_rate(self, span: int) -> float:
        """How much the smallest successful size shrank over the last ``span`` steps (1.0 before a success)."""
        if not self.smallest or self.smallest[-1] == float("inf"):
            return 1.0
        before = self.smallest[max(0, len(self.smallest) - 1 - span)]
        return 1.0 if before == float("inf") else 1.0 - self.smallest[-1] / max(before, 1e-12)

    def result(self, shrink_tolerance: float, *, pruned: bool = False) -> ReversedTrigger:
        steps_run = len(self.smallest) + (0 if self.finite else 1)
        reached = self.best is not None
        if self.best is None:  # the last trigger (the optimiser's state after its last finite step)
            with torch.no_grad():
                last = detached(self.family.trigger(self.params, self.target, self.pattern_range))
                self.best = (float(self.family.size(last)), last, self.hits if self.finite else 0.0)
        size, trigger, success = self.best
        shrink = 0.0
        if reached and not self.stopped_early:  # how much the smallest successful size shrank over the last quarter
            n = len(self.smallest)
            before = self.smallest[n - 1 - max(1, n // 4)] if n > 1 else float("inf")
            shrink = 1.0 if before == float("inf") else 1.0 - size / max(before, 1e-12)
        converged = (reached and self.finite and size < 0.99 * self.first_success
                     and (self.stopped_early or shrink <= shrink_tolerance) and not pruned)
        return ReversedTrigger(trigger, size, success, steps_run=steps_run, reached_goal=reached,
                               recent_shrink=shrink, finite=self.finite, converged=converged, pruned=pruned,
                               passes=self.examples / self.batch_size)


def run_together(model: nn.Module, searches: Sequence[Search]) -> None:
    """One optimisation step of every search in ``searches``, their stamped batches stacked into one forward."""
    batches = [s.stamped() for s in searches]
    logits = model(torch.cat(batches)) if len(batches) > 1 else model(batches[0])
    parts = logits.split([b.shape[0] for b in batches])
    losses = [s.loss(part) for s, part in zip(searches, parts, strict=True)]
    params = [p for s in searches for p in s.params]
    # each loss depends only on its own search's tensors, so the gradient of the sum is each search's own
    grads = torch.autograd.grad(losses[0] if len(losses) == 1 else torch.stack(losses).sum(), params)
    at = 0
    for s, part in zip(searches, parts, strict=True):
        s.advance(part.detach(), grads[at:at + len(s.params)])
        at += len(s.params)
