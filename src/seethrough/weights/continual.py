"""Continual learning as a lens: train tasks in sequence with EWC, SI or MAS penalties and measure forgetting.

The weights area of the taxonomy (§2.1, §3.1). `train_sequential` trains a *copy* of a model on one
task after another; after each task it scores every weight for that task (EWC's Fisher, MAS,
Synaptic Intelligence's path integral, or a shuffled control) and penalises moving important weights
while the next tasks train. The result holds the accuracy matrix (every task after every stage), the
forgetting, the importance maps the penalty used (`Importance`, savable) and SI's map of every task.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError
from ..core.results import Result, jsonable, new_figure
from ._training import Anchor, check_settings, check_tasks, fit_task, task_accuracy
from .importance import FISHER_VARIANTS, Importance, importance

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["SequentialTraining", "train_sequential", "quadratic_penalty", "PENALTIES"]

#: ``"none"``: naive fine-tuning; ``"ewc"``: the diagonal empirical Fisher (Kirkpatrick et al. 2017);
#: ``"si"``: Synaptic Intelligence (Zenke et al. 2017); ``"mas"``: memory-aware synapses (Aljundi et al.
#: 2018); ``"random"``: the control, EWC's Fisher values shuffled over all weights (same total, same
#: distribution, placed at random). ``"snip"``, ``"taylor"``, ``"magnitude"``: the same quadratic penalty
#: weighted by those `importance` scores (no published method: there to compare the lenses).
PENALTIES = ("none", "ewc", "si", "mas", "random", "snip", "taylor", "magnitude")


@dataclass(frozen=True)
class SequentialTraining(Result):
    """What sequential training did: the trained copy, the accuracy matrix, forgetting and importances.

    Attributes:
        model: the trained copy (the model passed in is never modified). Left out of `to_dict`.
        accuracy: ``accuracy[i][j]``: task j's accuracy (on its evaluation data) after training task i.
        forgetting: per task, its accuracy right after its own training minus its final accuracy
            (0 for the last task; negative = it improved later).
        importances: per task but the last, the importance map the penalty used after that task (empty for
            ``"none"``; for ``"si"`` the same objects as in ``si``).
        si: per task, Synaptic Intelligence's importance ``max(ω, 0) / (Δθ² + damping)``, tracked in
            every run whatever the penalty.
        path_integral: per task, SI's raw path integral ``ω = −Σ_steps g·Δθ`` (signed).
        penalty, strength: the penalty and its strength.
    """

    model: nn.Module
    accuracy: tuple[tuple[float, ...], ...]
    forgetting: tuple[float, ...]
    importances: tuple[Importance, ...]
    si: tuple[Importance, ...]
    path_integral: tuple[dict[str, Tensor], ...]
    penalty: str
    strength: float

    @property
    def final_accuracy(self) -> tuple[float, ...]:
        """Every task's accuracy after the last stage."""
        return self.accuracy[-1]

    @property
    def average_accuracy(self) -> float:
        """The mean of `final_accuracy` (the usual continual-learning summary)."""
        return sum(self.accuracy[-1]) / len(self.accuracy[-1])

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": jsonable(self.accuracy), "forgetting": jsonable(self.forgetting),
                "importances": jsonable(self.importances), "si": jsonable(self.si),
                "path_integral": jsonable(self.path_integral), "penalty": self.penalty, "strength": self.strength}

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        rows = [{"after_task": i, "task": j, "accuracy": a, "forgetting": self.forgetting[j] if i == len(self.accuracy) - 1 else None}
                for i, row in enumerate(self.accuracy) for j, a in enumerate(row)]
        return pd.DataFrame(rows, columns=["after_task", "task", "accuracy", "forgetting"])

    def plot(self) -> Figure:
        n = len(self.accuracy)
        fig = new_figure(2 + 0.6 * n, 1.5 + 0.6 * n)
        ax = fig.add_subplot()
        image = ax.imshow(torch.tensor(self.accuracy).numpy(), vmin=0, vmax=1, cmap="viridis")
        for i, row in enumerate(self.accuracy):
            for j, a in enumerate(row):
                ax.text(j, i, f"{a:.2f}", ha="center", va="center", color="w" if a < 0.6 else "k")
        ax.set_xlabel("task evaluated")
        ax.set_ylabel("after training task")
        ax.set_title(f"{self.penalty} (strength {self.strength:g})")
        fig.colorbar(image, ax=ax, label="accuracy")
        return fig


