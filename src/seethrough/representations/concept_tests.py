"""TCAV over several concepts: each concept's calibrated test, with and without a multiple-testing correction.

Representations / concept vectors (survey §5.5). Testing m concepts at level α each calls about
m·α meaningless concepts significant. `tcav_concepts` runs `tcav` per concept (each with its own
draws) and reports every p-value as it is, Holm-adjusted (family-wise error ≤ α) and
Benjamini–Hochberg-adjusted (false discovery rate ≤ α), beside the number of random runs, which
bounds what a correction can reach: the smallest rank p-value is ``1 / (n_random + 1)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError
from ..core.results import Result, new_figure
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from ..evidence.multiple import benjamini_hochberg
from .concepts import TCAVResult, tcav

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["tcav_concepts", "ConceptTests"]


def _holm(p_values: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the given order (reject where ``adjusted ≤ α``: FWER ≤ α).

    ``adj_(i) = max_{j ≤ i} min(1, (m - j + 1) p_(j))`` over the p-values sorted ascending
    (``statsmodels.stats.multitest.multipletests(p, method="holm")`` computes the same).

    Example:
        >>> _holm([0.01, 0.04, 0.03, 0.2]).round(3).tolist()
        [0.04, 0.09, 0.09, 0.2]

    References:
        Holm, "A simple sequentially rejective multiple test procedure", Scand. J. Statist., 1979.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or not bool(np.all((p >= 0.0) & (p <= 1.0))):
        raise InputError(f"p-values must be a 1-d array of numbers in [0, 1] (no NaN); got shape {p.shape}.")
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(np.maximum.accumulate(p[order] * (m - np.arange(m))), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out


@dataclass(frozen=True)
class ConceptTests(Result):
    """TCAV tests of several concepts at one site for one target, corrected for their number.

    Attributes:
        site: where the CAVs live.
        target: the output column.
        results: concept name → its `TCAVResult` (uncorrected ``p_value`` and ``significant``).
        p_holm: Holm-adjusted p-values, in the order of ``results``.
        q_bh: Benjamini–Hochberg q-values, in the same order.
        alpha: the level of every decision.
        n_random: random runs (null statistics) per concept; the smallest p-value is ``1 / (n_random + 1)``.
    """

    site: Site
    target: int
    results: Mapping[str, TCAVResult]
    p_holm: tuple[float, ...]
    q_bh: tuple[float, ...]
    alpha: float
    n_random: int

    @property
    def significant(self) -> dict[str, bool]:
        """Concepts significant without correction (each test at ``alpha``)."""
        return {name: r.significant for name, r in self.results.items()}

    @property
    def significant_holm(self) -> dict[str, bool]:
        """Concepts significant after Holm's correction (family-wise error ≤ ``alpha``)."""
        return {name: p <= self.alpha for name, p in zip(self.results, self.p_holm, strict=True)}

    @property
    def significant_bh(self) -> dict[str, bool]:
        """Concepts significant after Benjamini–Hochberg (false discovery rate ≤ ``alpha``)."""
        return {name: q <= self.alpha for name, q in zip(self.results, self.q_bh, strict=True)}

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        names = list(self.results)
        return pd.DataFrame({"concept": names, "score": [self.results[n].score for n in names],
                             "p_value": [self.results[n].p_value for n in names], "p_holm": list(self.p_holm),
                             "q_bh": list(self.q_bh), "significant": [self.significant[n] for n in names],
                             "significant_holm": [self.significant_holm[n] for n in names],
                             "significant_bh": [self.significant_bh[n] for n in names],
                             "n_random": [self.n_random] * len(names)})

    def plot(self) -> Figure:
        fig = new_figure(4.5, 2.6)
        ax = fig.add_subplot()
        names = list(self.results)
        x = np.arange(len(names))
        ax.bar(x - 0.2, [self.results[n].p_value for n in names], 0.4, color="C0", label="p (uncorrected)")
        ax.bar(x + 0.2, list(self.p_holm), 0.4, color="C1", label="p (Holm)")
        ax.axhline(self.alpha, color="C3", lw=0.8)
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(f"TCAV at {self.site.path}, target {self.target} ({self.n_random} random runs)", fontsize=9)
        ax.legend(fontsize=7)
        return fig


def tcav_concepts(model: nn.Module, concepts: Mapping[str, Inputs], random: Inputs, site: Site | str, inputs: Inputs,
                  target: int, *, n_random: int = 20, alpha: float = 0.05, seed: int = 0,
                  metric: Callable[[Any], Tensor] | None = None, n_runs: int | None = None,
                  statistic: str = "sign", batch_size: int = 256) -> ConceptTests:
    """`tcav` for each concept, with Holm and Benjamini–Hochberg corrections over the concepts.

    Concept ``i`` (in the mapping's order) is tested with seed ``seed + i``. A warning says when no
    concept can survive Holm's correction at ``alpha`` with this many random runs
    (``m / (n_random + 1) > alpha``): raise ``n_random``.

    Args:
        model: any ``nn.Module`` (left as found).
        concepts: name → concept inputs.
        random, site, inputs, target, n_random, alpha, metric, n_runs, statistic, batch_size: as for `tcav`.
        seed: the first concept's seed.

    Returns:
        A `ConceptTests` with every concept's `TCAVResult` and the adjusted p-values.

    Example:
        >>> import torch
        >>> model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> g = torch.Generator().manual_seed(0)
        >>> r = tcav_concepts(model, {"a": torch.randn(10, 2, generator=g) + 2, "b": torch.randn(10, 2, generator=g)},
        ...                   torch.randn(30, 2, generator=g), "1", torch.randn(8, 2, generator=g), 0, n_random=39, n_runs=2)
        >>> list(r.to_frame().columns)[:4]
        ['concept', 'score', 'p_value', 'p_holm']
    """
    if not isinstance(concepts, Mapping) or not concepts:
        raise InputError("concepts must be a non-empty mapping of concept name -> concept inputs.")
    n_random = check_int("n_random", n_random, at_least=1)
    level = check_float("alpha", alpha, at_least=0.0, at_most=1.0)
    check_int("seed", seed)
    resolved = resolve_site(model, site)[0]
    m = len(concepts)
    if m / (n_random + 1) > level:
        warnings.warn(f"with {n_random} random runs the smallest p-value is 1/{n_random + 1}; Holm's correction over "
                      f"{m} concepts can reject none at alpha {level} (needs n_random >= {int(np.ceil(m / level)) - 1}).",
                      stacklevel=2)
    results = {str(name): tcav(model, concept, random, resolved, inputs, target, n_random=n_random, alpha=level,
                               seed=seed + i, metric=metric, n_runs=n_runs, statistic=statistic, batch_size=batch_size)
               for i, (name, concept) in enumerate(concepts.items())}
    p = np.array([r.p_value for r in results.values()])
    return ConceptTests(resolved, int(target), results, tuple(float(v) for v in _holm(p)),
                        tuple(float(v) for v in benjamini_hochberg(p)), level, n_random)
