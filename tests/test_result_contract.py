"""The result contract's common check (issue #9), parametrised over every public result class.

Like scikit-learn's ``estimator_checks``: each public result class (a dataclass with ``to_frame``
found through the packages' ``__all__``) must subclass `Result` and have a factory in ``FACTORIES``
(a public function's result on a tiny model, with hostile strings in its names where the result
carries names). Each instance must give a DataFrame with unique columns, a Figure made without
pyplot, HTML that escapes every name, and a strict-JSON ``to_dict`` that round-trips. A class
missing from the table fails the suite, and planted-bug tests show that every check can fail.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import math
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from models import TinyCNN, TinyMLP, images, vectors
from torch import Tensor, nn

import seethrough
from seethrough import Site
from seethrough.core import Result, new_figure

HOSTILE = "<script>alert(1)</script>"  # a module name, class name or claim no HTML view may show raw
HOSTILE_CELL = "</td><img src=x>"  # closes a table cell, then injects an element


class HostileMLP(nn.Module):
    """`TinyMLP` whose ReLU is named ``HOSTILE``: every site-carrying result carries a hostile path."""

    def __init__(self) -> None:
        super().__init__()
        base = TinyMLP()
        self.fc1, self.fc2 = base.fc1, base.fc2
        self.add_module(HOSTILE, nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(getattr(self, HOSTILE)(self.fc1(x)))


class HostileCNN(nn.Module):
    """`TinyCNN` whose conv is named ``HOSTILE_CELL`` and whose ReLU is named ``HOSTILE``."""

    def __init__(self) -> None:
        super().__init__()
        base = TinyCNN()
        self.add_module(HOSTILE_CELL, base.conv)
        self.add_module(HOSTILE, nn.ReLU())
        self.head = base.head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(getattr(self, HOSTILE)(getattr(self, HOSTILE_CELL)(x)).mean(dim=(2, 3)))


def _planted_trigger() -> Any:
    from seethrough.evidence import Trigger

    mask = torch.zeros(6, 6)
    mask[1:3, 1:3] = 1.0
    return Trigger(mask, torch.ones(1, 6, 6), 1, "patch")


def _metric(output: Tensor) -> Tensor:
    return output[:, 0]


# -- the factories: one per public result class, keyed by class name ---------------------------------------


def _model_summary() -> Any:
    return seethrough.core.inspect_model(HostileMLP(), vectors())


def _summary() -> Any:
    return seethrough.evidence.summarize([0.2, 0.9, 0.7])


def _validation() -> Any:
    from seethrough.evidence import Finding, validate

    finding = Finding("units", f"units 1 and 5 of {HOSTILE} carry class 2", site=Site(HOSTILE), units=[1, 5],
                      target=2)
    return validate(finding, HostileMLP(), vectors(), n_controls=3)


def _trigger() -> Any:
    return _planted_trigger()


def _unit_importance() -> Any:
    return seethrough.neurons.unit_importance(HostileMLP(), vectors(), HOSTILE, _metric)


def _attribution() -> Any:
    return seethrough.neurons.integrated_gradients(HostileMLP(), vectors(), 0, site=Site(HOSTILE), n_steps=4)


def _token_attribution() -> Any:
    from models import TinyTransformer, tokens

    inputs = tokens(2, 3)
    result = seethrough.neurons.integrated_gradients(TinyTransformer(), inputs, None, site="embed", n_steps=2,
                                                     metric=lambda out: out[:, -1, 0])
    return result.token_scores([[HOSTILE, HOSTILE_CELL, "a"]] * 2, attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]))


def _soft_prompt() -> Any:
    from models import TinyTransformer, tokens

    from seethrough.neurons import unit_objective
    from seethrough.neurons.prompts import synthesize_prompt

    model = TinyTransformer()
    return synthesize_prompt(model, unit_objective("unembed", 0, position=(2,)), tokens(2, 3), site="embed",
                             embedding=model.embed.weight, steps=2, vocabulary=[HOSTILE, HOSTILE_CELL] * 8)


def _exemplars() -> Any:
    return seethrough.neurons.top_exemplars(HostileMLP(), vectors(), HOSTILE, k=2)


def _activation_stats() -> Any:
    x = vectors()
    return seethrough.neurons.activation_stats(HostileMLP(), x, HOSTILE, labels=torch.arange(len(x)) % 2)


def _dissection() -> Any:
    x = images()
    masks = x[:, 0:1].repeat(1, 2, 1, 1) > 0.3
    return seethrough.neurons.dissect(HostileCNN(), x, masks, HOSTILE_CELL, concepts=[HOSTILE, HOSTILE_CELL],
                                      quantile=0.9)


def _synthesis() -> Any:
    from seethrough.neurons import synthesize, unit_objective

    return synthesize(HostileMLP(), unit_objective(HOSTILE, 2), shape=(4,), steps=2)


def _frivolous() -> Any:
    return seethrough.neurons.frivolous_units(HostileMLP(), vectors(), HOSTILE)


def _polysemanticity() -> Any:
    x = vectors()
    return seethrough.neurons.polysemanticity(HostileMLP(), x, HOSTILE, x.abs())


def _similarity() -> Any:
    model = HostileMLP()
    return seethrough.representations.cka_between(model, model, vectors(), [HOSTILE, "fc1"], [HOSTILE])


def _splice() -> Any:
    model, x = HostileMLP(), vectors(16)
    sae = seethrough.representations.SparseAutoencoder(6, k=2, max_epochs=2)
    sae.fit(seethrough.representations.site_activations(model, x, HOSTILE))
    return seethrough.representations.loss_recovered(model, x, HOSTILE, sae)


def _dci() -> Any:
    factors = torch.randint(0, 3, (60, 2), generator=torch.Generator().manual_seed(0)).double()
    return seethrough.representations.dci(factors, factors)


def _audit_result() -> Any:
    return seethrough.audit.scan(HostileCNN().eval(), images(16), class_names=[HOSTILE, HOSTILE_CELL, "c"], steps=10,
                                 n_controls=20)


def _neural_cleanse() -> Any:
    return seethrough.audit.neural_cleanse(HostileCNN().eval(), images(16), n_classes=3, steps=10)


def _reversed_trigger() -> Any:
    return seethrough.audit.reverse_engineer_trigger(HostileCNN().eval(), images(16), 1, steps=5)


def _trigger_units() -> Any:
    return seethrough.audit.trigger_units(HostileCNN().eval(), images(8), _planted_trigger(), site=HOSTILE, k=2,
                                          n_controls=3)


def _designed_attack() -> Any:
    return seethrough.audit.design_attack(HostileCNN().eval(), images(8), images(8), Site(HOSTILE), [0, 1],
                                          _planted_trigger(), steps=3, n_controls=3)


def _repair() -> Any:
    x = images(16)
    return seethrough.audit.repair_by_unlearning(HostileCNN().eval(), x, torch.arange(16) % 3, _planted_trigger(),
                                                 epochs=1)


def _hostile_stream() -> nn.Module:
    """A residual stream whose embedding is named HOSTILE and whose head is named HOSTILE_CELL."""

    class Stream(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.add_module(HOSTILE, nn.Linear(4, 6))
            self.block = nn.Sequential(nn.Linear(6, 6), nn.ReLU())
            self.add_module(HOSTILE_CELL, nn.Linear(6, 3))

        def forward(self, x: Tensor) -> Tensor:
            h = getattr(self, HOSTILE)(x)
            return getattr(self, HOSTILE_CELL)(h + self.block(h))

    return Stream()


def _partition() -> Any:
    return seethrough.subnetworks.partition(_hostile_stream(), 2)


def _clusterability() -> Any:
    return seethrough.subnetworks.clusterability(_hostile_stream(), 2, n_shuffles=3)


def _patching() -> Any:
    x = vectors()
    return seethrough.subnetworks.activation_patching(HostileMLP(), x, -x, [HOSTILE, Site("fc1", units=[1, 2])], _metric)


def _faithfulness_curve() -> Any:
    x = vectors()
    return _circuit().curve(_hostile_stream(), x, -x, _metric)


def _circuit_significance() -> Any:
    x = vectors()
    return seethrough.subnetworks.circuit_significance(_hostile_stream(), x, -x, _metric, writers=[HOSTILE, "block"],
                                                       readers=["block", HOSTILE_CELL], edges=[(HOSTILE, "block")],
                                                       n_controls=4)


def _circuit() -> Any:
    x = vectors()
    return seethrough.subnetworks.find_circuit(_hostile_stream(), x, -x, _metric, writers=[HOSTILE, "block"],
                                               readers=["block", HOSTILE_CELL], method="eap")


def _hostile_layers() -> nn.Module:
    """An MLP whose two linear layers are named HOSTILE and HOSTILE_CELL: parameter names carry both."""
    from collections import OrderedDict

    return nn.Sequential(OrderedDict([(HOSTILE, nn.Linear(4, 8)), ("act", nn.ReLU()), (HOSTILE_CELL, nn.Linear(8, 3))]))


def _weight_importance() -> Any:
    return seethrough.weights.importance(_hostile_layers(), vectors(), torch.arange(5) % 3, method="fisher")


def _weight_mask() -> Any:
    return seethrough.weights.learn_mask(_hostile_layers(), vectors(), torch.arange(5) % 3, steps=3)


def _weight_overlap() -> Any:
    top = _weight_importance().top(0.3)
    return seethrough.weights.overlap(top, _weight_mask().binary())


def _probe() -> Any:
    x = vectors(40)
    return seethrough.representations.probe(HostileMLP(), x, (x[:, 0] > 0).long(), HOSTILE)


def _erasure() -> Any:
    x = vectors(20)
    return seethrough.representations.erase(HostileMLP(), x, (x[:, 0] > 0).long(), HOSTILE, n_controls=3)


def _tcav() -> Any:
    x = vectors(20)
    return seethrough.representations.tcav(HostileMLP(), x[:6] + 1, x[6:], HOSTILE, x, 1, n_random=3)


# class name -> (factory, whether the instance carries a hostile name)
FACTORIES: dict[str, tuple[Callable[[], Any], bool]] = {
    "Importance": (_weight_importance, True),
    "WeightMask": (_weight_mask, True),
    "Overlap": (_weight_overlap, True),
    "ModelSummary": (_model_summary, True),
    "Summary": (_summary, False),
    "Validation": (_validation, False),  # the claim stays in the Finding; the hostile site is exercised anyway
    "Trigger": (_trigger, False),
    "UnitImportance": (_unit_importance, True),
    "AttributionResult": (_attribution, True),
    "TokenAttribution": (_token_attribution, True),
    "SoftPrompt": (_soft_prompt, True),
    "Exemplars": (_exemplars, True),
    "ActivationStats": (_activation_stats, True),
    "Dissection": (_dissection, True),
    "Synthesis": (_synthesis, True),
    "FrivolousUnits": (_frivolous, True),
    "Polysemanticity": (_polysemanticity, True),
    "SimilarityMatrix": (_similarity, True),
    "ProbeResult": (_probe, True),
    "Erasure": (_erasure, True),
    "TCAVResult": (_tcav, True),
    "AuditResult": (_audit_result, True),
    "NeuralCleanse": (_neural_cleanse, False),
    "ReversedTrigger": (_reversed_trigger, False),
    "TriggerUnits": (_trigger_units, True),
    "DesignedAttack": (_designed_attack, False),
    "RepairResult": (_repair, False),
    "Partition": (_partition, True),
    "Clusterability": (_clusterability, False),
    "Patching": (_patching, True),
    "Circuit": (_circuit, True),
    "FaithfulnessCurve": (_faithfulness_curve, False),
    "CircuitSignificance": (_circuit_significance, False),
    "SpliceResult": (_splice, True),
    "DCI": (_dci, False),
}




def _join_area_factories() -> None:
    """Areas may keep their factories in ``tests/results_<area>.py`` (a ``FACTORIES`` dict); they join here.

    conftest.py keeps pytest from collecting those files on their own. A name defined twice fails.
    """
    for path in sorted(Path(__file__).parent.glob("results_*.py")):
        area = importlib.import_module(path.stem)
        twice = sorted(set(area.FACTORIES) & set(FACTORIES))
        assert not twice, f"{path.name} redefines result factories {twice}"
        FACTORIES.update(area.FACTORIES)


_join_area_factories()


# -- discovery -------------------------------------------------------------------------------------------


def _is_result_class(obj: Any) -> bool:
    return inspect.isclass(obj) and (issubclass(obj, Result) or (dataclasses.is_dataclass(obj)
                                                                   and hasattr(obj, "to_frame")))


def public_result_classes() -> dict[str, type]:
    """Every result class named in some ``__all__`` of the package, by class name."""
    found: dict[str, type] = {}
    for info in pkgutil.walk_packages(seethrough.__path__, "seethrough."):
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if _is_result_class(obj) and obj is not Result:
                assert found.get(obj.__name__, obj) is obj, f"two public result classes named {obj.__name__}"
                found[obj.__name__] = obj
    return found


def missing_factories(classes: dict[str, type], factories: dict[str, Any]) -> list[str]:
    return sorted(set(classes) - set(factories))


CLASSES = public_result_classes()


def test_every_public_result_class_has_a_factory() -> None:
    missing = missing_factories(CLASSES, FACTORIES)
    assert not missing, f"public result classes missing from FACTORIES in tests/test_result_contract.py: {missing}"
    stale = sorted(set(FACTORIES) - set(CLASSES))
    assert not stale, f"FACTORIES names classes that are no longer public results: {stale}"


# -- the checks (plain functions, so the planted-bug tests can call them) --------------------------------


def check_is_result(cls: type) -> None:
    assert issubclass(cls, Result), f"{cls.__name__} must subclass seethrough.core.Result"
    assert dataclasses.is_dataclass(cls), f"{cls.__name__} must be a dataclass"
    assert cls.__dataclass_params__.frozen, f"{cls.__name__} must be a frozen dataclass"  # type: ignore[attr-defined]
    for old in ("to_finding", "to_json"):
        assert not hasattr(cls, old), f"{cls.__name__}.{old}: the contract spells it to_findings / to_dict"


def check_frame(result: Any) -> None:
    import pandas as pd

    frame = result.to_frame()
    name = type(result).__name__
    assert isinstance(frame, pd.DataFrame), f"{name}.to_frame() returned {type(frame).__name__}, not a DataFrame"
    assert len(frame.columns) >= 1, f"{name}.to_frame() has no columns"
    duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    assert not duplicated, f"{name}.to_frame() repeats columns {duplicated}"


def check_plot(result: Any) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    before = plt.get_fignums()
    try:
        fig = result.plot()
        after = plt.get_fignums()
    finally:
        for number in set(plt.get_fignums()) - set(before):
            plt.close(number)
    name = type(result).__name__
    assert isinstance(fig, Figure), f"{name}.plot() returned {type(fig).__name__}, not a matplotlib Figure"
    assert after == before, f"{name}.plot() left pyplot figures {sorted(set(after) - set(before))}: use new_figure"


def check_html(result: Any, hostile: tuple[str, ...] = (HOSTILE, HOSTILE_CELL)) -> None:
    text = result._repr_html_()
    name = type(result).__name__
    assert isinstance(text, str) and text, f"{name}._repr_html_() returned {text!r}"
    shown = [h for h in hostile if h in text]
    assert not shown, f"{name}._repr_html_() shows {shown} unescaped"


def _no_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_no_nan(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_nan(v) for v in value)
    return True


def check_json(result: Any) -> None:
    name = type(result).__name__
    data = result.to_dict()
    assert isinstance(data, dict), f"{name}.to_dict() returned {type(data).__name__}, not a dict"
    try:
        text = json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise AssertionError(f"{name}.to_dict() is not strict JSON: {err}") from err
    assert json.loads(text) == data, f"{name}.to_dict() does not survive a JSON round trip (tuples, int keys?)"


CHECKS = (check_frame, check_plot, check_html, check_json)

_cache: dict[str, Any] = {}


def _instance(name: str) -> Any:
    if name not in _cache:
        torch.manual_seed(0)
        _cache[name] = FACTORIES[name][0]()
    return _cache[name]


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_is_a_result(name: str) -> None:
    check_is_result(CLASSES[name])


@pytest.mark.parametrize("name", sorted(set(CLASSES) & set(FACTORIES)))
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_common_check(name: str, check: Callable[[Any], None]) -> None:
    result = _instance(name)
    assert type(result) is CLASSES[name], f"the factory of {name} made a {type(result).__name__}"
    check(result)


@pytest.mark.parametrize("name", sorted(n for n, (_, hostile) in FACTORIES.items() if hostile and n in CLASSES))
def test_hostile_names_reach_the_result(name: str) -> None:
    """The HTML check means something only if the hostile name is in the result's data."""
    assert HOSTILE in json.dumps(_instance(name).to_dict()), f"the factory of {name} carries no hostile name"


