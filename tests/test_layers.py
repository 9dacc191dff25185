"""Imports flow one way (STYLE §2, issue #9): an AST scan of every module of src/seethrough.

(a) ``core`` imports only torch, numpy, safetensors, jaxtyping and the standard library at module
    level (pandas or matplotlib inside a function, or under ``TYPE_CHECKING``, is fine);
(b) a taxonomy area (``neurons``, ``representations``, ``weights``, ``subnetworks``) imports only
    ``core``, ``evidence`` and itself; ``evidence`` only ``core``;
(c) on top: ``audit`` < ``bench`` < ``report`` < ``cli``; nothing imports ``cli`` but the entry scripts;
(d) no module imports a ``_private`` name (or private module) of another package: private names of a
    package are for its own modules and its subpackages' (``bench.games`` may use ``bench._x``, not
    ``bench.zoo._x``);
(e) inside a package, a ``_private`` helper shared by two modules lives in a private module
    (``_arrays``, ``_gradients``), not in a public module another module reaches into.
Each rule has a planted-bug test: a synthetic module the checker must reject.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "seethrough"  # read as text: nothing is imported
AREAS = ("neurons", "representations", "weights", "subnetworks")
CORE_THIRD_PARTY = {"torch", "numpy", "safetensors", "jaxtyping"}
_BELOW_TOP = {"core", "evidence", *AREAS}
# which layers (see `layer`) each layer may import; a module's own layer is always allowed
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "edge": {"core"},  # seethrough.hf: a model adapter at the edge
    "evidence": {"core", "evidence"},
    **{area: {"core", "evidence", area} for area in AREAS},
    "audit": _BELOW_TOP | {"audit"},
    "bench": _BELOW_TOP | {"audit", "bench"},
    "report": _BELOW_TOP | {"audit", "bench", "report"},
    "cli": _BELOW_TOP | {"audit", "bench", "report", "cli", "edge", "root"},
    "root": _BELOW_TOP | {"audit", "bench", "report", "edge", "root"},  # seethrough/__init__.py
    "entry": _BELOW_TOP | {"audit", "bench", "report", "cli", "edge", "root", "entry"},  # __main__, demo
}

Sources = dict[str, tuple[str, bool]]  # module name -> (source, is_package)


def layer(module: str) -> str:
    """The layer of a ``seethrough`` module: its top-level subpackage, or root / entry / edge."""
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    head = parts[1]
    return {"__main__": "entry", "demo": "entry", "hf": "edge"}.get(head, head)


def package_of(module: str, sources: Sources) -> str:
    return module if sources.get(module, ("", False))[1] else module.rpartition(".")[0]


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # absolute module name
    names: tuple[str, ...]  # names taken from the target (empty for ``import target``)
    line: int
    lazy: bool  # inside a function body
    type_only: bool  # under ``if TYPE_CHECKING:``

    def where(self) -> str:
        what = f"from {self.target} import {', '.join(self.names)}" if self.names else f"import {self.target}"
        return f"{self.importer}:{self.line}: {what}"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, source: str, is_package: bool, known: set[str]) -> list[Import]:
    """Every import statement of ``module``, relative ones resolved, ``from pkg import submodule`` split."""
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True, type_only)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), lazy, True)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), lazy, type_only)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(module, alias.name, (), child.lineno, lazy, type_only))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                plain = []
                for alias in child.names:
                    if f"{target}.{alias.name}" in known:  # ``from . import evidence``: a module import
                        found.append(Import(module, f"{target}.{alias.name}", (), child.lineno, lazy, type_only))
                    else:
                        plain.append(alias.name)
                if plain:
                    found.append(Import(module, target, tuple(plain), child.lineno, lazy, type_only))
            else:
                visit(child, lazy, type_only)

    visit(ast.parse(source), False, False)
    return found


def read_sources() -> Sources:
    sources: Sources = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        sources[".".join(parts)] = (path.read_text(encoding="utf-8"), is_package)
    return sources


def all_imports(sources: Sources) -> list[Import]:
    known = set(sources) | set(SOURCES)
    return [imp for name, (source, is_package) in sources.items()
            for imp in imports_of(name, source, is_package, known)]


# -- the rules: each returns its violations, one line each --------------------------------------------------


def core_violations(sources: Sources) -> list[str]:
    """(a) core's module-level imports: torch, numpy, safetensors, jaxtyping, the standard library, core."""
    bad = []
    for imp in all_imports(sources):
        if layer(imp.importer) != "core" or imp.lazy or imp.type_only:
            continue
        top = imp.target.split(".")[0]
        if top != "seethrough" and top not in CORE_THIRD_PARTY and top not in sys.stdlib_module_names:
            bad.append(f"{imp.where()} (core imports only torch/numpy/safetensors/jaxtyping at import time)")
    return bad


