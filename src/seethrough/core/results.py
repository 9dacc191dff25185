"""The result contract: one small base every result dataclass of the package derives from.

Core, below every taxonomy area. A result is a frozen dataclass that subclasses `Result` and
implements `to_frame` (a pandas DataFrame) and `plot` (a matplotlib Figure made with `new_figure`,
never through pyplot); it inherits `to_dict` (strict JSON through `jsonable`) and an escaped
`_repr_html_`. A result that makes claims adds ``to_findings(...) -> list[Finding]``.
pandas and matplotlib are imported inside the methods, so importing core stays light.
tests/test_result_contract.py runs one common check over every public result class.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import InputTypeError
from .sites import Site

if TYPE_CHECKING:  # imported lazily at run time (core imports only torch and numpy)
    import pandas
    from matplotlib.figure import Figure

__all__ = ["Result", "jsonable", "new_figure"]


def jsonable(value: Any) -> Any:
    """``value`` as strict JSON data: what ``json.dumps(..., allow_nan=False)`` accepts and round-trips.

    Tensors and arrays become nested lists, numpy scalars Python numbers, NaN and ±inf ``None``,
    tuples and sets lists (sets sorted), mapping keys strings, a `Site` a dict (``path``, ``point``
    and any set selector), a nested `Result` its ``to_dict()`` and any other dataclass a dict of
    its fields.

    Raises:
        InputTypeError: a value of any other type (a function, a module...): convert it first.

    Example:
        >>> jsonable({"site": Site("fc1"), "values": torch.tensor([1.0, float("nan")]), 3: np.int64(2)})
        {'site': {'path': 'fc1', 'point': 'output'}, 'values': [1.0, None], '3': 2}
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, torch.Tensor):
        return jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, Site):
        out: dict[str, Any] = {"path": value.path, "point": value.point}
        for name in ("units", "positions", "call", "unit_dim"):
            if getattr(value, name) is not None:
                out[name] = jsonable(getattr(value, name))
        return out
    if isinstance(value, Result):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [jsonable(v) for v in sorted(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    raise InputTypeError(f"cannot turn a {type(value).__name__} into JSON data; convert it to numbers, strings, "
                         "lists or dicts first (or give its result class its own to_dict).")


def new_figure(width: int | float, height: int | float) -> Figure:
    """A fresh matplotlib `Figure` of ``width`` × ``height`` inches, outside pyplot's global state.

    Uses the constrained layout. The figure is not registered with ``pyplot``, so making one
    opens no window and leaks nothing; display it in a notebook or ``fig.savefig(path)``.

    Example:
        >>> import matplotlib.pyplot as plt
        >>> fig = new_figure(3, 2)
        >>> (fig.get_size_inches().tolist(), plt.get_fignums())
        ([3.0, 2.0], [])
    """
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


class Result:
    """Base of every result dataclass: a table, a figure, JSON and an escaped HTML view.

    Subclass it as ``@dataclass(frozen=True) class MyResult(Result)`` and implement `to_frame`
    and `plot`; `to_dict` and `_repr_html_` work from those and the dataclass fields.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Scores(Result):
        ...     site: Site
        ...     values: torch.Tensor
        ...     def to_frame(self) -> "pandas.DataFrame":
        ...         import pandas as pd
        ...         return pd.DataFrame({"unit": range(len(self.values)), "score": self.values.tolist()})
        ...     def plot(self) -> "Figure":
        ...         fig = new_figure(3, 2)
        ...         fig.add_subplot().bar(range(len(self.values)), self.values.tolist())
        ...         return fig
        >>> r = Scores(Site("<b>fc1</b>"), torch.tensor([0.5, float("inf")]))
        >>> r.to_dict()
        {'site': {'path': '<b>fc1</b>', 'point': 'output'}, 'values': [0.5, None]}
        >>> "<b>" in r._repr_html_()
        False
    """

    def to_frame(self) -> pandas.DataFrame:
        """The result as a pandas DataFrame (one row per unit, site, case...)."""
        raise NotImplementedError(f"{type(self).__name__} must implement to_frame() (the Result contract).")

    def plot(self) -> Figure:
        """The result as a matplotlib Figure (made with `new_figure`, never through pyplot)."""
        raise NotImplementedError(f"{type(self).__name__} must implement plot() (the Result contract).")

    def to_dict(self) -> dict[str, Any]:
        """Every dataclass field as strict JSON data (see `jsonable`)."""
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]  # subclasses are dataclasses

    def _repr_html_(self) -> str:
        """The notebook view: the escaped class name over `to_frame` as an escaped HTML table."""
        table = self.to_frame().to_html(escape=True, index=False)
        return f"<div><strong>{html.escape(type(self).__name__)}</strong>{table}</div>"
