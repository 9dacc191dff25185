"""Sites: named places inside a model where values are read or replaced.

A `Site` names a module by its own ``named_modules()`` path, says whether its input or its
output is meant, and optionally selects units, sequence positions and which call of the module
(for modules run more than once per forward). Resolution against a model happens before any
forward pass, so a typo fails fast with close matches.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .errors import InputTypeError, SiteError, SiteNotFoundError

__all__ = ["Site", "select_sites", "resolve_site", "as_sites"]

Point = Literal["input", "output"]


def _as_index_tuple(name: str, values: Sequence[int] | None) -> tuple[int, ...] | None:
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise InputTypeError(f"Site.{name} must be a sequence of ints, got {type(values).__name__}.")
    out: list[int] = []
    for v in values:
        if isinstance(v, Tensor) and v.ndim == 0 and not v.is_floating_point():
            v = int(v.item())
        if isinstance(v, bool) or not isinstance(v, int):
            raise InputTypeError(f"Site.{name} must hold ints, got {v!r} ({type(v).__name__}).")
        out.append(int(v))
    if not out:
        raise SiteError(f"Site.{name} is empty; pass None to select everything.")
    if len(set(out)) != len(out):
        raise SiteError(f"Site.{name} has repeated indices {out}; each index may appear once.")
    return tuple(out)


@dataclass(frozen=True)
class Site:
    """A place in a model: a module's input or output, optionally a slice of it.

    Args:
        path: the module's name in ``model.named_modules()`` (``""`` is the model itself).
        point: ``"output"`` (default) or ``"input"`` (the first positional argument, or the first
            tensor keyword argument if the module got no positional one).
        units: indices along the unit dimension; ``None`` selects all units.
        positions: indices along dim 1 (the sequence dimension of ``(batch, seq, d_model)``
            values); negative indices count from the end. ``None`` selects all positions.
        call: which call of the module to use (0-based) when it runs several times in one
            forward; ``None`` means "it must run exactly once" for `capture` and `patch`.
        element: which element of a structured value: for an output, an index into a tuple/list
            output or a key of a dict / HuggingFace ``ModelOutput`` (``1`` is the attention
            probabilities of an HF attention module run with ``output_attentions=True``); for an
            input, the index of a positional argument or the name of a keyword argument. ``None``
            (default) is the output itself, its first element or its first value, and the first
            positional argument (else the first tensor keyword argument) of an input.
        unit_dim: the unit dimension. ``None`` uses the convention: dim 1 for ``(batch, d)`` and
            ``(batch, C, H, W)`` values (features, channels), the last dim for
            ``(batch, seq, d_model)`` values.

    Example:
        >>> Site("blocks.0.mlp")
        Site('blocks.0.mlp')
        >>> Site("conv1", units=[3, 5])
        Site('conv1', units=(3, 5))
        >>> Site("encoder.layer.0.attention.self", element=1)
        Site('encoder.layer.0.attention.self', element=1)
    """

    path: str
    point: Point = "output"
    units: Sequence[int] | None = None  # stored as a tuple
    positions: Sequence[int] | None = None  # stored as a tuple
    call: int | None = None
    unit_dim: int | None = None
    element: int | str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str):
            raise InputTypeError(f"Site.path must be a module path string, got {type(self.path).__name__}.")
        if self.point not in ("input", "output"):
            raise SiteError(f"Site.point must be 'input' or 'output', got {self.point!r}.")
        object.__setattr__(self, "units", _as_index_tuple("units", self.units))
        object.__setattr__(self, "positions", _as_index_tuple("positions", self.positions))
        if self.call is not None and (isinstance(self.call, bool) or not isinstance(self.call, int) or self.call < 0):
            raise SiteError(f"Site.call must be a non-negative int or None, got {self.call!r}.")
        if self.unit_dim is not None and (isinstance(self.unit_dim, bool) or not isinstance(self.unit_dim, int)):
            raise SiteError(f"Site.unit_dim must be an int or None, got {self.unit_dim!r}.")
        if self.element is not None and (isinstance(self.element, bool) or not isinstance(self.element, (int, str))):
            raise SiteError(f"Site.element must be an int index, a str key or None, got {self.element!r}.")
        # Sites key many dicts on the hot path of every capture; hash the fields once.
        object.__setattr__(self, "_hash", hash((self.path, self.point, self.units, self.positions, self.call,
                                                self.unit_dim, self.element)))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined]  # set in __post_init__

    @property
    def selects(self) -> bool:
        """Whether the site selects a slice (units or positions) rather than the whole value."""
        return self.units is not None or self.positions is not None

    def __repr__(self) -> str:
        parts = [repr(self.path)]
        for name in ("point", "units", "positions", "call", "unit_dim", "element"):
            value = getattr(self, name)
            default = "output" if name == "point" else None
            if value != default:
                parts.append(f"{name}={value!r}")
        return f"Site({', '.join(parts)})"

    # -- value selection (used by core.hooks) ---------------------------------------------

    def unit_axis(self, value: Tensor) -> int:
        """The (non-negative) unit dimension of ``value`` under this site's ``unit_dim`` rule.

        Example:
            >>> Site("conv").unit_axis(torch.zeros(2, 8, 5, 5)), Site("blocks.0").unit_axis(torch.zeros(2, 7, 16))
            (1, 2)
        """
        return self._dims(value)[0]

    def _dims(self, value: Tensor) -> tuple[int, int]:
        if value.ndim < 2:
            raise SiteError(
                f"{self!r} selects units/positions, but its value has shape {tuple(value.shape)}; "
                "selection needs at least (batch, units)."
            )
        unit_dim = self.unit_dim
        if unit_dim is None:
            unit_dim = value.ndim - 1 if value.ndim == 3 else 1
        if not -value.ndim <= unit_dim < value.ndim:
            raise SiteError(f"{self!r}: unit_dim={unit_dim} is out of range for shape {tuple(value.shape)}.")
        return unit_dim % value.ndim, 1

    @staticmethod
    def _index(which: str, idx: tuple[int, ...], size: int, site: Site, dim: int) -> Tensor:
        bad = [i for i in idx if not -size <= i < size]
        if bad:
            raise SiteError(f"{site!r}: {which} {bad} out of range for size {size} along dim {dim}.")
        return torch.tensor([i % size for i in idx], dtype=torch.long)

    def select(self, value: Tensor) -> Tensor:
        """Return the slice of ``value`` that this site selects (the value itself if none)."""
        if not self.selects:
            return value
        unit_dim, pos_dim = self._dims(value)
        out = value
        if self.positions is not None:
            index = self._index("positions", self.positions, value.shape[pos_dim], self, pos_dim)
            out = out.index_select(pos_dim, index.to(value.device))
        if self.units is not None:
            index = self._index("units", self.units, value.shape[unit_dim], self, unit_dim)
            out = out.index_select(unit_dim, index.to(value.device))
        return out

    def replace(self, value: Tensor, new: Tensor) -> Tensor:
        """Return ``value`` with the selected slice replaced by ``new`` (out of place, differentiable)."""
        if not self.selects:
            return new
        unit_dim, pos_dim = self._dims(value)
        if self.positions is None:
            assert self.units is not None
            index = self._index("units", self.units, value.shape[unit_dim], self, unit_dim).to(value.device)
            return value.index_copy(unit_dim, index, new)
        pos_index = self._index("positions", self.positions, value.shape[pos_dim], self, pos_dim).to(value.device)
        inner = value.index_select(pos_dim, pos_index)
        if self.units is not None:
            index = self._index("units", self.units, value.shape[unit_dim], self, unit_dim).to(value.device)
            new = inner.index_copy(unit_dim, index, new)
        return value.index_copy(pos_dim, pos_index, new)


def as_sites(sites: Site | str | Iterable[Site | str]) -> list[Site | str]:
    """Normalise a site argument to a list, keeping each element as given (Site or path string)."""
    if isinstance(sites, (Site, str)):
        return [sites]
    if isinstance(sites, dict):
        return list(sites.keys())
    if not isinstance(sites, Iterable):
        raise InputTypeError(f"sites must be a Site, a path string or a list of them, got {type(sites).__name__}.")
    out = list(sites)
    for s in out:
        if not isinstance(s, (Site, str)):
            raise InputTypeError(f"each site must be a Site or a module path string, got {type(s).__name__}: {s!r}.")
    if not out:
        raise SiteError("no sites given; pass at least one Site (see seethrough.select_sites for globs).")
    return out


def _suggest(path: str, names: list[str]) -> str:
    names = [n for n in names if n]
    close = difflib.get_close_matches(path, names, n=5, cutoff=0.5)
    if not close:
        # fall back to names sharing the last component, then to the first few names
        tail = path.rsplit(".", 1)[-1]
        close = [n for n in names if n.rsplit(".", 1)[-1] == tail][:5] or names[:5]
    return ", ".join(repr(c) for c in close)


def resolve_site(model: nn.Module, site: Site | str) -> tuple[Site, nn.Module]:
    """Return the `Site` (built from a path string if needed) and the module it names.

    Raises:
        SiteNotFoundError: the path names no module; the message lists close matches.
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    s = Site(site) if isinstance(site, str) else site
    if not isinstance(s, Site):
        raise InputTypeError(f"a site must be a Site or a module path string, got {type(site).__name__}.")
    if "*" in s.path or "?" in s.path or "[" in s.path:
        raise SiteError(f"{s.path!r} is a glob; expand it with seethrough.select_sites(model, {s.path!r}).")
    # Follow the path through _modules (what named_modules() names) rather than get_submodule,
    # which is several times slower per component and resolution runs on every capture call.
    module: nn.Module | None = model
    for part in s.path.split(".") if s.path else ():
        module = module._modules.get(part) if module is not None else None
    if module is None:
        names = [n for n, _ in model.named_modules()]
        raise SiteNotFoundError(
            f"no module {s.path!r} in {type(model).__name__}; close matches: {_suggest(s.path, names)}. "
            "Site paths are the names from model.named_modules()."
        ) from None
    return s, module


def select_sites(model: nn.Module, pattern: str, *, point: Point = "output") -> list[Site]:
    """Sites for every module whose path matches a glob (``"blocks.*.mlp"``), in model order.

    ``*`` matches within one path component, ``**`` across components.

    Raises:
        SiteNotFoundError: nothing matches.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> select_sites(model, "*")
        [Site('0'), Site('1'), Site('2')]
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(pattern, str) or not pattern:
        raise SiteError(f"pattern must be a non-empty glob string, got {pattern!r}.")
    names = [n for n, _ in model.named_modules() if n]
    matched = [n for n in names if _glob_match(n, pattern)]
    if not matched:
        raise SiteNotFoundError(
            f"glob {pattern!r} matches no module of {type(model).__name__}; "
            f"close matches: {_suggest(pattern.replace('*', ''), names)}."
        )
    return [Site(n, point=point) for n in matched]


def _glob_match(name: str, pattern: str) -> bool:
    parts, pats = name.split("."), pattern.split(".")
    if "**" not in pats:
        return len(parts) == len(pats) and all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pats, strict=True))
    return fnmatch.fnmatchcase(name, pattern.replace("**", "*"))
