"""Lesion tests per module: which behaviours each module of a partition carries (Hod et al.).

Subnetworks / modularity in the survey's taxonomy. `lesion_test` ablates every unit of one module
at once (zero or mean ablation, as in `seethrough.core.zero_ablation` / `mean_ablation`), measures
how much each behaviour drops, and compares that drop with random unit sets of the same size in
every layer (a permutation p-value). A double dissociation (each module hurts its own behaviour at
least ``ratio`` times more than the behaviours of the other modules, significantly) gives the
verdict "specialised"; anything less "not specialised" (modular weights need not give
specialisation: Golechha et al. 2025).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..core import check_ablation, check_float, check_int
from ..core.errors import InputError, InputTypeError
from ..core.inputs import validate_inputs
from ..core.results import Result, new_figure
from ..core.sites import resolve_site
from ..core.types import Inputs
from ._ablate import copy_means, run_copies, unit_fills

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["LesionTest", "lesion_test", "SPECIALISED", "NOT_SPECIALISED"]

SPECIALISED = "specialised"
NOT_SPECIALISED = "not specialised"
_FLOOR = 0.01  # a drop below 1% of a behaviour's intact score counts as 1% of it in a ratio's denominator


@dataclass(frozen=True)
class LesionTest(Result):
    """Each module's lesion against random unit sets of the same size, per behaviour.

    Attributes:
        behaviours: the behaviour names, in order (columns of the arrays below).
        modules: the module ids tested (rows).
        sizes: units per module (all layers together).
        intact: ``(n_behaviours,)`` mean score of each behaviour with nothing ablated.
        damage: ``(n_modules, n_behaviours)`` intact minus lesioned mean score (higher = more harm).
        control_damage: ``(n_modules, n_controls, n_behaviours)`` the same for the random unit sets.
        p_values: ``(n_modules, n_behaviours)`` ``(1 + #{control ≥ module}) / (1 + n_controls)``.
        owner: for each behaviour, the module matched to it in the best one-to-one matching
            (-1: none), the one that maximises the smallest ratio.
        selectivity_p: ``(n_modules,)`` for each matched module, the share of its controls at least as
            selective, own damage minus the largest damage to another matched behaviour, as the module
            (``(1 + #) / (1 + n_controls)``; NaN for unmatched modules).
        ratio: the smallest, over matched modules, of the damage to its own behaviour over the
            largest damage to another matched behaviour (denominators floored at 1% of that
            behaviour's intact score); NaN with fewer than two matched pairs.
        verdict: ``"specialised"`` when ``ratio ≥ min_ratio`` and every matched module's own damage
            is positive with ``selectivity_p ≤ alpha``; else ``"not specialised"``.
    """

    behaviours: tuple[str, ...]
    modules: tuple[int, ...]
    sizes: tuple[int, ...]
    intact: np.ndarray
    damage: np.ndarray
    control_damage: np.ndarray
    p_values: np.ndarray
    owner: tuple[int, ...]
    selectivity_p: np.ndarray
    ratio: float
    verdict: str
    ablation: str
    alpha: float
    min_ratio: float

    @property
    def specialised(self) -> bool:
        return self.verdict == SPECIALISED

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        rows = []
        for i, m in enumerate(self.modules):
            for j, b in enumerate(self.behaviours):
                rows.append({"module": m, "behaviour": b, "units": self.sizes[i], "intact": float(self.intact[j]),
                             "damage": float(self.damage[i, j]),
                             "control_damage": float(self.control_damage[i, :, j].mean()),
                             "p_value": float(self.p_values[i, j]), "own": self.owner[j] == m})
        return pd.DataFrame(rows)

    def plot(self) -> Figure:
        fig = new_figure(1.6 + 1.2 * len(self.behaviours), 2.8)
        ax = fig.add_subplot()
        width = 0.8 / max(len(self.modules), 1)
        x = np.arange(len(self.behaviours))
        for i, m in enumerate(self.modules):
            ax.bar(x + i * width, self.damage[i], width, label=f"module {m}")
            ax.scatter(x + i * width, self.control_damage[i].mean(0), color="k", marker="_", zorder=3)
        ax.set_xticks(x + 0.4 - width / 2, list(self.behaviours), rotation=30, ha="right")
        ax.set_ylabel("damage (intact − lesioned)")
        ax.set_title(f"{self.verdict} (ratio {self.ratio:.2f})")
        ax.legend(fontsize="small")
        return fig


def _check_labels(model: nn.Module, labels: Any) -> dict[str, np.ndarray]:
    if not isinstance(labels, Mapping) or not labels:
        raise InputTypeError(f"labels must be a non-empty dict {{layer path: int array of module ids, -1 = leave "
                             f"out}} (e.g. partition(...).labels without the output layer); got {type(labels).__name__}.")
    out = {}
    for path, lab in labels.items():
        if not isinstance(path, str):
            raise InputTypeError(f"labels keys must be module paths (str), got {path!r}.")
        resolve_site(model, path)
        arr = np.asarray(lab.detach().cpu() if isinstance(lab, Tensor) else lab)
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise InputError(f"labels[{path!r}] must be a 1-D int array (one module id per unit), got dtype "
                             f"{arr.dtype} and shape {arr.shape}.")
        out[path] = arr.astype(np.int64)
    return out


def _matching(damage: np.ndarray, floor: np.ndarray) -> tuple[tuple[int, ...], float, list[tuple[int, int]]]:
    """The one-to-one module ↔ behaviour matching that maximises the smallest own/other ratio."""
    n_m, n_b = damage.shape
    k = min(n_m, n_b)
    best: tuple[float, list[tuple[int, int]]] = (-np.inf, [])
    for mods in itertools.combinations(range(n_m), k):
        for behs in itertools.permutations(range(n_b), k):
            pairs = list(zip(mods, behs, strict=True))
            ratios = []
            for m, b in pairs:
                others = [max(damage[m, b2], floor[b2]) for _, b2 in pairs if b2 != b]
                ratios.append(damage[m, b] / max(others) if others else np.nan)
            score = float(np.min(ratios)) if k >= 2 else np.nan
            if k < 2 or score > best[0]:
                best = (score, pairs)
    owner = [-1] * n_b
    for m, b in best[1]:
        owner[b] = m
    return tuple(owner), best[0], best[1]


def _selectivity_p(damage: np.ndarray, control: np.ndarray, pairs: list[tuple[int, int]]) -> list[float]:
    """Per matched module: how often a random unit set is at least as selective (own − largest other damage)."""
    out = []
    for m, b in pairs:
        others = [b2 for _, b2 in pairs if b2 != b]
        if not others:
            out.append(float("nan"))
            continue
        stat = damage[m, b] - damage[m, others].max()
        ctrl = control[m, :, b] - control[m][:, others].max(1)
        out.append(float((1 + (ctrl >= stat - 1e-12).sum()) / (1 + len(ctrl))))
    return out


def lesion_test(model: nn.Module, labels: Mapping[str, Any], inputs: Inputs,
                metrics: Mapping[str, Callable[[Any], Tensor]], *, ablation: str = "zero", n_controls: int = 100,
                alpha: float = 0.05, min_ratio: float = 3.0, max_rows: int = 4096, seed: int = 0) -> LesionTest:
    """Lesion each module of a partition and test which behaviours it carries, against random unit sets.

    Module ``m`` is every unit whose label is ``m`` (labels ``< 0`` are never ablated). Its damage to a
    behaviour is the behaviour's mean metric intact minus with all those units ablated at once. Each
    control draws, in every layer, as many units as the module has there, uniformly among that
    layer's labelled units, and is scored the same way; the p-value is the share of controls that do
    at least as much damage (``(1 + #) / (1 + n_controls)``). All lesioned copies run stacked, as
    many per forward pass as ``max_rows`` allows.

    Leave the output layer out of ``labels``: a module's own logits always "carry" its behaviour.

    Args:
        model: any ``nn.Module`` (left unchanged).
        labels: ``{layer path: int array, one module id per output unit or channel}``, e.g. the hidden
            layers of ``partition(model, k).labels``.
        inputs: the examples the behaviours are measured on (held-out data).
        metrics: ``{behaviour: metric(output) -> (rows,)}``, higher = behaviour intact (per-example
            accuracy of one output group, or minus its loss); each must accept any multiple of the
            batch's rows (row r is example r mod n).
        ablation: ``"zero"`` or ``"mean"`` (each unit's mean over ``inputs``).
        n_controls: random unit sets per module (the p-value's resolution is ``1 / (n_controls + 1)``).
        alpha: the level of the verdict's significance condition.
        min_ratio: own damage over the other behaviours' largest damage needed for "specialised".
        max_rows: rows per forward pass.
        seed: draws the controls.

    Returns:
        `LesionTest`.

    Raises:
        InputError: bad labels (unknown path, not 1-D ints, wrong length), no module with units,
            fewer than one behaviour, or bad arguments.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.eye(2)); _ = model[0].bias.zero_()
        ...     _ = model[2].weight.copy_(torch.eye(2)); _ = model[2].bias.zero_()
        >>> x = torch.rand(50, 2) + 0.1
        >>> metrics = {"a": lambda out: out[:, 0], "b": lambda out: out[:, 1]}
        >>> lesion_test(model, {"0": [0, 1]}, x, metrics, n_controls=5).owner
        (0, 1)

    References:
        Hod et al., "Detecting modularity in deep neural networks" / "Quantifying local specialization in
        deep neural networks", 2021-2022; Golechha et al., "Modular training of neural networks aids
        interpretability", 2025.
    """
    labels = _check_labels(model, labels)
    if not isinstance(metrics, Mapping) or not metrics or not all(callable(m) for m in metrics.values()):
        raise InputTypeError("metrics must be a non-empty dict {behaviour name: metric(output) -> (rows,)}.")
    ablation = check_ablation(ablation, ("zero", "mean"))
    n_controls = check_int("n_controls", n_controls, at_least=1)
    alpha = check_float("alpha", alpha, at_least=0.0, at_most=1.0)
    min_ratio = check_float("min_ratio", min_ratio, at_least=1.0)
    max_rows = check_int("max_rows", max_rows, at_least=1)
    seed = check_int("seed", seed, at_least=0)
    n = validate_inputs(model, inputs)
    paths = list(labels)
    fills = unit_fills(model, inputs, paths, ablation)
    for path in paths:
        if len(labels[path]) != len(fills[path]):
            raise InputError(f"labels[{path!r}] has {len(labels[path])} entries but {path!r} has "
                             f"{len(fills[path])} units.")
    modules = tuple(int(m) for m in np.unique(np.concatenate(list(labels.values()))) if m >= 0)
    if not modules:
        raise InputError("no unit has a module id ≥ 0; nothing to lesion.")
    rng = np.random.default_rng(seed)
    masks = {p: [torch.zeros(len(labels[p]), dtype=torch.bool)] for p in paths}  # copy 0: intact
    for m in modules:
        chosen = {p: labels[p] == m for p in paths}
        for p in paths:
            masks[p].append(torch.from_numpy(chosen[p]))
        for _ in range(n_controls):
            for p in paths:
                pool = np.flatnonzero(labels[p] >= 0)
                picked = np.zeros(len(labels[p]), dtype=bool)
                picked[rng.choice(pool, int(chosen[p].sum()), replace=False)] = True
                masks[p].append(torch.from_numpy(picked))
    stacked = {p: torch.stack(v) for p, v in masks.items()}
    names = tuple(str(k) for k in metrics)
    means = run_copies(model, inputs, stacked, fills, copy_means(list(metrics.values()), n),
                       max_rows=max_rows).numpy()
    intact = means[0]
    per = means[1:].reshape(len(modules), 1 + n_controls, len(names))
    damage = intact[None] - per[:, 0]
    control = intact[None, None] - per[:, 1:]
    p_values = (1 + (control >= damage[:, None, :] - 1e-12).sum(1)) / (1 + n_controls)
    floor = np.maximum(_FLOOR * np.abs(intact), 1e-12)
    owner_idx, ratio, pairs = _matching(damage, floor)
    selectivity_p = _selectivity_p(damage, control, pairs)
    significant = all(damage[m, b] > 0 and q <= alpha for (m, b), q in zip(pairs, selectivity_p, strict=True))
    verdict = SPECIALISED if len(pairs) >= 2 and ratio >= min_ratio and significant else NOT_SPECIALISED
    by_module = np.full(len(modules), np.nan)
    for (m, _), q in zip(pairs, selectivity_p, strict=True):
        by_module[m] = q
    owner = tuple(modules[i] if i >= 0 else -1 for i in owner_idx)
    sizes = tuple(int(sum((labels[p] == m).sum() for p in paths)) for m in modules)
    return LesionTest(names, modules, sizes, intact, damage, control, p_values, owner, by_module, float(ratio),
                      verdict, ablation, alpha, min_ratio)

