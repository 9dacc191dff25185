"""Repair: remove a found backdoor by unlearning the reverse-engineered trigger.

Fine-tunes a *copy* of the model on labelled clean data in which a fraction of every batch carries
the reconstructed trigger but keeps its true label (Neural Cleanse's unlearning mitigation), then
measures on held-out data what changed: clean accuracy and the trigger's attack success, before
and after. The user's model is never modified.

References:
    Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural Networks", 2019.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import InputError
from ..core.inputs import validate_inputs
from ..core.results import Result, jsonable, new_figure
from ..evidence import Trigger, accuracy, attack_success, stamp
from ._forward import check_labels, checked_logits, model_failures
from .verdict import AuditResult, as_images, unwrap

__all__ = ["RepairResult", "repair_by_unlearning", "repair"]


@dataclass(frozen=True)
class RepairResult(Result):
    """The repaired copy, the triggers unlearned (the first is measured) and the held-out numbers
    before and after."""

    model: nn.Module
    triggers: tuple[Trigger, ...]
    clean_accuracy_before: float
    clean_accuracy_after: float
    attack_success_before: float
    attack_success_after: float
    epochs: int

    def to_dict(self) -> dict[str, Any]:
        """The ``repair`` record of ``findings.json`` (the model itself is not JSON: save its state dict)."""
        return jsonable({"status": "repaired", "target_class": self.triggers[0].target,
                "method": "unlearning (fine-tune with the reversed trigger, true labels)", "epochs": self.epochs,
                "clean_accuracy_before": self.clean_accuracy_before, "clean_accuracy_after": self.clean_accuracy_after,
                "attack_success_before": self.attack_success_before,
                "attack_success_after": self.attack_success_after})

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame({"when": ["before", "after"],
                             "clean_accuracy": [self.clean_accuracy_before, self.clean_accuracy_after],
                             "attack_success": [self.attack_success_before, self.attack_success_after]})

    def plot(self) -> Any:
        """Clean accuracy and the reversed trigger's attack success, before and after the repair."""
        fig = new_figure(4.5, 2.6)
        ax = fig.add_subplot()
        frame = self.to_frame()
        for i, column in enumerate(("clean_accuracy", "attack_success")):
            ax.bar([i - 0.2, i + 0.2], frame[column], width=0.4, color=["0.6", "tab:blue"])
        ax.set_xticks([0, 1], ["clean accuracy", "attack success"])
        ax.set_ylim(0, 1)
        ax.set_title("before (grey) and after (blue), held out", fontsize=9)
        return fig


def repair_by_unlearning(model: nn.Module, inputs: Tensor, labels: Tensor, trigger: Trigger, *,
                         also: Sequence[Trigger] = (), epochs: int = 20, lr: float = 1e-3,
                         stamp_fraction: float = 0.5, distill: float = 1.0, batch_size: int = 64,
                         held_out: float = 0.5, seed: int = 0) -> RepairResult:
    """Fine-tune a copy of ``model`` to ignore the trigger; report held-out accuracy and attack success.

    Args:
        model: the classifier (not modified).
        inputs, labels: labelled clean data; the first ``1 - held_out`` of a seeded shuffle trains, the
            rest measures.
        trigger: the reverse-engineered trigger, in the model's input space; its attack success is measured.
        also: more triggers to unlearn alongside (e.g. the other trigger families the audit flagged);
            each stamped example carries one trigger drawn at random.
        stamp_fraction: fraction of each batch stamped with a trigger (labels unchanged).
        distill: weight of a KL term that keeps the copy's outputs on the *unstamped* examples close
            to the original model's (0 turns it off): fine-tuning alone cost 1-4 points of clean
            accuracy on digits, the distillation term keeps it within about 1.

    Settings were explored on the zoo's trojaned digits MLPs and CNNs at seeds 0-3 and 1000-1003
    (repaired on the training split, scored with the *planted* trigger on the test split); the
    trojan-repair game scores them on models from seeds 2000+, which no setting was chosen on.
    """
    x = inputs
    validate_inputs(model, x)
    y = check_labels(labels, x.shape[0], int(checked_logits(model, x).shape[1]))  # before any work
    if not all(isinstance(t, Trigger) for t in (trigger, *also)):
        raise InputError("trigger and also must be seethrough.evidence.Trigger objects.")
    if not 0.0 < held_out < 1.0 or not 0.0 <= stamp_fraction <= 1.0:
        raise InputError("held_out must be in (0, 1) and stamp_fraction in [0, 1].")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(x.shape[0], generator=gen)
    n_train = int(round(x.shape[0] * (1 - held_out)))
    if n_train < 1 or n_train >= x.shape[0]:
        raise InputError(f"{x.shape[0]} examples are too few to split into training and held-out parts.")
    train_x, train_y = x[order[:n_train]], y[order[:n_train]]
    test_x, test_y = x[order[n_train:]], y[order[n_train:]]
    triggers = [trigger, *also]
    with model_failures(model, x, "repair"):
        return _unlearn(model, train_x, train_y, test_x, test_y, triggers, epochs, lr, stamp_fraction, distill,
                        batch_size, gen)


