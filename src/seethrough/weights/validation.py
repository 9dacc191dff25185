"""Mask findings validated by intervention: "these weights implement task A", tested against random masks.

The weights area of the taxonomy (weight masking, pruning), with `seethrough.evidence`'s logic: a
mask (a `WeightMask`'s ``binary()``, an `Importance`'s ``top(k)``, a `PruningMask`) is applied (only
its weights kept) and ablated (its weights zeroed), and every task is measured both ways beside
random masks of the same size in every parameter, drawn from the same population of weights. The
claim holds when the mask alone keeps its task better than the random masks (sufficient) and its
ablation spares each other task more than theirs (specific); whether its ablation hurts its own task
more than random ablation (necessary) is reported beside, not required (see `MaskValidation.necessary`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError
from ..core.inputs import validate_inputs
from ..core.results import Result, new_figure
from ..core.types import Inputs
from ..evidence.summary import bootstrap_ci
from ._functional import eval_mode, frozen_parameters, run

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["MaskValidation", "validate_mask", "correct"]

#: ``metric(output) -> (batch,)``: one score per example, higher = the task is done (e.g. `correct`).
Metric = Callable[[Any], Tensor]


def correct(labels: Tensor, *, columns: tuple[int, int] | None = None) -> Metric:
    """A metric: 1.0 where the argmax of the logits (of ``columns`` ``(start, stop)`` only, if given) is the label.

    The metric accepts any multiple of ``len(labels)`` rows (row r is example r mod n).

    Example:
        >>> metric = correct(torch.tensor([0, 1]), columns=(2, 4))
        >>> metric(torch.tensor([[9.0, 0, 1, 0], [0, 9.0, 1, 0]])).tolist()
        [1.0, 0.0]
    """
    labels = torch.as_tensor(labels).long()

    def metric(output: Any) -> Tensor:
        logits = output if columns is None else output[:, columns[0]:columns[1]]
        if logits.shape[0] % labels.shape[0]:
            raise InputError(f"the output has {logits.shape[0]} rows, not a multiple of the {labels.shape[0]} labels.")
        return (logits.argmax(-1) == labels.repeat(logits.shape[0] // labels.shape[0])).double()
    return metric


@dataclass(frozen=True)
class MaskValidation(Result):
    """Every task measured with the mask applied and ablated, beside random masks of the same size.

    Attributes:
        task: the task the mask is claimed to implement.
        tasks: every task measured, in order; the per-task tuples below follow it.
        density: the mask's fraction of the population kept.
        dense: each task's mean metric on the unmasked model.
        applied, ablated: each task's mean metric with only the mask's weights kept / with them zeroed.
        applied_ci, ablated_ci: bootstrap 95% CIs of those means (over examples).
        control_applied, control_ablated: per task, the means under each random mask.
        p_keep: the mask keeps ``task`` no better than random (fraction of controls at least as good, +1).
        p_drop: ablating the mask hurts ``task`` no more than random ablation.
        p_spare: per other task (``tasks`` without ``task``), ablating the mask hurts it no less than random.
        alpha: the level `validated` uses.
    """

    task: str
    tasks: tuple[str, ...]
    density: float
    dense: tuple[float, ...]
    applied: tuple[float, ...]
    ablated: tuple[float, ...]
    applied_ci: tuple[tuple[float, float], ...]
    ablated_ci: tuple[tuple[float, float], ...]
    control_applied: tuple[tuple[float, ...], ...]
    control_ablated: tuple[tuple[float, ...], ...]
    p_keep: float
    p_drop: float
    p_spare: tuple[float, ...]
    alpha: float = 0.05

    @property
    def sufficient(self) -> bool:
        """The mask alone keeps its task better than random masks of its size (``p_keep < alpha``)."""
        return self.p_keep < self.alpha

    @property
    def necessary(self) -> bool:
        """Ablating the mask hurts its task more than random ablations of its size (``p_drop < alpha``).

        Reported, not part of `validated`: the test has no power once random ablation of the mask's size
        already takes the task to chance. Measured on the planted two-task network (seed 0, 35% of the
        weights): ablating the planted task-A weights leaves head A its bias only, a constant prediction
        scoring the class frequency, 0.46, while random ablations average 0.43 (they make confident wrong
        predictions that score below a constant), so p_drop = 0.56 for the true answer.
        """
        return self.p_drop < self.alpha

    @property
    def specific(self) -> bool:
        """Ablating the mask spares every other task more than random ablations do (each ``p_spare < alpha``)."""
        return all(p < self.alpha for p in self.p_spare)

    @property
    def validated(self) -> bool:
        """Sufficient and specific: the claim "these weights implement ``task`` (and not the others)" survives."""
        return self.sufficient and self.specific

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        others = iter(self.p_spare)
        rows = []
        for i, name in enumerate(self.tasks):
            claimed = name == self.task
            spare = float("nan") if claimed else next(others)
            for kind, value, ci, controls, p in (
                    ("applied", self.applied[i], self.applied_ci[i], self.control_applied[i],
                     self.p_keep if claimed else float("nan")),
                    ("ablated", self.ablated[i], self.ablated_ci[i], self.control_ablated[i],
                     self.p_drop if claimed else spare)):
                rows.append({"task": name, "claimed": claimed, "intervention": kind, "dense": self.dense[i],
                             "value": value, "ci_low": ci[0], "ci_high": ci[1],
                             "control_mean": float(np.mean(controls)), "p_value": p})
        return pd.DataFrame(rows)

    def plot(self) -> Figure:
        fig = new_figure(2.8 * len(self.tasks) + 1, 3)
        for i, name in enumerate(self.tasks):
            ax = fig.add_subplot(1, len(self.tasks), i + 1)
            for j, (values, mine) in enumerate(((self.control_applied[i], self.applied[i]),
                                                (self.control_ablated[i], self.ablated[i]))):
                ax.scatter([j] * len(values), values, color="0.6", s=8)
                ax.scatter([j], [mine], color="crimson", s=30)
            ax.set_xticks([0, 1], ["applied", "ablated"])
            ax.set_title(f"task {name}{' (claimed)' if name == self.task else ''}")
            ax.set_ylim(-0.05, 1.05)
        fig.suptitle(f"validated: {self.validated}")
        return fig


def _check_mask(model: nn.Module, mask: Mapping[str, Tensor]) -> dict[str, Tensor]:
    if not isinstance(mask, Mapping) or not mask:
        raise InputTypeError(f"mask must be a non-empty mapping {{parameter name: bool tensor}} (a WeightMask's "
                             f".binary()), got {type(mask).__name__}.")
    params = dict(model.named_parameters())
    out = {}
    for name, m in mask.items():
        if name not in params:
            raise InputError(f"the mask names {name!r}, which the model lacks; it has {list(params)[:6]}.")
        m = torch.as_tensor(m)
        if tuple(m.shape) != tuple(params[name].shape):
            raise InputError(f"the mask of {name!r} has shape {tuple(m.shape)}, the parameter {tuple(params[name].shape)}.")
        out[name] = m.bool()
    return out


def validate_mask(model: nn.Module, mask: Mapping[str, Tensor], tasks: Mapping[str, tuple[Inputs, Metric]], *,
                  task: str, n_controls: int = 100, alpha: float = 0.05,
                  population: Mapping[str, Tensor] | None = None, seed: int = 0) -> MaskValidation:
    """Test "the weights of ``mask`` implement ``task``" by applying and ablating it against random masks.

    Each control keeps, in every masked parameter, as many weights as the mask keeps there, drawn
    uniformly from the ``population`` (default: the parameter's non-zero entries: a zero weight is no
    connection). Use held-out inputs: a mask learned on the same data is selected to keep it.

    Args:
        model: the network the mask is over (left unchanged).
        mask: ``{parameter name: bool tensor}``; parameters it does not name are never edited.
        tasks: ``{name: (inputs, metric)}``, ``metric(output) -> (batch,)`` higher = task done (`correct`).
        task: the name of the task the mask is claimed to implement.
        n_controls: random masks (the p-values' resolution is ``1 / (n_controls + 1)``).
        alpha: the level of `MaskValidation.validated`.
        population: ``{name: bool tensor}`` the controls draw from (default: the non-zero weights).
        seed: the controls and the bootstrap.

    Returns:
        `MaskValidation`.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 2, bias=False))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.fill_(0.05)
        ...     _ = model[0].weight[0, 0].fill_(3.0); _ = model[0].weight[1, 7].fill_(3.0)
        >>> x = torch.rand(200, 8)
        >>> mask = {"0.weight": model[0].weight > 1}  # the claim: these two weights do the task
        >>> v = validate_mask(model, mask, {"a": (x, correct(model(x).argmax(1)))}, task="a", n_controls=50)
        >>> v.sufficient, v.necessary
        (True, True)

    References:
        Csordás, van Steenkiste and Schmidhuber 2021 (masks as functional modules); the matched random
        controls follow `seethrough.evidence.validate`.
    """
    n_controls = check_int("n_controls", n_controls, at_least=1)
    alpha = check_float("alpha", alpha, at_least=0.0, at_most=1.0)
    seed = check_int("seed", seed)
    masks = _check_mask(model, mask)
    if not isinstance(tasks, Mapping) or task not in tasks:
        raise InputError(f"task must name one of tasks {list(tasks) if isinstance(tasks, Mapping) else tasks!r}, "
                         f"got {task!r}.")
    for name, entry in tasks.items():
        if not (isinstance(entry, tuple) and len(entry) == 2 and callable(entry[1])):
            raise InputTypeError(f"tasks[{name!r}] must be (inputs, metric), metric(output) -> per-example scores.")
        validate_inputs(model, entry[0])
    params, buffers = frozen_parameters(model)
    pool = ({n: params[n] != 0 for n in masks} if population is None else _check_mask(model, population))
    if set(pool) != set(masks):
        raise InputError(f"population must name the mask's parameters {sorted(masks)}, got {sorted(pool)}.")
    gen = torch.Generator().manual_seed(seed)
    names = list(tasks)

    def measure(keep: Mapping[str, Tensor]) -> list[Tensor]:
        edited = {n: p * keep[n].to(p.dtype) if n in keep else p for n, p in params.items()}
        return [tasks[t][1](run(model, edited, buffers, tasks[t][0])).double().flatten() for t in names]

    with eval_mode(model), torch.no_grad():
        dense = measure({})
        applied = measure(masks)
        ablated = measure({n: ~m for n, m in masks.items()})
        counts = {n: int((masks[n] & pool[n]).sum()) for n in masks}
        control_applied: list[list[float]] = [[] for _ in names]
        control_ablated: list[list[float]] = [[] for _ in names]
        for _ in range(n_controls):
            random = {}
            for n, m in pool.items():
                where = torch.nonzero(m.flatten()).flatten()
                keep = torch.zeros(m.numel(), dtype=torch.bool)
                keep[where[torch.randperm(where.numel(), generator=gen)[:counts[n]]]] = True
                random[n] = keep.reshape(m.shape)
            for i, value in enumerate(measure(random)):
                control_applied[i].append(float(value.mean()))
            for i, value in enumerate(measure({n: ~r for n, r in random.items()})):
                control_ablated[i].append(float(value.mean()))
    k = names.index(task)
    mean_applied = [float(v.mean()) for v in applied]
    mean_ablated = [float(v.mean()) for v in ablated]

    def p_value(hits: int) -> float:
        return (1 + hits) / (1 + n_controls)

    p_keep = p_value(sum(c >= mean_applied[k] for c in control_applied[k]))
    p_drop = p_value(sum(c <= mean_ablated[k] for c in control_ablated[k]))
    p_spare = tuple(p_value(sum(c >= mean_ablated[i] for c in control_ablated[i])) for i in range(len(names)) if i != k)
    total = sum(int(m.sum()) for m in pool.values())
    return MaskValidation(task, tuple(names), sum(counts.values()) / total if total else 0.0,
                          tuple(float(v.mean()) for v in dense), tuple(mean_applied), tuple(mean_ablated),
                          tuple(bootstrap_ci(v.numpy(), seed=seed) for v in applied),
                          tuple(bootstrap_ci(v.numpy(), seed=seed) for v in ablated),
                          tuple(tuple(c) for c in control_applied), tuple(tuple(c) for c in control_ablated),
                          p_keep, p_drop, p_spare, alpha)