def quadratic_penalty(parameters: Mapping[str, Tensor], anchor: Mapping[str, Tensor],
                      scores: Mapping[str, Tensor], strength: float) -> Tensor:
    """EWC's (and SI's, MAS's) penalty ``strength/2 · Σ_k Ω_k (θ_k − θ*_k)²``, Ω = ``scores``, over the parameters it names.

    Example:
        >>> quadratic_penalty({"w": torch.tensor([1.0, 3.0])}, {"w": torch.tensor([0.0, 1.0])},
        ...                   {"w": torch.tensor([2.0, 0.5])}, 2.0)
        tensor(4.)
    """
    total = torch.zeros(())
    for name, omega in scores.items():
        total = total + (omega * (parameters[name] - anchor[name]).square()).sum()
    return strength / 2 * total


def train_sequential(
    model: nn.Module,
    tasks: Sequence[tuple[Tensor, Tensor]],
    *,
    penalty: str = "none",
    strength: float = 1.0,
    epochs: int = 10,
    lr: float = 1e-2,
    batch_size: int = 32,
    seed: int = 0,
    heads: Sequence[tuple[int, int]] | None = None,
    eval_tasks: Sequence[tuple[Tensor, Tensor]] | None = None,
    optimizer: str = "adam",
    variant: str = "empirical",
    damping: float = 0.1,
    trainable: Mapping[str, Tensor] | None = None,
) -> SequentialTraining:
    """Train a copy of ``model`` on ``tasks`` one after another, penalising moves of weights earlier tasks need.

    Task t trains on cross-entropy of its head (``heads[t]``: output columns; all columns when
    ``heads`` is None: one shared head, the class- or domain-incremental setting) plus, for every
    earlier task s, ``strength/2 · Σ Ω_s (θ − θ*_s)²`` with ``θ*_s`` the weights after task s and
    ``Ω_s`` its importance: the Fisher (``"ewc"``, empirical, on task s's training data through its
    head), MAS (``"mas"``), SI (``"si"``: ``max(ω, 0)/(Δθ² + damping)`` with ``ω`` the path integral
    of ``−g·Δθ`` along task s's training and ``Δθ`` its total move) or the control ``"random"`` (the
    Fisher's values shuffled over all weights by ``seed``). Training runs under a forked global RNG
    seeded by ``seed``, so results are reproducible and the caller's RNG is untouched.

    Args:
        model: a classifier returning logits ``(batch, n_outputs)``; it is copied, never modified.
        tasks: ``[(inputs, labels), ...]``; labels index the task's head columns.
        penalty: one of `PENALTIES`.
        strength: the penalty's weight λ (tune it per penalty: the importances' scales differ).
        epochs, lr, batch_size: mini-batch training of each task (a fresh optimizer per task).
        seed: shuffling, dropout and the random control.
        heads: per task ``(start, stop)`` output columns (multi-head, task-incremental), or None.
        eval_tasks: held-out ``(inputs, labels)`` per task for the accuracy matrix (default: ``tasks``).
        optimizer: ``"adam"`` or ``"sgd"`` (plain, no momentum).
        variant: the Fisher variant of ``"ewc"`` and ``"random"`` (`FISHER_VARIANTS`).
        damping: SI's ξ.
        trainable: optional ``{parameter name: bool tensor}``: entries that may change (others stay
            bit-identical); parameters with ``requires_grad=False`` are never trained.

    Returns:
        `SequentialTraining` with the trained copy, the accuracy matrix, forgetting and importance maps.

    Raises:
        InputError: unknown penalty, bad settings, tasks or heads (checked before any training).

    Example:
        >>> torch.manual_seed(0) and None
        >>> model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> x = torch.randn(64, 4)
        >>> r = train_sequential(model, [(x, (x[:, 0] > 0).long()), (x, (x[:, 1] > 0).long())], penalty="si",
        ...                      strength=1.0, epochs=2)
        >>> len(r.accuracy), len(r.si), r.si[0].scores["0.weight"].shape
        (2, 2, torch.Size([16, 4]))

    References:
        Kirkpatrick et al. 2017 (EWC); Zenke, Poole and Ganguli 2017 (SI); Aljundi et al. 2018 (MAS);
        van de Ven and Tolias 2019 (the three continual-learning scenarios).
    """
    if penalty not in PENALTIES:
        raise InputError(f"penalty must be one of {', '.join(PENALTIES)}, got {penalty!r}.")
    if variant not in FISHER_VARIANTS:
        raise InputError(f"variant must be one of {', '.join(FISHER_VARIANTS)}, got {variant!r}.")
    strength = check_float("strength", strength, at_least=0.0)
    damping = check_float("damping", damping, at_least=0.0)
    seed = check_int("seed", seed)
    settings = check_settings(epochs, lr, batch_size, optimizer)
    pairs, columns = check_tasks(model, tasks, heads)
    evals = pairs if eval_tasks is None else check_tasks(model, eval_tasks, heads, "eval_tasks")[0]
    if len(evals) != len(pairs):
        raise InputError(f"eval_tasks must give one (inputs, labels) pair per task ({len(pairs)}), got {len(evals)}.")
    names = dict(model.named_parameters())
    if trainable is not None:
        bad = [n for n, m in trainable.items() if n not in names or tuple(m.shape) != tuple(names[n].shape)]
        if bad:
            raise InputError(f"trainable must map parameter names to masks of their shape; {bad[:3]} do not.")
    trained = copy.deepcopy(model)
    for p in trained.parameters():
        p.grad = None
    modes = [(m, m.training) for m in trained.modules()]
    generator = torch.Generator().manual_seed(seed)
    anchors: list[Anchor] = []
    accuracy, used, si, integrals = [], [], [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for t, ((x, y), cols) in enumerate(zip(pairs, columns, strict=True)):
            start = {n: p.detach().clone() for n, p in trained.named_parameters()}
            omega = fit_task(trained, x, y, cols, settings, generator, anchors=anchors, trainable=trainable)
            for module, mode in modes:
                module.training = mode
            end = {n: p.detach().clone() for n, p in trained.named_parameters()}
            si_scores = {n: omega[n].clamp(min=0) / ((end[n] - start[n]).square() + damping) if n in omega
                         else torch.zeros_like(end[n]) for n in end}
            si.append(Importance(si_scores, "si", n_examples=len(x)))
            integrals.append({n: omega.get(n, torch.zeros_like(end[n])) for n in end})
            accuracy.append(tuple(task_accuracy(trained, ex, ey, c) for (ex, ey), c in zip(evals, columns, strict=True)))
            if penalty != "none" and t < len(pairs) - 1:
                scores = si[-1] if penalty == "si" else _importance(trained, x, y, cols, penalty, variant, seed + t)
                used.append(scores)
                anchors.append(Anchor(strength, scores.scores, end))
    forgetting = tuple(accuracy[j][j] - accuracy[-1][j] for j in range(len(pairs)))
    return SequentialTraining(trained, tuple(accuracy), forgetting, tuple(used), tuple(si), tuple(integrals),
                              penalty, strength)


class _Columns(nn.Module):
    """A task's view of a network: its output columns (its head)."""

    def __init__(self, net: nn.Module, columns: slice) -> None:
        super().__init__()
        self.net = net
        self.columns = columns

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[:, self.columns]


def _importance(model: nn.Module, inputs: Tensor, labels: Tensor, columns: slice, penalty: str, variant: str,
                seed: int) -> Importance:
    view = _Columns(model, columns)
    method = "fisher" if penalty in ("ewc", "random") else penalty
    options = {"variant": variant} if method == "fisher" else {}
    raw = importance(view, inputs, None if method in ("mas", "magnitude") else labels, method=method, **options)
    scores = {n.removeprefix("net."): s for n, s in raw.scores.items()}
    if penalty == "random":
        flat = torch.cat([s.flatten() for s in scores.values()])
        flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))]
        shuffled, start = {}, 0
        for n, s in scores.items():
            shuffled[n] = flat[start:start + s.numel()].reshape(s.shape)
            start += s.numel()
        return Importance(shuffled, "random", f"shuffled {variant} fisher", raw.n_examples)
    return Importance(scores, raw.method, raw.variant, raw.n_examples)
