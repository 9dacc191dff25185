"""Findings: a claim about a model made by an observational tool, with its evidence.

A `Finding` is a hypothesis, not a conclusion. It says what was found (units at a site, a
direction, a trojan trigger) and why (score, evidence), in a form `validate` can test by intervention,
and which data it was found on (a `Fingerprint`), so that a test on the same data is flagged in-sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from ..core.errors import InputError
from ..core.sites import Site
from .fingerprint import Fingerprint
from .trigger import Trigger

__all__ = ["Finding", "FindingKind"]

FindingKind = Literal["units", "direction", "trojan", "circuit", "route"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Site):
        where = {"path": value.path, "point": value.point}
        return where if value.positions is None else {**where, "positions": list(value.positions)}
    if isinstance(value, (Trigger, Fingerprint)):
        return value.to_dict()
    return value


@dataclass(frozen=True, eq=False)
class Finding:
    """A claim about a model, testable by intervention.

    Kinds and what `validate` does with them:
      - ``"units"``: ``site`` and ``units``; claim "these units matter for ``target``": ablate them.
      - ``"direction"``: ``site`` and ``direction`` (unit-axis vector); project it out.
      - ``"trojan"``: a `Trigger` (its ``target`` is the finding's ``target``); claim "stamping
        this flips inputs to ``target``": stamp it.
      - ``"circuit"``: ``evidence`` holds ``writers``, ``readers`` (a residual stream, as in
        `seethrough.subnetworks.find_circuit`), ``edges`` (``[writer, reader]`` pairs), ``test``
        (``"sufficient"``: these edges alone keep the clean-vs-corrupted behaviour; ``"necessary"``:
        corrupting them removes it) and optionally ``ranking`` (every edge, best first), ``ablation``
        and ``seed``; `validate` corrupts edges against the reference inputs
        (`seethrough.subnetworks.Circuit.to_findings` makes them).
      - ``"route"``: ``site`` with ``positions`` (e.g. ``Site("embed", positions=[3])``); claim "the
        output reads these input positions": zero the site at them (the effect is the metric's absolute
        change), against random other positions
        (`seethrough.representations.AttentionMaps.to_findings` makes them).

    ``data_fingerprint`` is the `Fingerprint` of the data the claim was discovered on (every
    ``to_findings`` that knows its data sets it; set it by hand with
    ``Finding(..., data_fingerprint=fingerprint(inputs))``). `validate` on data that shares
    examples with it marks its result ``in_sample`` and warns; ``None`` means unknown.

    Example:
        >>> f = Finding("units", "units 3 and 7 carry class 2", site=Site("fc2"), units=(3, 7), target=2)
        >>> f.to_dict()["units"]
        [3, 7]
    """

    kind: FindingKind
    claim: str
    site: Site | None = None
    units: Sequence[int] | None = None
    direction: Tensor | None = None
    target: int | None = None
    trigger: Trigger | None = None
    score: float | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    data_fingerprint: Fingerprint | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("units", "direction", "trojan", "circuit", "route"):
            raise InputError(f"Finding.kind must be 'units', 'direction', 'trojan', 'circuit' or 'route', got "
                             f"{self.kind!r}.")
        if self.kind == "route" and (self.site is None or self.site.positions is None):
            raise InputError("a 'route' finding needs a site with positions (the claimed source positions), e.g. "
                             "Site('embed', positions=[3]).")
        if self.kind == "circuit":
            missing = [key for key in ("writers", "readers", "edges", "test") if key not in self.evidence]
            if missing or not self.evidence["edges"] or self.evidence["test"] not in ("sufficient", "necessary"):
                raise InputError(f"a 'circuit' finding needs evidence with writers, readers, non-empty edges and test "
                                 f"'sufficient' or 'necessary' (missing: {missing}); Circuit.to_findings makes them.")
        if self.units is not None:
            object.__setattr__(self, "units", tuple(int(u) for u in self.units))
            if len(set(self.units)) != len(self.units):
                raise InputError(f"Finding.units has repeated units {list(self.units)}; list each unit once.")
        if self.kind in ("units", "direction") and self.site is None:
            raise InputError(f"a {self.kind!r} finding needs a site.")
        if self.kind == "units" and not self.units:
            raise InputError("a 'units' finding needs a non-empty list of units.")
        if self.kind == "direction":
            if self.direction is None or self.direction.ndim != 1:
                raise InputError("a 'direction' finding needs a 1-d direction tensor along the unit axis.")
            if not bool(torch.isfinite(self.direction).all()) or float(self.direction.norm()) == 0.0:
                raise InputError("the direction must be finite and non-zero.")
        if self.kind == "trojan":
            if not isinstance(self.trigger, Trigger):
                raise InputError(f"a 'trojan' finding needs trigger=Trigger(mask, pattern, target, family); got "
                                 f"{type(self.trigger).__name__}.")
            if self.target is None:
                object.__setattr__(self, "target", self.trigger.target)
            elif self.target != self.trigger.target:
                raise InputError(f"the finding's target {self.target} differs from its trigger's target "
                                 f"{self.trigger.target}; leave target out (the trigger's is used).")
        if self.data_fingerprint is not None and not isinstance(self.data_fingerprint, Fingerprint):
            raise InputError(f"data_fingerprint must be a Fingerprint (seethrough.evidence.fingerprint(inputs)) or "
                             f"None, got {type(self.data_fingerprint).__name__}.")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tensors become nested lists; the fingerprint its digest and size)."""
        return {k: _jsonable(getattr(self, k)) for k in ("kind", "claim", "site", "units", "direction", "target",
                                                          "trigger", "score", "evidence", "data_fingerprint")}