def layer_violations(sources: Sources) -> list[str]:
    """(b), (c): every import of a seethrough module goes to the same or a lower layer; none to cli."""
    bad = []
    for imp in all_imports(sources):
        if not imp.target.startswith("seethrough"):
            continue
        mine, theirs = layer(imp.importer), layer(imp.target)
        if mine not in ALLOWED:
            bad.append(f"{imp.where()} ({imp.importer} is in no known layer: add it to ALLOWED in tests/test_layers.py)")
        elif theirs != mine and theirs not in ALLOWED[mine]:
            bad.append(f"{imp.where()} ({mine} may not import {theirs})")
    return bad


def private_violations(sources: Sources) -> list[str]:
    """(d): no private name or private module of another package (its subpackages may use it)."""
    bad = []
    for imp in all_imports(sources):
        if not imp.target.startswith("seethrough"):
            continue
        theirs = package_of(imp.target, sources | SOURCES)
        mine = package_of(imp.importer, sources | SOURCES)
        if mine == theirs or mine.startswith(theirs + "."):
            continue
        hidden = [p for p in imp.target.split(".") if _private(p)] + [n for n in imp.names if _private(n)]
        if hidden:
            bad.append(f"{imp.where()} (private {hidden} of another package {theirs})")
    return bad


def private_helper_violations(sources: Sources) -> list[str]:
    """(e): inside a package, private names come only from private modules."""
    bad = []
    everything = sources | SOURCES
    for imp in all_imports(sources):
        if not imp.target.startswith("seethrough") or imp.target == imp.importer:
            continue
        if package_of(imp.target, everything) != package_of(imp.importer, everything):
            continue
        hidden = [n for n in imp.names if _private(n)]
        if hidden and not _private(imp.target.rpartition(".")[2]):
            bad.append(f"{imp.where()} (private helpers {hidden} of the public module {imp.target}: move them "
                       "to a private module of the package, or make them public)")
    return bad


SOURCES = read_sources()


def test_the_scan_sees_the_package() -> None:
    names = set(SOURCES)
    assert {"seethrough", "seethrough.core.hooks", "seethrough.cli", "seethrough.neurons"} <= names
    found = all_imports({"seethrough.neurons.attribution": SOURCES["seethrough.neurons.attribution"]})
    assert any(i.target == "seethrough.core.sites" and i.names == ("Site",) for i in found)


def test_core_imports_only_torch_and_numpy_at_import_time() -> None:
    bad = core_violations(SOURCES)
    assert not bad, "core imports beyond torch/numpy:\n" + "\n".join(bad)


def test_imports_flow_downward() -> None:
    bad = layer_violations(SOURCES)
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_no_private_name_crosses_a_package() -> None:
    bad = private_violations(SOURCES)
    assert not bad, "private names imported across packages:\n" + "\n".join(bad)


def test_shared_private_helpers_live_in_private_modules() -> None:
    bad = private_helper_violations(SOURCES)
    assert not bad, "private helpers reached in public modules:\n" + "\n".join(bad)


# -- planted bugs: each checker rejects a synthetic module ----------------------------------------------------


def _one(name: str, source: str, is_package: bool = False) -> Sources:
    return {name: (source, is_package)}


