"""Frivolous weights: pruning masks from importance scores, sparsity–accuracy curves, lottery tickets.

The weights area of the taxonomy (frivolous weights). `prune` turns per-weight scores (an
`Importance`'s ``.scores``) into a binary `PruningMask`, globally or per layer, over single weights or
whole units (rows of a Linear, output channels of a Conv2d, scored by their weights' total score).
`sparsity_curve` measures accuracy as the pruned fraction grows. `lottery_ticket` runs iterative
magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020) on a copy of the model;
`train_sparse`, `reinitialised` and `shuffled_masks` train a mask and build its two classic controls.
The model passed in is never altered.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError
from ..core.io import load_tensors, save_tensors
from ..core.results import Result, new_figure
from ._functional import (
    Loss,
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

__all__ = ["PruningMask", "prune", "prunable_parameters", "SparsityCurve", "sparsity_curve", "LotteryTicket",
           "lottery_ticket", "train_sparse", "reinitialised", "shuffled_masks", "SCOPES", "STRUCTURES"]

SCOPES = ("global", "layer")
#: ``"weights"``: single weights (unstructured); ``"units"``: whole rows of a Linear / output channels of a Conv.
STRUCTURES = ("weights", "units")
_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_parameters(model: nn.Module, *, structure: str = "weights") -> list[str]:
    """The weight parameters `prune` masks by default: every Linear / Conv weight, in module order.

    For ``structure="units"`` the last such module is left out: its rows are the network's outputs.

    Example:
        >>> prunable_parameters(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
        ['0.weight', '2.weight']
    """
    names = [f"{path}.weight" if path else "weight" for path, m in model.named_modules()
             if isinstance(m, _PRUNABLE) and isinstance(getattr(m, "weight", None), nn.Parameter)]
    return names[:-1] if structure == "units" else names


@dataclass(frozen=True)
class PruningMask(Result):
    """A binary pruning mask per parameter (True = kept), with how it was chosen.

    Attributes:
        masks: ``{parameter name: bool tensor shaped like the parameter}`` (structured masks also
            cover each pruned unit's bias entry).
        sparsity: the fraction asked to be removed (of the weights, or of the units).
        scope: ``"global"`` (one ranking over all parameters) or ``"layer"`` (each ranked alone).
        structure: ``"weights"`` or ``"units"``.
        density: the fraction of masked entries kept.
    """

    masks: dict[str, Tensor]
    sparsity: float
    scope: str
    structure: str
    density: float

    def binary(self) -> dict[str, Tensor]:
        """``{name: bool tensor}``: the kept entries (the same interface as `WeightMask.binary`)."""
        return dict(self.masks)

    def apply(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` with the pruned entries set to zero (``model`` untouched)."""
        return masked_copy(model, self.masks, keep=True)

    def ablate(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` with the kept entries set to zero instead (the complement of `apply`)."""
        return masked_copy(model, self.masks, keep=False)

    def save(self, path: str | Path) -> None:
        """Write the masks as safetensors (``path``) with a JSON sidecar."""
        save_tensors(path, {n: m.to(torch.uint8) for n, m in self.masks.items()},
                     {"sparsity": self.sparsity, "scope": self.scope, "structure": self.structure,
                      "density": self.density})

    @classmethod
    def load(cls, path: str | Path) -> PruningMask:
        """Read what `save` wrote."""
        tensors, meta = load_tensors(path)
        return cls({n: t.bool() for n, t in tensors.items()}, float(meta["sparsity"]), str(meta["scope"]),
                   str(meta["structure"]), float(meta["density"]))

    def to_frame(self) -> pandas.DataFrame:
        return mask_table(self.masks)

    def plot(self) -> Figure:
        return mask_figure(self.masks, f"{self.scope} {self.structure} pruning, density {self.density:.3f}")


def _check_scores(model: nn.Module, scores: Mapping[str, Tensor], names: list[str]) -> dict[str, Tensor]:
    params = dict(model.named_parameters())
    if not isinstance(scores, Mapping):
        raise InputError(f"scores must be a mapping {{parameter name: tensor}} (an Importance's .scores), got "
                         f"{type(scores).__name__}.")
    out = {}
    for n in names:
        if n not in params:
            raise InputError(f"parameters must name parameters of the model, got {n!r}; it has {list(params)[:6]}.")
        if n not in scores:
            raise InputError(f"scores has no entry for {n!r}; score every pruned parameter (got {list(scores)[:4]}).")
        s = torch.as_tensor(scores[n]).detach()
        if s.shape != params[n].shape:
            raise InputError(f"scores[{n!r}] has shape {tuple(s.shape)}, the parameter {tuple(params[n].shape)}.")
        out[n] = s.double().cpu()
    return out


def _keep_top(flat: Tensor, n_prune: int) -> Tensor:
    """Bool keep-vector: the ``n_prune`` lowest scores are pruned (ties: earlier entries go first)."""
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[:n_prune]] = False
    return keep


def prune(model: nn.Module, scores: Mapping[str, Tensor], *, sparsity: float, scope: str = "global",
          structure: str = "weights", parameters: list[str] | None = None) -> PruningMask:
    """Prune the lowest-scoring weights (or units) of ``model``: a mask that removes a ``sparsity`` fraction.

    Unstructured (``structure="weights"``): the ``round(sparsity × n)`` lowest-scoring entries go, ranked
    over all ``parameters`` together (``scope="global"``) or within each parameter (``"layer"``).
    Structured (``"units"``): each unit (a row of a Linear weight, an output channel of a Conv) is
    scored by the total of its weights' scores and a ``sparsity`` fraction of the units goes, with
    its bias entry. Ties go in parameter order (a stable sort). The model is only read.

    Args:
        model: the network (its parameter names and shapes; structured pruning also masks biases).
        scores: ``{parameter name: tensor shaped like it, higher = keep}``, e.g. ``importance(...).scores``.
        sparsity: the fraction to remove, in [0, 1].
        scope: one of `SCOPES`.
        structure: one of `STRUCTURES`.
        parameters: the weight parameters to prune (default `prunable_parameters`).

    Returns:
        `PruningMask`; ``.apply(model)`` gives the pruned copy.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> s = {"0.weight": torch.tensor([[4.0, 2.0], [3.0, 1.0]]), "2.weight": torch.tensor([[0.5, 5.0]])}
        >>> prune(model, s, sparsity=0.5).masks["0.weight"].tolist()
        [[True, False], [True, False]]
        >>> prune(model, s, sparsity=0.5, structure="units").masks["0.weight"].tolist()
        [[True, True], [False, False]]
    """
    sparsity = check_float("sparsity", sparsity, at_least=0.0, at_most=1.0)
    if scope not in SCOPES:
        raise InputError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}.")
    if structure not in STRUCTURES:
        raise InputError(f"structure must be one of {', '.join(STRUCTURES)}, got {structure!r}.")
    names = prunable_parameters(model, structure=structure) if parameters is None else list(parameters)
    if not names:
        raise InputError("no parameter to prune: pass parameters=[...] (the model has no Linear/Conv weight to prune "
                         f"{'below its output layer' if structure == 'units' else ''}).")
    checked = _check_scores(model, scores, names)
    params = dict(model.named_parameters())
    if structure == "weights":
        masks = _prune_weights(checked, sparsity, scope)
    else:
        masks = _prune_units(checked, params, sparsity, scope)
    total = sum(m.numel() for m in masks.values())
    return PruningMask(masks, sparsity, scope, structure, sum(int(m.sum()) for m in masks.values()) / total)


def _prune_weights(scores: dict[str, Tensor], sparsity: float, scope: str) -> dict[str, Tensor]:
    if scope == "layer":
        return {n: _keep_top(s.flatten(), round(sparsity * s.numel())).reshape(s.shape) for n, s in scores.items()}
    flat = torch.cat([s.flatten() for s in scores.values()])
    keep = _keep_top(flat, round(sparsity * flat.numel()))
    out, start = {}, 0
    for n, s in scores.items():
        out[n] = keep[start:start + s.numel()].reshape(s.shape)
        start += s.numel()
    return out


def _prune_units(scores: dict[str, Tensor], params: dict[str, Tensor], sparsity: float,
                 scope: str) -> dict[str, Tensor]:
    totals = {n: s.reshape(s.shape[0], -1).sum(1) for n, s in scores.items()}
    if scope == "layer":
        keep_units = {n: _keep_top(t, round(sparsity * t.numel())) for n, t in totals.items()}
    else:
        flat = torch.cat(list(totals.values()))
        keep, keep_units, start = _keep_top(flat, round(sparsity * flat.numel())), {}, 0
        for n, t in totals.items():
            keep_units[n] = keep[start:start + t.numel()]
            start += t.numel()
    out = {}
    for n, units in keep_units.items():
        shape = params[n].shape
        out[n] = units.reshape(-1, *([1] * (len(shape) - 1))).expand(shape).clone()
        bias = n.removesuffix("weight") + "bias"
        if n.endswith("weight") and bias in params and params[bias].shape == (shape[0],):
            out[bias] = units.clone()
    return out


@dataclass(frozen=True)
class SparsityCurve(Result):
    """Accuracy against the pruned fraction.

    Attributes:
        sparsity: the pruned fractions, ascending.
        accuracy: the pruned model's accuracy at each.
        dense_accuracy: the unpruned model's accuracy on the same data.
        scope, structure: how the masks were chosen (see `prune`).
    """

    sparsity: tuple[float, ...]
    accuracy: tuple[float, ...]
    dense_accuracy: float
    scope: str
    structure: str

    def largest_sparsity(self, tolerance: float = 0.01) -> float:
        """The largest measured sparsity whose accuracy is within ``tolerance`` of the dense accuracy (0 if none)."""
        ok = [s for s, a in zip(self.sparsity, self.accuracy, strict=True) if a >= self.dense_accuracy - tolerance]
        return max(ok, default=0.0)

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame({"sparsity": list(self.sparsity), "accuracy": list(self.accuracy)})

    def plot(self) -> Figure:
        fig = new_figure(4.5, 3)
        ax = fig.add_subplot()
        ax.plot(self.sparsity, self.accuracy, marker="o", label=f"{self.scope} {self.structure}")
        ax.axhline(self.dense_accuracy, color="0.5", linestyle="--", label="dense")
        ax.set_xlabel("fraction pruned")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
        return fig


def sparsity_curve(model: nn.Module, inputs: Tensor, targets: Tensor, scores: Mapping[str, Tensor], *,
                   sparsities: tuple[float, ...] = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98), scope: str = "global",
                   structure: str = "weights", parameters: list[str] | None = None) -> SparsityCurve:
    """Accuracy of ``model`` on ``inputs`` after `prune` at each of ``sparsities`` (no retraining).

    The pruned parameters run through `torch.func.functional_call` in eval mode; the model is left as found.

    Example:
        >>> torch.manual_seed(0) and None
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> x = torch.randn(64, 4)
        >>> scores = {n: p.detach().abs() for n, p in model.named_parameters()}
        >>> c = sparsity_curve(model, x, model(x).argmax(1), scores, sparsities=(0.0, 1.0))
        >>> c.accuracy[0], c.dense_accuracy
        (1.0, 1.0)
    """
    points = tuple(sorted(check_float("sparsities", s, at_least=0.0, at_most=1.0) for s in sparsities))
    if not points:
        raise InputError("sparsities must name at least one pruned fraction in [0, 1].")
    _, target = prepare(model, inputs, targets, None)
    masks = [prune(model, scores, sparsity=s, scope=scope, structure=structure, parameters=parameters) for s in points]
    params, buffers = frozen_parameters(model)
    accuracy = []
    with eval_mode(model), torch.no_grad():
        dense = _accuracy(run(model, params, buffers, inputs), target)
        for mask in masks:
            edited = {n: p * mask.masks[n].to(p.dtype) if n in mask.masks else p for n, p in params.items()}
            accuracy.append(_accuracy(run(model, edited, buffers, inputs), target))
    return SparsityCurve(points, tuple(accuracy), dense, scope, structure)


def _accuracy(output: Tensor, target: Tensor | None) -> float:
    return float((output.argmax(-1) == target).float().mean())


# -- training a sparse network, lottery tickets ---------------------------------------------------------


def _train(model: nn.Module, masks: Mapping[str, Tensor], inputs: Tensor, targets: Tensor, *, steps: int, lr: float,
           batch_size: int, seed: int, loss: Loss, capture_step: int | None = None) -> dict[str, Tensor] | None:
    """Train ``model`` (a copy we own) in place with Adam on shuffled mini-batches, keeping masked entries at zero.

    Returns the parameters after ``capture_step`` steps when asked (the rewinding point). The global RNG
    is forked (modules that draw from it, e.g. dropout, draw from ``seed``), so the caller's state is untouched.
    """
    params = dict(model.named_parameters())
    n = inputs.shape[0]
    gen = torch.Generator().manual_seed(seed)
    captured = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, m in masks.items():
                params[name].mul_(m.to(params[name].dtype))
        optimiser = torch.optim.Adam(list(params.values()), lr=lr)
        modes = [(m, m.training) for m in model.modules()]
        model.train()
        order, position = torch.randperm(n, generator=gen), 0
        try:
            for step in range(steps + 1):
                if step == capture_step:
                    captured = {k: v.detach().clone() for k, v in params.items()}
                if step == steps:
                    break
                if position + batch_size > n:
                    order, position = torch.randperm(n, generator=gen), 0
                rows = order[position:position + batch_size]
                position += batch_size
                optimiser.zero_grad(set_to_none=True)
                loss(model(inputs[rows]), targets[rows]).backward()
                with torch.no_grad():
                    for name, m in masks.items():
                        if params[name].grad is not None:
                            params[name].grad.mul_(m.to(params[name].dtype))
                optimiser.step()
                with torch.no_grad():
                    for name, m in masks.items():
                        params[name].mul_(m.to(params[name].dtype))
        finally:
            for module, mode in modes:
                module.training = mode
            for p in params.values():
                p.grad = None
    return captured


def _check_training(model: nn.Module, inputs: Tensor, targets: Tensor, masks: Mapping[str, Tensor] | None,
                    steps: int, lr: float, batch_size: int, seed: int) -> tuple[int, float, int, int]:
    steps = check_int("steps", steps, at_least=0)
    lr = check_float("lr", lr, at_least=0.0)
    batch_size = check_int("batch_size", batch_size, at_least=1)
    seed = check_int("seed", seed)
    if not isinstance(inputs, Tensor):
        raise InputError(f"inputs must be a tensor (batch, ...), got {type(inputs).__name__}.")
    prepare(model, inputs, targets, None)
    if masks is not None:
        params = dict(model.named_parameters())
        for n, m in masks.items():
            if n not in params or tuple(m.shape) != tuple(params[n].shape):
                raise InputError(f"masks[{n!r}] must match a parameter of the model in shape; got "
                                 f"{tuple(m.shape)} for {'an unknown name' if n not in params else tuple(params[n].shape)}.")
    return steps, lr, min(batch_size, inputs.shape[0]), seed


def train_sparse(model: nn.Module, masks: Mapping[str, Tensor], inputs: Tensor, targets: Tensor, *, steps: int = 500,
                 lr: float = 1e-2, batch_size: int = 128, seed: int = 0) -> nn.Module:
    """A trained copy of ``model`` with the masked-out weights held at zero (``model`` untouched).

    Adam on mini-batches of ``batch_size`` (a fresh shuffle per epoch, from ``seed``), cross-entropy on
    class indices; masked entries are zeroed before training and after every step (their gradients too).

    Example:
        >>> torch.manual_seed(0) and None
        >>> model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> x = torch.randn(64, 2)
        >>> mask = {"0.weight": torch.tensor([[True, False]] * 4)}
        >>> trained = train_sparse(model, mask, x, (x[:, 0] > 0).long(), steps=50)
        >>> bool((trained[0].weight[:, 1] == 0).all()), bool((model[0].weight[:, 1] != 0).all())
        (True, True)
    """
    steps, lr, batch_size, seed = _check_training(model, inputs, targets, masks, steps, lr, batch_size, seed)
    copied = copy.deepcopy(model)
    _train(copied, {n: m.bool() for n, m in masks.items()}, inputs, targets.long(), steps=steps, lr=lr,
           batch_size=batch_size, seed=seed, loss=cross_entropy)
    return copied


def reinitialised(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with fresh weights: PyTorch's default ``U(±1/sqrt(fan_in))`` for every Linear/Conv
    weight and bias, drawn from ``seed`` (a local generator; the global RNG is untouched).

    The lottery-ticket control "random re-initialisation of the same mask" trains this copy under the ticket's mask.
    """
    seed = check_int("seed", seed)
    copied = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in copied.named_modules():
            if isinstance(m, _PRUNABLE):
                bound = 1.0 / max(1, m.weight[0].numel()) ** 0.5
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 2 * bound - bound)
                if m.bias is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 2 * bound - bound)
    return copied


def shuffled_masks(masks: Mapping[str, Tensor], *, seed: int = 0) -> dict[str, Tensor]:
    """Each mask's entries randomly permuted within its parameter: same density per layer, random support.

    Example:
        >>> m = shuffled_masks({"w": torch.tensor([[True, False, False], [False, False, True]])}, seed=1)
        >>> int(m["w"].sum()), tuple(m["w"].shape)
        (2, (2, 3))
    """
    seed = check_int("seed", seed)
    gen = torch.Generator().manual_seed(seed)
    return {n: m.bool().flatten()[torch.randperm(m.numel(), generator=gen)].reshape(m.shape) for n, m in masks.items()}


@dataclass(frozen=True)
class LotteryTicket(Result):
    """Iterative magnitude pruning with rewinding: the mask and held-out accuracy of every round.

    Attributes:
        masks: per round (round 0 is dense), ``{parameter name: bool tensor}``.
        density: per round, the fraction of pruned parameters' weights kept.
        accuracy: per round, the accuracy after training that round's sparse network from the rewound weights.
        rewind: the parameters after ``rewind_step`` steps of dense training (what every round restarts from).
        weights: the last round's trained parameters.
        rewind_step: the training step rewound to (0 = the original initialisation, Frankle & Carbin 2019).
    """

    masks: tuple[dict[str, Tensor], ...]
    density: tuple[float, ...]
    accuracy: tuple[float, ...]
    rewind: dict[str, Tensor]
    weights: dict[str, Tensor]
    rewind_step: int

    @property
    def dense_accuracy(self) -> float:
        return self.accuracy[0]

    def ticket(self, model: nn.Module, index: int = -1) -> nn.Module:
        """A copy of ``model`` holding the rewound weights under the mask of round ``index``: the ticket before training."""
        copied = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in copied.named_parameters():
                p.copy_(self.rewind[n])
        return masked_copy(copied, self.masks[index], keep=True)

    def trained(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` holding the last round's trained sparse weights."""
        copied = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in copied.named_parameters():
                p.copy_(self.weights[n])
        return copied

    def save(self, path: str | Path) -> None:
        """Write every round's mask (``round<i>/<name>``) and the rewound weights as safetensors."""
        tensors = {f"round{i}/{n}": m.to(torch.uint8) for i, ms in enumerate(self.masks) for n, m in ms.items()}
        tensors.update({f"rewind/{n}": t for n, t in self.rewind.items()})
        tensors.update({f"weights/{n}": t for n, t in self.weights.items()})
        save_tensors(path, tensors, {"density": list(self.density), "accuracy": list(self.accuracy),
                                     "rewind_step": self.rewind_step})

    @classmethod
    def load(cls, path: str | Path) -> LotteryTicket:
        """Read what `save` wrote."""
        tensors, meta = load_tensors(path)
        rounds: list[dict[str, Tensor]] = [{} for _ in meta["density"]]
        rewind, weights = {}, {}
        for key, t in tensors.items():
            head, _, name = key.partition("/")
            if head == "rewind":
                rewind[name] = t
            elif head == "weights":
                weights[name] = t
            else:
                rounds[int(head.removeprefix("round"))][name] = t.bool()
        return cls(tuple(rounds), tuple(float(d) for d in meta["density"]), tuple(float(a) for a in meta["accuracy"]),
                   rewind, weights, int(meta["rewind_step"]))

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame({"round": list(range(len(self.density))), "density": list(self.density),
                             "accuracy": list(self.accuracy)})

    def plot(self) -> Figure:
        fig = new_figure(4.5, 3)
        ax = fig.add_subplot()
        ax.plot(self.density, self.accuracy, marker="o", label=f"IMP, rewound to step {self.rewind_step}")
        ax.axhline(self.dense_accuracy, color="0.5", linestyle="--", label="dense")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("density (fraction of weights kept)")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
        return fig


def lottery_ticket(model: nn.Module, inputs: Tensor, targets: Tensor, *, rounds: int = 8, rate: float = 0.2,
                   rewind_step: int = 0, steps: int = 500, lr: float = 1e-2, batch_size: int = 128,
                   scope: str = "global", heldout: tuple[Tensor, Tensor] | None = None, seed: int = 0,
                   parameters: list[str] | None = None) -> LotteryTicket:
    """Iterative magnitude pruning with rewinding on a copy of ``model`` (``model`` is its initialisation).

    Round 0 trains the dense copy for ``steps`` steps (`train_sparse`'s trainer, seed ``seed``) and keeps
    its parameters after ``rewind_step`` steps. Each later round prunes a ``rate`` fraction of the
    weights still kept, lowest trained magnitude first (``scope`` as in `prune`), rewinds the surviving
    weights to the kept parameters and trains again (same seed, same batches). After ``rounds`` rounds
    the density is ``(1 − rate)^rounds``.

    Args:
        model: the untrained network (left untouched).
        inputs, targets: the training data, ``(batch, ...)`` and class indices ``(batch,)``.
        rounds: pruning rounds after the dense one.
        rate: fraction of the remaining weights pruned per round.
        rewind_step: the dense-training step the weights are rewound to (Frankle et al. 2020; 0 = init).
        steps, lr, batch_size: each round's training (Adam).
        scope: ``"global"`` or ``"layer"`` magnitude ranking.
        heldout: ``(inputs, targets)`` the accuracy per round is measured on (default: the training data).
        seed: the batches' order.
        parameters: the weights pruned (default `prunable_parameters`: Linear/Conv weights; biases stay).

    Returns:
        `LotteryTicket`: masks, densities and accuracies per round, the rewound and last trained weights.

    Example:
        >>> torch.manual_seed(0) and None
        >>> model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> x = torch.randn(128, 4)
        >>> t = lottery_ticket(model, x, (x[:, 0] > 0).long(), rounds=2, rate=0.5, steps=40, rewind_step=5)
        >>> [round(d, 2) for d in t.density]
        [1.0, 0.5, 0.25]

    References:
        Frankle and Carbin 2019, "The lottery ticket hypothesis"; Frankle, Dziugaite, Roy and Carbin 2020,
        "Linear mode connectivity and the lottery ticket hypothesis" (rewinding to an early iterate).
    """
    steps, lr, batch_size, seed = _check_training(model, inputs, targets, None, steps, lr, batch_size, seed)
    rounds = check_int("rounds", rounds, at_least=0)
    rate = check_float("rate", rate, at_least=0.0, at_most=1.0)
    rewind_step = check_int("rewind_step", rewind_step, at_least=0, at_most=steps)
    if scope not in SCOPES:
        raise InputError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}.")
    names = prunable_parameters(model) if parameters is None else list(parameters)
    params = dict(model.named_parameters())
    unknown = sorted(set(names) - set(params))
    if unknown or not names:
        raise InputError(f"parameters must name parameters of the model, got unknown {unknown[:3]}; it has "
                         f"{list(params)[:6]}.")
    eval_inputs, eval_targets = (inputs, targets) if heldout is None else heldout
    prepare(model, eval_inputs, eval_targets, None)
    targets = targets.long()
    mask = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
    work = copy.deepcopy(model)
    rewind = _train(work, mask, inputs, targets, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                    loss=cross_entropy, capture_step=rewind_step)
    assert rewind is not None  # captured at a step in 0..steps
    masks, density, accuracy = [mask], [1.0], [_model_accuracy(work, eval_inputs, eval_targets)]
    total = sum(m.numel() for m in mask.values())
    for _ in range(rounds):
        trained = dict(work.named_parameters())
        # magnitudes of the kept weights; pruned ones rank below everything (-1) so they stay pruned
        scores = {n: torch.where(mask[n], trained[n].detach().abs(), torch.tensor(-1.0)) for n in names}
        kept = sum(int(m.sum()) for m in mask.values())
        if scope == "global":
            n_prune = total - kept + round(rate * kept)
            mask = prune(work, scores, sparsity=n_prune / total, scope="global", parameters=names).masks
        else:
            mask = {n: _keep_top(scores[n].double().flatten(), int(m.numel() - m.sum()) + round(rate * int(m.sum()))
                                 ).reshape(m.shape) for n, m in mask.items()}
        with torch.no_grad():
            for n, p in work.named_parameters():
                p.copy_(rewind[n])
        _train(work, mask, inputs, targets, steps=steps, lr=lr, batch_size=batch_size, seed=seed, loss=cross_entropy)
        masks.append(mask)
        density.append(sum(int(m.sum()) for m in mask.values()) / total)
        accuracy.append(_model_accuracy(work, eval_inputs, eval_targets))
    final = {n: p.detach().clone() for n, p in work.named_parameters()}
    return LotteryTicket(tuple(masks), tuple(density), tuple(accuracy), rewind, final, rewind_step)


def _model_accuracy(model: nn.Module, inputs: Tensor, targets: Tensor) -> float:
    params, buffers = frozen_parameters(model)
    with eval_mode(model), torch.no_grad():
        return _accuracy(run(model, params, buffers, inputs), targets.long())
