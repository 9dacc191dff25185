"""Streaming statistics over batches: running mean and covariance, and top-k with indices.

These accumulate over `seethrough.core.batching.stream` so dataset-scale passes keep memory
independent of the number of examples. Sums are kept in float64; merging follows Chan et al.'s
parallel update, so the result does not depend on how the data was chunked.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .errors import InputError, NotFittedError

__all__ = ["RunningMean", "RunningCovariance", "TopK"]


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


class RunningMean:
    """Mean of the rows of every batch seen so far.

    Example:
        >>> m = RunningMean(); m.update(torch.tensor([[1.0], [3.0]])); m.update(torch.tensor([[5.0]]))
        >>> m.mean.item(), m.count
        (3.0, 3)
    """

    def __init__(self) -> None:
        self.count = 0
        self._sum: Tensor | None = None

    def update(self, x: Tensor) -> None:
        """Add the rows of ``x`` (batch, n_units)."""
        x = _as_rows(x, None if self._sum is None else self._sum.shape[0], "RunningMean")
        self._sum = x.sum(0) if self._sum is None else self._sum + x.sum(0)
        self.count += x.shape[0]

    @property
    def mean(self) -> Float[Tensor, " n_units"]:
        if self._sum is None or self.count == 0:
            raise NotFittedError("RunningMean has seen no data; call update() first.")
        return self._sum / self.count


class RunningCovariance:
    """Mean and covariance of rows, merged batch by batch in O(d²) memory.

    Example:
        >>> c = RunningCovariance()
        >>> for chunk in torch.arange(8.0).reshape(4, 2).split(1): c.update(chunk)
        >>> c.covariance()
        tensor([[6.6667, 6.6667],
                [6.6667, 6.6667]], dtype=torch.float64)
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean: Tensor | None = None
        self._m2: Tensor | None = None  # sum of outer products of deviations

    def update(self, x: Tensor) -> None:
        """Add the rows of ``x`` (batch, n_units)."""
        x = _as_rows(x, None if self._mean is None else self._mean.shape[0], "RunningCovariance")
        n_b = x.shape[0]
        if n_b == 0:
            return
        mean_b = x.mean(0)
        dev = x - mean_b
        m2_b = dev.T @ dev
        if self._mean is None or self._m2 is None:
            self.count, self._mean, self._m2 = n_b, mean_b, m2_b
            return
        n_a, n = self.count, self.count + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + torch.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    def _check(self) -> tuple[Tensor, Tensor]:
        if self._mean is None or self._m2 is None:
            raise NotFittedError("RunningCovariance has seen no data; call update() first.")
        return self._mean, self._m2

    @property
    def mean(self) -> Float[Tensor, " n_units"]:
        return self._check()[0]

    def covariance(self, ddof: int = 1) -> Float[Tensor, "n_units n_units"]:
        """Covariance matrix; ``ddof=1`` is the unbiased estimate (as ``numpy.cov``)."""
        _, m2 = self._check()
        if self.count - ddof <= 0:
            raise InputError(f"covariance with ddof={ddof} needs more than {ddof} rows, got {self.count}.")
        return m2 / (self.count - ddof)

    def correlation(self) -> Float[Tensor, "n_units n_units"]:
        """Pearson correlation matrix; constant units get NaN rows, as ``numpy.corrcoef``."""
        cov = self.covariance()
        std = cov.diagonal().sqrt()
        return cov / torch.outer(std, std)


class TopK:
    """The ``k`` largest (or smallest) values per unit and the dataset indices they came from.

    Ties keep the earlier index, so results do not depend on chunking.

    Example:
        >>> t = TopK(2)
        >>> t.update(torch.tensor([[1.0], [5.0]]), offset=0); t.update(torch.tensor([[3.0]]), offset=2)
        >>> t.values.squeeze(1).tolist(), t.indices.squeeze(1).tolist()
        ([5.0, 3.0], [1, 2])
    """

    def __init__(self, k: int, *, largest: bool = True) -> None:
        self.k = k
        self.largest = largest
        self._values: Tensor | None = None
        self._indices: Tensor | None = None

    def update(self, values: Tensor, offset: int) -> None:
        """Merge ``values`` (batch, n_units), whose row ``i`` is dataset example ``offset + i``."""
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise InputError(f"TopK needs a positive int k, got {self.k!r}.")
        d = None if self._values is None else self._values.shape[1]
        if not isinstance(values, Tensor) or values.ndim != 2 or (d is not None and values.shape[1] != d):
            shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise InputError(f"TopK.update expects shape (n, {d if d is not None else 'd'}), got {shape}.")
        if not bool(torch.isfinite(values).all()):
            raise InputError("TopK.update got NaN/inf values.")
        values = values.detach()
        index = torch.arange(offset, offset + values.shape[0], device=values.device).unsqueeze(1).expand_as(values)
        if self._values is not None and self._indices is not None:
            values = torch.cat([self._values, values.to(self._values.dtype)])
            index = torch.cat([self._indices, index])
        order = torch.sort(values, dim=0, descending=self.largest, stable=True).indices[: self.k]
        self._values = values.gather(0, order)
        self._indices = index.gather(0, order)

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