# -- planted bugs: each check must reject a broken result ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Good(Result):
    name: str = HOSTILE
    values: tuple[float, ...] = (1.0, 2.0)

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame({"name": [self.name] * len(self.values), "value": list(self.values)})

    def plot(self) -> Any:
        fig = new_figure(2, 2)
        fig.add_subplot().plot(list(self.values))
        return fig


class _FrameNotDataFrame(_Good):
    def to_frame(self) -> Any:
        return {"value": list(self.values)}


class _FrameNoColumns(_Good):
    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame()


class _FrameDuplicateColumns(_Good):
    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame([[1, 2]], columns=["value", "value"])


class _PlotThroughPyplot(_Good):
    def plot(self) -> Any:
        import matplotlib.pyplot as plt

        return plt.figure()


class _PlotReturnsAxes(_Good):
    def plot(self) -> Any:
        return new_figure(2, 2).add_subplot()


class _HtmlUnescaped(_Good):
    def _repr_html_(self) -> str:
        return f"<table><tr><td>{self.name}</td></tr></table>"


class _HtmlUnescapedColumn(_Good):
    def _repr_html_(self) -> str:
        return str(self.to_frame().to_html(escape=False))


@dataclasses.dataclass(frozen=True)
class _JsonNaN(_Good):
    score: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score}