@pytest.mark.parametrize("source, n_bad", [
    ("import pandas\n", 1),
    ("from matplotlib.figure import Figure\n", 1),
    ("import torch\nimport numpy as np\nimport math\nfrom safetensors.torch import save_file\n", 0),
    ("def f():\n    import pandas\n    return pandas\n", 0),  # lazy: allowed
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pandas\n", 0),
    ("class A:\n    import scipy\n", 1),  # a class body runs at import time
])
def test_planted_core_import_is_caught(source: str, n_bad: int) -> None:
    assert len(core_violations(_one("seethrough.core.planted", source))) == n_bad


@pytest.mark.parametrize("module, source, n_bad", [
    ("seethrough.neurons.planted", "from ..representations.cka import cka\n", 1),  # a sibling area
    ("seethrough.neurons.planted", "from ..audit import audit_classifier\n", 1),
    ("seethrough.neurons.planted", "def f():\n    from ..report import html\n", 1),  # lazy still counts
    ("seethrough.neurons.planted", "from ..evidence.finding import Finding\nfrom ..core import Site\n", 0),
    ("seethrough.evidence.planted", "from ..neurons import ablate\n", 1),
    ("seethrough.core.planted", "from ..evidence import Finding\n", 1),
    ("seethrough.bench.games.planted", "from ...report.html import render\n", 1),
    ("seethrough.bench.planted", "from ..audit import audit_classifier\n", 0),
    ("seethrough.audit.planted", "from ..bench.zoo import trojans\n", 1),
    ("seethrough.audit.planted", "from seethrough.report import audit\n", 1),
    ("seethrough.report.planted", "from ..bench import ledger\nfrom ..audit import attack\n", 0),
    ("seethrough.report.planted", "from .. import cli\n", 1),
    ("seethrough.weights.planted", "from seethrough.cli import app\n", 1),
    ("seethrough.newlayer", "import torch\nfrom .core import Site\n", 1),  # unknown layer
    ("seethrough.__main__", "from .cli import app\n", 0),
])
def test_planted_upward_import_is_caught(module: str, source: str, n_bad: int) -> None:
    assert len(layer_violations(_one(module, source))) == n_bad


@pytest.mark.parametrize("module, source, n_bad", [
    ("seethrough.cli", "from .audit.scan import _Scanner\n", 1),
    ("seethrough.evidence.planted", "from ..neurons._gradients import gradients\n", 1),  # a private module
    ("seethrough.bench.games.planted", "from ..zoo.trojans import _stamp\n", 1),  # a sibling subpackage
    ("seethrough.bench.games.planted", "from ..zoo._seeding import generator\n", 1),
    ("seethrough.bench.games.planted", "from .._seeding import generator\n", 0),  # the parent package's
    ("seethrough.neurons.planted", "from ._gradients import gradients\nfrom .ablation import _check_kind\n", 0),
    ("seethrough.neurons.planted", "from ..core.hooks import __all__\n", 0),  # dunder names are not private
])
def test_planted_private_import_is_caught(module: str, source: str, n_bad: int) -> None:
    assert len(private_violations(_one(module, source))) == n_bad


@pytest.mark.parametrize("source, n_bad", [
    ("from .exemplars import _order_statistics\n", 1),
    ("from .exemplars import top_exemplars\nfrom ._gradients import _check\n", 0),
    ("from ..core.hooks import _forward\n", 0),  # another package: rule (d)'s business
])
def test_planted_private_helper_in_public_module_is_caught(source: str, n_bad: int) -> None:
    assert len(private_helper_violations(_one("seethrough.neurons.planted", source))) == n_bad


def test_relative_imports_resolve() -> None:
    found = all_imports(_one("seethrough.bench.games", "from . import base\nfrom ..zoo import glyphs\n"
                             "from ... import evidence\n", is_package=True))
    assert [(i.target, i.names) for i in found] == [("seethrough.bench.games.base", ()),
                                                   ("seethrough.bench.zoo.glyphs", ()), ("seethrough.evidence", ())]
