"""Overlap between the weights two tasks use: shared and specific weights, per parameter and overall.

The weights area of the taxonomy. `overlap` compares two boolean weight selections (a `WeightMask`'s
``binary()``, an `Importance`'s ``top(fraction)``, a PackNet allocation) parameter by parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor

from ..core.errors import InputError
from ..core.results import Result, new_figure

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["Overlap", "overlap"]


@dataclass(frozen=True)
class Overlap(Result):
    """Counts of weights selected by task a, task b and both, per parameter, and their Jaccard index.

    Attributes:
        names: the parameters compared, in order.
        only_a, only_b, shared: weights selected by a only, b only, both, per parameter.
        jaccard: ``shared / (only_a + only_b + shared)`` over all parameters (0 when neither selects any).
    """

    names: tuple[str, ...]
    only_a: tuple[int, ...]
    only_b: tuple[int, ...]
    shared: tuple[int, ...]
    jaccard: float

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame({"parameter": list(self.names), "only_a": list(self.only_a), "only_b": list(self.only_b),
                             "shared": list(self.shared)})

    def plot(self) -> Figure:
        fig = new_figure(max(4.0, 0.5 * len(self.names) + 2), 3)
        ax = fig.add_subplot()
        x = range(len(self.names))
        ax.bar(x, self.only_a, label="a only")
        ax.bar(x, self.shared, bottom=self.only_a, label="shared")
        ax.bar(x, self.only_b, bottom=[a + s for a, s in zip(self.only_a, self.shared, strict=True)], label="b only")
        ax.set_xticks(list(x), list(self.names), rotation=45, ha="right")
        ax.set_ylabel("weights")
        ax.set_title(f"Jaccard {self.jaccard:.3f}")
        ax.legend()
        return fig


def overlap(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Overlap:
    """Compare two weight selections ``{parameter name: bool tensor}`` over the parameters they both name.

    Example:
        >>> import torch
        >>> r = overlap({"w": torch.tensor([True, True, False])}, {"w": torch.tensor([False, True, True])})
        >>> r.shared, r.only_a, r.jaccard
        ((1,), (1,), 0.3333333333333333)
    """
    names = tuple(n for n in a if n in b)
    if not names:
        raise InputError(f"the two selections share no parameter name ({list(a)[:3]} vs {list(b)[:3]}).")
    only_a, only_b, shared = [], [], []
    for n in names:
        x, y = a[n].bool(), b[n].bool()
        if x.shape != y.shape:
            raise InputError(f"selections of {n!r} differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}.")
        shared.append(int((x & y).sum()))
        only_a.append(int((x & ~y).sum()))
        only_b.append(int((~x & y).sum()))
    union = sum(only_a) + sum(only_b) + sum(shared)
    return Overlap(names, tuple(only_a), tuple(only_b), tuple(shared), sum(shared) / union if union else 0.0)