class _JsonTensor(_Good):
    def to_dict(self) -> dict[str, Any]:
        return {"values": torch.tensor(self.values)}


class _JsonTuple(_Good):
    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values}


class _JsonIntKeys(_Good):
    def to_dict(self) -> dict[str, Any]:
        return {"counts": {1: 2}}


@dataclasses.dataclass(frozen=True)
class _NotAResult:
    def to_frame(self) -> Any:
        raise NotImplementedError


@dataclasses.dataclass
class _Mutable(Result):
    pass


@dataclasses.dataclass(frozen=True)
class _OldSpelling(_Good):
    def to_finding(self, k: int) -> Any:
        raise NotImplementedError


def test_a_good_result_passes_every_check() -> None:
    check_is_result(_Good)
    for check in CHECKS:
        check(_Good())


@pytest.mark.parametrize(("check", "broken"), [
    (check_frame, _FrameNotDataFrame), (check_frame, _FrameNoColumns), (check_frame, _FrameDuplicateColumns),
    (check_plot, _PlotThroughPyplot), (check_plot, _PlotReturnsAxes),
    (check_html, _HtmlUnescaped), (check_html, _HtmlUnescapedColumn),
    (check_json, _JsonNaN), (check_json, _JsonTensor), (check_json, _JsonTuple), (check_json, _JsonIntKeys),
], ids=lambda v: getattr(v, "__name__", str(v)))
def test_planted_bug_is_caught(check: Callable[[Any], None], broken: type) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    with pytest.raises(AssertionError):
        check(broken())
    assert plt.get_fignums() == before, "check_plot must close the figures a broken plot leaks"


@pytest.mark.parametrize("broken", [_NotAResult, _Mutable, _OldSpelling], ids=lambda c: c.__name__)
def test_planted_bad_class_is_caught(broken: type) -> None:
    with pytest.raises(AssertionError):
        check_is_result(broken)


def test_planted_missing_factory_is_caught() -> None:
    classes = dict(CLASSES, _Good=_Good)
    assert missing_factories(classes, FACTORIES) == ["_Good"]
    assert _is_result_class(_Good) and _is_result_class(_NotAResult) and not _is_result_class(Site)


def test_default_html_escapes_the_class_name() -> None:
    hostile_class = type(HOSTILE, (_Good,), {})
    with pytest.raises(AssertionError):
        check_html(_HtmlUnescaped())
    check_html(dataclasses.dataclass(frozen=True)(hostile_class)())