def _unlearn(model: nn.Module, train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
             triggers: list[Trigger], epochs: int, lr: float, stamp_fraction: float, distill: float, batch_size: int,
             gen: torch.Generator) -> RepairResult:
    trigger, n_train = triggers[0], train_x.shape[0]
    before_acc = accuracy(model, test_x, test_y)
    before_asr = attack_success(model, test_x, test_y, trigger)
    repaired = copy.deepcopy(model)
    for p in repaired.parameters():
        p.requires_grad_(True)
    repaired.train()
    opt = torch.optim.Adam(repaired.parameters(), lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(n_train, generator=gen)
        for start in range(0, n_train, batch_size):
            idx = perm[start:start + batch_size]
            xb, yb = train_x[idx].clone(), train_y[idx]
            stamped = torch.rand(len(idx), generator=gen) < stamp_fraction
            which = torch.randint(0, len(triggers), (len(idx),), generator=gen)
            for i, t in enumerate(triggers):
                chosen = stamped & (which == i)
                xb[chosen] = stamp(xb[chosen], t)
            logits = repaired(xb)
            loss = F.cross_entropy(logits, yb)
            if distill > 0 and bool((~stamped).any()):  # keep the original's behaviour on clean inputs
                with torch.no_grad():
                    teacher = model(xb[~stamped])
                loss = loss + distill * F.kl_div(F.log_softmax(logits[~stamped], -1), F.log_softmax(teacher, -1),
                                                 log_target=True, reduction="batchmean")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    repaired.eval()
    for p in repaired.parameters():
        p.grad = None
    return RepairResult(repaired, tuple(triggers), before_acc, accuracy(repaired, test_x, test_y), before_asr,
                        attack_success(repaired, test_x, test_y, trigger), epochs)


def repair(result: AuditResult, model: nn.Module, inputs: Tensor, labels: Tensor, *, seed: int = 0,
           **kwargs: Any) -> RepairResult | None:
    """Unlearn every trigger the audit validated (`repair_by_unlearning` on a copy; ``model`` is unchanged).

    Args:
        result: what `scan` returned for ``model``.
        model: the audited classifier.
        inputs, labels: labelled clean data, shaped as the audit's inputs (``(N, D)`` for a vector model);
            labels are checked against the model's classes before any work.
        seed: seeds the split and the fine-tuning.
        **kwargs: passed on to `repair_by_unlearning` (``epochs``, ``lr``, ``held_out``...).

    Returns:
        The repair (its ``model`` built like ``model``; the first validated trigger is the one
        measured), or ``None`` when the audit validated no trigger.

    Raises:
        InputError: labels that are not class indices ``(N,)`` of the model's classes (checked first).
        ForwardError: the model's forward fails on the data.
    """
    if not isinstance(inputs, Tensor) or inputs.ndim not in (2, 4):
        raise InputError(f"repair inputs must be (N, D) or (N, C, H, W); got "
                         f"{getattr(inputs, 'shape', type(inputs).__name__)}.")
    check_labels(labels, inputs.shape[0], int(checked_logits(model, inputs).shape[1]))
    triggers = result.validated_triggers
    if not triggers:
        return None
    vector = bool(result.settings.get("vector_input"))  # repaired through the audit's 1 x D view
    fixed = repair_by_unlearning(as_images(model) if vector else model, inputs[:, None, None, :] if vector else inputs,
                                 labels, triggers[0], also=triggers[1:], seed=seed, **kwargs)
    return dataclasses.replace(fixed, model=unwrap(fixed.model))
