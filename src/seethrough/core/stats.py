"""Streaming statistics over batches: running mean, (block) covariance, and top-k with indices.

These accumulate over `seethrough.core.batching.stream` so dataset-scale passes keep memory
independent of the number of examples. Every state is mergeable: ``a.merge(b)``, with ``a`` and
``b`` built over disjoint parts of a dataset, is the state of the whole, so a pass can be split
into shards (`seethrough.core.batching.sharded_pass`). Sums are kept in float64; co-moments
merge with Chan et al.'s parallel update, so the result does not depend on how the data was
chunked. Exact quantiles, which need several passes, live in `seethrough.core.quantiles`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .checks import check_int
from .errors import InputError, NotFittedError

__all__ = ["Mergeable", "RunningMean", "RunningCovariance", "RunningBlockCovariance", "TopK"]

M = TypeVar("M", bound="Mergeable")


@runtime_checkable
class Mergeable(Protocol):
    """A streaming state: ``merge(other)`` folds in a state of the same kind built over other rows."""

    def merge(self: M, other: M) -> M: ...


def _as_rows(x: Tensor, d: int | None, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise InputError(f"{name}.update expects a Tensor of shape (n, d), got {type(x).__name__}.")
    if x.ndim != 2:
        raise InputError(f"{name}.update expects shape (n, d), got {tuple(x.shape)}; flatten with x.flatten(1).")
    if d is not None and x.shape[1] != d:
        raise InputError(f"{name}.update got {x.shape[1]} columns, but earlier batches had {d}.")
    x = x.detach().to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{name}.update got NaN/inf values; the statistic would be meaningless.")
    return x


def _check_same(name: str, mine: object, theirs: object, what: str) -> None:
    if mine != theirs:
        raise InputError(f"{name}.merge got a state with {what} {theirs!r}, but this one has {mine!r}; "
                         "merge only states of the same statistic over the same units.")


class RunningMean:
    """Mean of the rows of every batch seen so far.

    Example:
        >>> m = RunningMean(); m.update(torch.tensor([[1.0], [3.0]])); m.update(torch.tensor([[5.0]]))
        >>> m.mean.item(), m.count
        (3.0, 3)
        >>> other = RunningMean(); other.update(torch.tensor([[7.0]]))
        >>> m.merge(other).mean.item(), m.count
        (4.0, 4)
    """

    def __init__(self) -> None:
        self.count = 0
        self._sum: Tensor | None = None

    def update(self, x: Tensor) -> None:
        """Add the rows of ``x`` (batch, n_units)."""
        x = _as_rows(x, None if self._sum is None else self._sum.shape[0], "RunningMean")
        self._sum = x.sum(0) if self._sum is None else self._sum + x.sum(0)
        self.count += x.shape[0]

    def merge(self, other: RunningMean) -> RunningMean:
        """Fold in ``other`` (built over other rows); returns ``self``."""
        if other._sum is not None:
            if self._sum is None:
                self._sum = other._sum.clone()
            else:
                _check_same("RunningMean", self._sum.shape[0], other._sum.shape[0], "n_units")
                self._sum = self._sum + other._sum
        self.count += other.count
        return self

    @property
    def mean(self) -> Float[Tensor, " n_units"]:
        if self._sum is None or self.count == 0:
            raise NotFittedError("RunningMean has seen no data; call update() first.")
        return self._sum / self.count


class RunningBlockCovariance:
    """Means of several blocks of columns and the co-moments of chosen pairs of blocks.

    The co-moment of blocks ``(i, j)`` is ``Σ (x_i − mean_i)ᵀ (x_j − mean_j)`` over all rows, a
    ``(d_i, d_j)`` matrix; only the ``pairs`` asked for are kept, so two representations'
    own and cross co-moments cost ``d1² + d2² + d1 d2`` numbers rather than ``(d1 + d2)²``.
    Batches and merged states follow Chan et al.'s parallel update, in place. Rows are first
    shifted by the first row ever seen, so constant columns stay exactly zero and data far from
    the origin loses no digits.

    Example:
        >>> c = RunningBlockCovariance([(0, 0), (0, 1)])
        >>> x = torch.arange(6.0).reshape(3, 2).double()
        >>> c.update([x, -x[:, :1]])
        >>> c.covariance(0, 1).flatten().tolist()
        [-4.0, -4.0]

    References:
        Chan, Golub and LeVeque, "Updating formulae and a pairwise algorithm for computing sample
        variances", 1979.
    """

    def __init__(self, pairs: Iterable[tuple[int, int]]) -> None:
        self.pairs = sorted(set(pairs))
        self.count = 0
        self.shift: list[Tensor] = []
        self.means: list[Tensor] = []  # of the shifted rows
        self.m2: dict[tuple[int, int], Tensor] = {}

    def _check_blocks(self, blocks: Sequence[Tensor]) -> None:
        widths = [b.shape[1] if isinstance(b, Tensor) and b.ndim == 2 else None for b in blocks]
        n_blocks = 1 + max(max(pair) for pair in self.pairs) if self.pairs else len(blocks)
        if None in widths or len(blocks) != n_blocks or len({b.shape[0] for b in blocks}) > 1:
            raise InputError(f"RunningBlockCovariance.update expects {n_blocks} float tensors (n, d_i) with the same "
                             f"n, got {[tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__ for b in blocks]}.")
        if self.shift and widths != [s.shape[0] for s in self.shift]:
            raise InputError(f"RunningBlockCovariance.update got block widths {widths}, but earlier batches had "
                             f"{[s.shape[0] for s in self.shift]}.")

    def update(self, blocks: Sequence[Tensor]) -> None:
        """Add rows; ``blocks[i]`` is a float64 ``(batch, d_i)`` tensor, every block with the same batch."""
        self._check_blocks(blocks)
        n_b = blocks[0].shape[0]
        if n_b == 0:
            return
        shifts = self.shift or [b[0].detach().to(torch.float64).clone() for b in blocks]
        devs, means = [], []
        for block, shift in zip(blocks, shifts, strict=True):
            dev = block.detach().to(shift) - shift  # a new tensor (``block`` may be the caller's own)
            mean_b = dev.mean(0)
            # any NaN/inf in a column makes its mean non-finite: a check on d numbers, not n × d
            if not bool(torch.isfinite(mean_b).all()):
                raise InputError("RunningBlockCovariance.update got NaN/inf values (or values so large that their "
                                 "sum overflows); the statistic would be meaningless.")
            devs.append(dev.sub_(mean_b))
            means.append(mean_b)
        if self.count == 0:
            self.shift, self.count, self.means = shifts, n_b, means
            self.m2 = {(i, j): devs[i].T @ devs[j] for i, j in self.pairs}
            return
        n_a, n = self.count, self.count + n_b
        deltas = [mb - ma for mb, ma in zip(means, self.means, strict=True)]
        for i, j in self.pairs:  # in place, so memory stays at one copy of each block
            self.m2[(i, j)].addmm_(devs[i].T, devs[j]).addr_(deltas[i], deltas[j], alpha=n_a * n_b / n)
        for mean, delta in zip(self.means, deltas, strict=True):
            mean.add_(delta, alpha=n_b / n)
        self.count = n

    def merge(self, other: RunningBlockCovariance) -> RunningBlockCovariance:
        """Fold in ``other`` (built over other rows, with the same ``pairs``); returns ``self``."""
        _check_same("RunningBlockCovariance", self.pairs, other.pairs, "pairs")
        if other.count == 0:
            return self
        if self.count == 0:
            self.count, self.shift = other.count, [s.clone() for s in other.shift]
            self.means = [m.clone() for m in other.means]
            self.m2 = {key: value.clone() for key, value in other.m2.items()}
            return self
        _check_same("RunningBlockCovariance", [s.shape[0] for s in self.shift], [s.shape[0] for s in other.shift],
                    "block widths")
        n_a, n_b = self.count, other.count
        n = n_a + n_b
        # ``other``'s means are of rows shifted by its own first row: move them to this shift
        deltas = [(mb + (sb - sa)) - ma for mb, sb, sa, ma in zip(other.means, other.shift, self.shift, self.means,
                                                                   strict=True)]
        for i, j in self.pairs:
            self.m2[(i, j)].add_(other.m2[(i, j)]).addr_(deltas[i], deltas[j], alpha=n_a * n_b / n)
        for mean, delta in zip(self.means, deltas, strict=True):
            mean.add_(delta, alpha=n_b / n)
        self.count = n
        return self

    def _fitted(self) -> None:
        if self.count == 0:
            raise NotFittedError(f"{type(self).__name__} has seen no data; call update() first.")

    def mean(self, i: int) -> Float[Tensor, " d_left"]:
        """Mean of block ``i``."""
        self._fitted()
        return self.shift[i] + self.means[i]

    def comoment(self, i: int, j: int) -> Float[Tensor, "d_left d_right"]:
        """``Σ (x_i − mean_i)ᵀ (x_j − mean_j)`` (a kept pair, or the transpose of one)."""
        self._fitted()
        if (i, j) in self.m2:
            return self.m2[(i, j)]
        if (j, i) in self.m2:
            return self.m2[(j, i)].T
        raise InputError(f"the co-moment of blocks ({i}, {j}) is not kept; this state keeps pairs {self.pairs}.")

    def covariance(self, i: int, j: int, ddof: int = 1) -> Float[Tensor, "d_left d_right"]:
        """Covariance of blocks ``i`` and ``j``; ``ddof=1`` is the unbiased estimate (as ``numpy.cov``)."""
        m2 = self.comoment(i, j)
        if self.count - ddof <= 0:
            raise InputError(f"covariance with ddof={ddof} needs more than {ddof} rows, got {self.count}.")
        return m2 / (self.count - ddof)


class RunningCovariance:
    """Mean and covariance of rows, merged batch by batch in O(d²) memory.

    One block of `RunningBlockCovariance`: the same shifted Chan update.

    Example:
        >>> c = RunningCovariance()
        >>> for chunk in torch.arange(8.0).reshape(4, 2).split(1): c.update(chunk)
        >>> c.covariance()
        tensor([[6.6667, 6.6667],
                [6.6667, 6.6667]], dtype=torch.float64)
    """

    def __init__(self) -> None:
        self._moments = RunningBlockCovariance([(0, 0)])

    @property
    def count(self) -> int:
        return self._moments.count

    def update(self, x: Tensor) -> None:
        """Add the rows of ``x`` (batch, n_units)."""
        d = self._moments.shift[0].shape[0] if self._moments.shift else None
        self._moments.update([_as_rows(x, d, "RunningCovariance")])

    def merge(self, other: RunningCovariance) -> RunningCovariance:
        """Fold in ``other`` (built over other rows); returns ``self``."""
        self._moments.merge(other._moments)
        return self

    def _check(self) -> None:
        if self.count == 0:
            raise NotFittedError("RunningCovariance has seen no data; call update() first.")

    @property
    def mean(self) -> Float[Tensor, " n_units"]:
        self._check()
        return self._moments.mean(0)

    def covariance(self, ddof: int = 1) -> Float[Tensor, "n_units n_units"]:
        """Covariance matrix; ``ddof=1`` is the unbiased estimate (as ``numpy.cov``)."""
        self._check()
        return self._moments.covariance(0, 0, ddof)

    def correlation(self) -> Float[Tensor, "n_units n_units"]:
        """Pearson correlation matrix; constant units get NaN rows, as ``numpy.corrcoef``."""
        cov = self.covariance()
        std = cov.diagonal().sqrt()
        return cov / torch.outer(std, std)


class TopK:
    """The ``k`` largest (or smallest) values per unit, the dataset indices they came from, and a payload.

    Ties keep the earlier index, whatever the order of the updates and merges, so results do not
    depend on chunking or sharding. An optional integer ``positions`` tensor shaped like the
    values (e.g. where in a map each value was found) travels with each kept value.

    Example:
        >>> t = TopK(2)
        >>> t.update(torch.tensor([[1.0], [5.0]]), offset=0); t.update(torch.tensor([[3.0]]), offset=2)
        >>> t.values.squeeze(1).tolist(), t.indices.squeeze(1).tolist()
        ([5.0, 3.0], [1, 2])
        >>> other = TopK(2); other.update(torch.tensor([[5.0]]), offset=7)
        >>> t.merge(other).indices.squeeze(1).tolist()
        [1, 7]
    """

    def __init__(self, k: int, *, largest: bool = True) -> None:
        self.k = k
        self.largest = largest
        self._values: Tensor | None = None
        self._indices: Tensor | None = None
        self._positions: Tensor | None = None

    def update(self, values: Tensor, offset: int, *, positions: Tensor | None = None) -> None:
        """Merge ``values`` (batch, n_units), whose row ``i`` is dataset example ``offset + i``.

        Args:
            values: the new rows.
            offset: the dataset index of the first row.
            positions: an integer tensor shaped like ``values`` to keep alongside them (give it
                on every update or on none).
        """
        check_int("k", self.k, at_least=1)
        d = None if self._values is None else self._values.shape[1]
        if not isinstance(values, Tensor) or values.ndim != 2 or (d is not None and values.shape[1] != d):
            shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise InputError(f"TopK.update expects shape (n, {d if d is not None else 'd'}), got {shape}.")
        if not bool(torch.isfinite(values).all()):
            raise InputError("TopK.update got NaN/inf values.")
        if positions is not None and (not isinstance(positions, Tensor) or positions.shape != values.shape
                                      or positions.is_floating_point()):
            raise InputError(f"TopK.update positions must be an integer tensor shaped like values "
                             f"{tuple(values.shape)}, got {positions!r}.")
        if self._values is not None and (positions is None) != (self._positions is None):
            raise InputError("TopK.update got positions on some updates but not others; give them always or never.")
        values = values.detach()
        index = torch.arange(offset, offset + values.shape[0], device=values.device).unsqueeze(1).expand_as(values)
        self._keep(values, index, None if positions is None else positions.detach())

    def merge(self, other: TopK) -> TopK:
        """Fold in ``other`` (built over other dataset indices, same ``k`` and ``largest``); returns ``self``."""
        _check_same("TopK", (self.k, self.largest), (other.k, other.largest), "(k, largest)")
        if other._values is None or other._indices is None:
            return self
        if self._values is not None and (other._positions is None) != (self._positions is None):
            raise InputError("TopK.merge: one state keeps positions and the other does not.")
        self._keep(other._values, other._indices, other._positions)
        return self

    def _keep(self, values: Tensor, index: Tensor, positions: Tensor | None) -> None:
        # Keep the first k by (value, index). Kept rows are in that order already and new rows are
        # in index order, so when every kept index precedes every new one, equal values already
        # stand in index order and one stable sort by value suffices; otherwise sort by index first.
        in_order = (self._indices is None or self._indices.numel() == 0 or index.numel() == 0
                    or bool(self._indices.max() < index.min()))
        if self._values is not None and self._indices is not None:
            values = torch.cat([self._values, values.to(self._values.dtype)])
            index = torch.cat([self._indices, index.to(self._indices.device)])
            if positions is not None and self._positions is not None:
                positions = torch.cat([self._positions, positions.to(self._positions.device)])
        by_index = None if in_order else torch.sort(index, dim=0, stable=True).indices
        if by_index is not None:
            values, index = values.gather(0, by_index), index.gather(0, by_index)
        order = torch.sort(values, dim=0, descending=self.largest, stable=True).indices[: self.k]
        self._values, self._indices = values.gather(0, order), index.gather(0, order)
        if positions is not None:
            self._positions = positions.gather(0, order if by_index is None else by_index.gather(0, order))

    @property
    def values(self) -> Float[Tensor, "k n_units"]:
        if self._values is None:
            raise NotFittedError("TopK has seen no data; call update() first.")
        return self._values

    @property
    def indices(self) -> Int[Tensor, "k n_units"]:
        if self._indices is None:
            raise NotFittedError("TopK has seen no data; call update() first.")
        return self._indices

    @property
    def positions(self) -> Int[Tensor, "k n_units"] | None:
        """The payload kept with each value, or ``None`` if updates gave none."""
        if self._indices is None:
            raise NotFittedError("TopK has seen no data; call update() first.")
        return self._positions
