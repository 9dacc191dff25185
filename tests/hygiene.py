"""The hygiene table: every public method, with a tiny-model call, held to "leave no trace".

Later issues add one `Case` per public method that takes a model (and list other public names
in `EXEMPT` with a reason); `test_hygiene.py` fails if a public name is in neither.

What "no trace" means (`snapshot`): the same hooks on every module (ours gone, the user's still
there), bit-identical parameters and buffers, the same ``training`` and ``requires_grad`` flags,
no ``.grad`` created or changed, and the global torch and numpy random states untouched (methods
seed their own generators).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from models import TinyCNN, TinyMLP, TinyTransformer, images, tokens, vectors
from torch import Tensor, nn

import seethrough as st
import seethrough.audit as audit
import seethrough.core as core
import seethrough.core.edges
import seethrough.demo as demo
import seethrough.evidence as evidence
import seethrough.hf as hf
import seethrough.neurons as neurons
import seethrough.report as report
import seethrough.representations as representations
from seethrough import Site
from seethrough.bench import executors, games, ledger, runner, zoo

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
               "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")


@dataclass(frozen=True)
class Snapshot:
    hooks: dict[str, tuple]
    global_hooks: tuple
    tensors: dict[str, Tensor]
    training: dict[str, bool]
    requires_grad: dict[str, bool]
    grads: dict[str, Tensor | None]
    tensor_hooks: dict[str, int]
    rng: tuple[Tensor, str]


def snapshot(model: nn.Module) -> Snapshot:
    """Everything a method must leave as it found it."""
    hooks = {name: tuple(tuple(getattr(m, d, {}).keys()) for d in _HOOK_DICTS) for name, m in model.named_modules()}
    glob = tuple(tuple(getattr(torch.nn.modules.module, g).keys()) for g in _GLOBAL_HOOKS)
    tensors = {f"p:{n}": p.detach().clone() for n, p in model.named_parameters()}
    tensors.update({f"b:{n}": b.detach().clone() for n, b in model.named_buffers()})
    return Snapshot(
        hooks=hooks,
        global_hooks=glob,
        tensors=tensors,
        training={name: m.training for name, m in model.named_modules()},
        requires_grad={n: p.requires_grad for n, p in model.named_parameters()},
        grads={n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()},
        tensor_hooks={n: len(p._backward_hooks or {}) for n, p in model.named_parameters()},
        rng=(torch.get_rng_state(), repr(np.random.get_state()[1][:8].tolist() + [np.random.get_state()[2]])),
    )


def assert_unchanged(before: Snapshot, after: Snapshot, what: str) -> None:
    """Fail with a message naming the first kind of trace left behind."""
    assert after.hooks == before.hooks, f"{what}: hooks changed on modules " + str(
        [k for k in before.hooks if before.hooks[k] != after.hooks.get(k)])
    assert after.global_hooks == before.global_hooks, f"{what}: global module hooks changed"
    for name, t in before.tensors.items():
        assert torch.equal(t, after.tensors[name]), f"{what}: {name} changed"
    assert after.training == before.training, f"{what}: train/eval modes changed"
    assert after.requires_grad == before.requires_grad, f"{what}: requires_grad flags changed"
    for name, g in before.grads.items():
        g2 = after.grads[name]
        assert (g is None) == (g2 is None) and (g is None or torch.equal(g, g2)), f"{what}: .grad of {name} changed"
    assert after.tensor_hooks == before.tensor_hooks, f"{what}: tensor hooks left on parameters"
    assert torch.equal(after.rng[0], before.rng[0]) and after.rng[1] == before.rng[1], (
        f"{what}: the global torch/numpy RNG was used (seed a local generator instead)")


def same(a: Any, b: Any) -> bool:
    """Exact structural equality for results (tensors compared bitwise)."""
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(same(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))
    return bool(a == b)


@dataclass(frozen=True)
class Case:
    """One public method on a tiny model.

    ``call(model, inputs)`` runs it; ``per_example(result)`` maps the result to a tensor with the
    batch first (for the batch-invariance check), or is None when the method has no per-example
    result; ``invalid`` are calls that must raise (bad target, bad site, raising callback) and
    must leave no trace either.
    """

    name: str
    target: Any
    model: Callable[[], nn.Module]
    inputs: Callable[[], Any]
    call: Callable[[nn.Module, Any], Any]
    per_example: Callable[[Any], Tensor] | None = None
    invalid: tuple[Callable[[nn.Module, Any], Any], ...] = ()
    runs_forward: bool = True
    edits_model: bool = False
    train_mode: bool = field(default=False)


def _raise(value: Tensor, site: Site) -> None:
    raise RuntimeError("injected failure in a user callback")


def _cat_values(result: dict) -> Tensor:
    return torch.cat([v.flatten(1) for v in result.values()], dim=1)


TABLE: list[Case] = [
    Case("capture", st.capture, TinyTransformer, tokens,
         lambda m, x: st.capture(m, x, ["blocks.0", Site("blocks.1.attn", positions=[0])]),
         per_example=_cat_values,
         invalid=(lambda m, x: st.capture(m, x, ["blocks.9"]),
                  lambda m, x: st.capture(m, x, [Site("blocks.0", units=[99])]))),
    Case("capture (cnn, train mode)", st.capture, TinyCNN, images,
         lambda m, x: st.capture(m, x, ["conv", Site("act", units=[0, 2])]), per_example=_cat_values,
         train_mode=True),
    Case("patch", st.patch, TinyMLP, vectors,
         lambda m, x: st.patch(m, x, {"fc1": lambda v, s: v * 0.5, Site("fc2", point="input", units=[1]): torch.zeros(1)}),
         per_example=lambda out: out,
         invalid=(lambda m, x: st.patch(m, x, {"fc1": _raise}),
                  lambda m, x: st.patch(m, x, {"fc1": torch.zeros(3)}),
                  lambda m, x: st.patch(m, x, {"nope": torch.zeros(3)}))),
    Case("hooks", st.hooks, TinyMLP, vectors,
         lambda m, x: _run_hooks(m, x, {"fc1": lambda v, s: v + 1}),
         per_example=lambda out: out,
         invalid=(lambda m, x: _run_hooks(m, x, {"fc1": _raise}),
                  lambda m, x: _run_hooks(m, x, {"fc9": lambda v, s: None}))),
    Case("stream", core.stream, TinyMLP, vectors,
         lambda m, x: [v for _, v in core.stream(m, core.batches(x, 2), ["fc1"])],
         per_example=lambda chunks: torch.cat([c["fc1"] for c in chunks]),
         invalid=(lambda m, x: list(core.stream(m, core.batches(x, 2), ["fc0"])),)),
    Case("inspect_model", core.inspect_model, TinyTransformer, tokens, lambda m, x: core.inspect_model(m, x),
         invalid=(lambda m, x: core.inspect_model(m, {"input_ids": x["input_ids"].float()}),)),
    Case("validate_inputs", core.validate_inputs, TinyMLP, vectors, lambda m, x: core.validate_inputs(m, x),
         runs_forward=False, invalid=(lambda m, x: core.validate_inputs(m, x * float("nan")),)),
    Case("call_model", core.call_model, TinyMLP, vectors, lambda m, x: core.call_model(m, x),
         per_example=lambda out: out),
    Case("resolve_site", core.sites.resolve_site, TinyMLP, vectors, lambda m, x: core.sites.resolve_site(m, "fc1"),
         runs_forward=False, invalid=(lambda m, x: core.sites.resolve_site(m, "fc3"),)),
    Case("select_sites", st.select_sites, TinyTransformer, tokens, lambda m, x: st.select_sites(m, "blocks.*"),
         runs_forward=False, invalid=(lambda m, x: st.select_sites(m, "nothing.*"),)),
]


def _planted_finding() -> evidence.Finding:
    return evidence.Finding("units", "units 1 and 5 carry class 2", site=Site("act"), units=[1, 5], target=2)


TABLE += [
    Case("validate", evidence.validate, TinyMLP, vectors,
         lambda m, x: evidence.validate(_planted_finding(), m, x, n_controls=5).to_dict(),
         invalid=(lambda m, x: evidence.validate(
             evidence.Finding("units", "c", site=Site("act"), units=[99], target=0), m, x),
                  lambda m, x: evidence.validate(
             evidence.Finding("units", "c", site=Site("nope"), units=[1], target=0), m, x))),
    Case("validate (train mode, mean ablation)", evidence.validate, TinyMLP, vectors,
         lambda m, x: evidence.validate(_planted_finding(), m, x, n_controls=5, ablation="mean").to_dict(),
         train_mode=True),
]


TABLE += [
    Case("unit_importance", neurons.unit_importance, TinyMLP, vectors,
         lambda m, x: neurons.unit_importance(m, x, "act", lambda out: out[:, 0]).values,
         invalid=(lambda m, x: neurons.unit_importance(m, x, "act", lambda out: out),
                  lambda m, x: neurons.unit_importance(m, x, "act", _raise_metric))),
    Case("unit_importance (cnn, train mode)", neurons.unit_importance, TinyCNN, images,
         lambda m, x: neurons.unit_importance(m, x, "conv", lambda out: out[:, 1], ablation="mean").values,
         train_mode=True),
]


TABLE += [
    Case("reverse_engineer_trigger", audit.reverse_engineer_trigger, TinyCNN, images,
         lambda m, x: audit.reverse_engineer_trigger(m, x, 1, steps=3).trigger.mask,
         invalid=(lambda m, x: audit.reverse_engineer_trigger(m, x.flatten(1), 1, steps=3),
                  lambda m, x: audit.reverse_engineer_trigger(m, x * float("nan"), 1, steps=3))),
    Case("neural_cleanse (train mode)", audit.neural_cleanse, TinyCNN, images,
         lambda m, x: audit.neural_cleanse(m, x, n_classes=3, steps=3).anomaly, train_mode=True,
         invalid=(lambda m, x: audit.neural_cleanse(m, x, n_classes=1),)),
]


TABLE += [
    Case("evidence.accuracy (train mode)", evidence.accuracy, TinyCNN, images,
         lambda m, x: evidence.accuracy(m, x, torch.arange(len(x)) % 3), train_mode=True,
         invalid=(lambda m, x: evidence.accuracy(m, x, torch.zeros(2, dtype=torch.long)),)),
    Case("attack_success (zoo trigger)", evidence.attack_success, TinyCNN, images,
         lambda m, x: evidence.attack_success(m, x, torch.arange(len(x)) % 3,
                                              zoo.random_patch_trigger(0, image_size=6, n_classes=3))),
]


TABLE += [
    Case("scan", audit.scan, TinyCNN, lambda: images(8),
         lambda m, x: audit.scan(m, x, steps=10, n_controls=20).to_dict()["scan"],
         invalid=(lambda m, x: audit.scan(m, x[:3]),
                  lambda m, x: audit.scan(m, x, class_names=["a", "b"]))),
]


TABLE += [
    Case("cka_between", representations.cka_between, TinyMLP, vectors,
         lambda m, x: representations.cka_between(m, m, x, ["fc1", "act"], ["fc1", "fc2"], batch_size=2).values,
         invalid=(lambda m, x: representations.cka_between(m, m, x, ["fc1"], ["fc9"]),
                  lambda m, x: representations.cka_between(m, m, x, ["fc1"], ["fc2"], batch_size=0),
                  lambda m, x: representations.cka_between(m, m, x[:1], ["fc1"], ["fc2"]))),
    Case("cka_between (transformer, train mode)", representations.cka_between, TinyTransformer, tokens,
         lambda m, x: representations.cka_between(m, m, x, ["embed", "blocks.0"], ["blocks.1"], batch_size=2).values,
         train_mode=True),
]


def _trigger() -> evidence.Trigger:
    mask = torch.zeros(6, 6)
    mask[1:3, 1:3] = 1.0
    return evidence.Trigger(mask, torch.ones(1, 6, 6), 1, "patch")


TABLE += [
    Case("repair_by_unlearning (train mode)", audit.repair_by_unlearning, TinyCNN, lambda: images(12),
         lambda m, x: audit.repair_by_unlearning(m, x, torch.arange(12) % 3, _trigger(), epochs=1).to_dict(),
         train_mode=True,
         invalid=(lambda m, x: audit.repair_by_unlearning(m, x, torch.zeros(2, dtype=torch.long), _trigger()),
                  lambda m, x: audit.repair_by_unlearning(m, x, torch.arange(12) % 3, _trigger(), held_out=1.5))),
    Case("accuracy", evidence.accuracy, TinyCNN, images,
         lambda m, x: evidence.accuracy(m, x, torch.arange(len(x)) % 3)),
    Case("attack_success", evidence.attack_success, TinyCNN, images,
         lambda m, x: evidence.attack_success(m, x, torch.arange(len(x)) % 3, _trigger()),
         invalid=(lambda m, x: evidence.attack_success(m, x, torch.ones(len(x), dtype=torch.long), _trigger()),
                  lambda m, x: evidence.attack_success(m, x, torch.arange(len(x)) % 3, evidence.Trigger(
                      torch.ones(5, 5), torch.ones(1, 5, 5), 1)))),
]


def _raise_metric(output: Tensor) -> Tensor:
    raise RuntimeError("injected failure in a user metric")


TABLE += [
    Case("integrated_gradients", neurons.integrated_gradients, TinyMLP, vectors,
         lambda m, x: neurons.integrated_gradients(m, x, 2, n_steps=8),
         per_example=lambda r: torch.cat([r.values, r.delta[:, None]], 1),
         invalid=(lambda m, x: neurons.integrated_gradients(m, x, 3),  # class out of range
                  lambda m, x: neurons.integrated_gradients(m, x, 0, n_steps=0),
                  lambda m, x: neurons.integrated_gradients(m, x, 0, site="fc9"),
                  lambda m, x: neurons.integrated_gradients(m, x, 0, baseline=torch.zeros(3)),
                  lambda m, x: neurons.integrated_gradients(m, x, None, site="fc1", metric=_raise_metric))),
    Case("integrated_gradients (cnn site, train mode, chunked)", neurons.integrated_gradients, TinyCNN, images,
         lambda m, x: neurons.integrated_gradients(m, x, 1, site="conv", n_steps=6, internal_batch_size=7),
         per_example=lambda r: torch.cat([r.values.flatten(1), r.delta[:, None]], 1), train_mode=True),
    Case("integrated_gradients (transformer, keyword inputs)", neurons.integrated_gradients, TinyTransformer,
         tokens,
         lambda m, x: neurons.integrated_gradients(m, x, None, site="blocks.0", metric=lambda out: out[:, -1, 3],
                                                   n_steps=4),
         per_example=lambda r: torch.cat([r.values.flatten(1), r.delta[:, None]], 1),
         invalid=(lambda m, x: neurons.integrated_gradients(m, x, 0),  # keyword inputs need a site
                  lambda m, x: neurons.integrated_gradients(m, x, 0, site="blocks.0"))),  # 3-d output needs metric
    Case("saliency", neurons.saliency, TinyCNN, images, lambda m, x: neurons.saliency(m, x, 1).values,
         per_example=lambda v: v,
         invalid=(lambda m, x: neurons.saliency(m, x, -1), lambda m, x: neurons.saliency(m, x, 5))),
    Case("gradient_x_input", neurons.gradient_x_input, TinyMLP, vectors,
         lambda m, x: neurons.gradient_x_input(m, x, 0, site="fc1").values, per_example=lambda v: v,
         invalid=(lambda m, x: neurons.gradient_x_input(m, x, None, site="fc1", metric=_raise_metric),)),
]


def _run_hooks(model: nn.Module, inputs: Any, callbacks: dict) -> Tensor:
    with st.hooks(model, callbacks):
        return model(inputs)


#: Public names that are not methods on a model, each with the reason.
EXEMPT: dict[Any, str] = {
    st.Site: "a frozen value object; validated in test_sites.py",
    core.Hooks: "the context manager class that hooks() returns; covered by the 'hooks' case",
    core.eval_mode: "a context manager that restores every module's mode (its doctest and every user's hygiene case)",
    audit.reverse.k_arm_keeps: "ranks class sizes; takes no model",
    core.edges.record_stream: "the residual-stream edge engine; covered by find_circuit's and validate's cases",
    core.edges.residual_edges: "orders recorded values and checks the residual form; takes no model",
    core.edges.ablated_reference: "ablates a tensor; takes no model",
    core.edges.run_edges: "the residual-stream edge engine; covered by find_circuit's and validate's cases",
    core.RunningMean: "a streaming statistic over tensors; takes no model",
    core.RunningCovariance: "a streaming statistic over tensors; takes no model",
    core.TopK: "a streaming statistic over tensors; takes no model",
    core.batches: "slices inputs; takes no model",
    core.ModelSummary: "a result dataclass",
    core.ModuleRow: "a result dataclass",
    core.ArrayData: "a data container",
    core.load_factory: "imports a factory; takes no model",
    core.load_model: "builds a new model (no existing model to disturb)",
    core.load_weights: "reads a file; takes no model",
    core.load_data: "reads a file; takes no model",
    core.save_tensors: "writes tensors; takes no model",
    core.load_tensors: "reads a file; takes no model",
    core.sites.as_sites: "normalises a site argument; takes no model",
    core.inputs.batch_size_of: "reads a shape; takes no model",
    core.inputs.describe_inputs: "formats shapes for messages; takes no model",
    core.inputs.slice_inputs: "slices inputs; takes no model",
    core.inputs.wrap_forward_error: "builds an error object; touches no model",
    evidence.Finding: "a value object (a claim); validated in tests/evidence",
    evidence.Validation: "a result dataclass",
    evidence.Summary: "a result dataclass",
    evidence.summarize: "statistics over numbers; takes no model",
    evidence.auroc: "statistics over numbers; takes no model",
    evidence.spearman: "statistics over numbers; takes no model",
    evidence.bootstrap_ci: "statistics over numbers; takes no model",
    evidence.stamp: "edits images; takes no model",
    evidence.target_log_prob: "builds a metric function; takes no model",
    evidence.target_hit: "builds a metric function; takes no model",
    neurons.UnitImportance: "a result dataclass",
    neurons.AttributionResult: "a result dataclass",
    core.inputs.repeat_inputs: "tiles inputs; takes no model",
    ledger.UnitKey: "a value object (a unit's identity); takes no model",
    ledger.Ledger: "stores results in SQLite; takes no model",
    report.MetricRow: "a result dataclass",
    report.GameSection: "a result dataclass",
    report.write_report: "writes HTML; takes no model",
    report.strip_plot: "plots numbers; takes no model",
    report.figure_to_data_uri: "encodes a figure; takes no model",
    audit.ReversedTrigger: "a result dataclass",
    audit.NeuralCleanse: "a result dataclass",
    audit.anomaly_index: "statistics over numbers; takes no model",
    audit.AuditResult: "a result dataclass",
    audit.RepairResult: "a result dataclass (holds the repaired copy)",
    report.write_audit_report: "writes HTML from an audit result; takes no model",
    executors.Outcome: "a result dataclass",
    executors.execute_unit: "runs one bench unit on a zoo model it builds itself",
    executors.LocalExecutor: "runs bench units; takes no model",
    executors.RayExecutor: "runs bench units; takes no model",
    games.Game: "the game base class; games build their own models",
    games.Metric: "a value object",
    games.outranks: "ranks numbers; takes no model",
    games.pattern_correlation: "compares patterns; takes no model",
    games.mask_iou: "compares masks; takes no model",
    games.case_generator: "seeds a generator; takes no model",
    runner.PlannedUnit: "a value object",
    runner.plan: "plans bench units; takes no model",
    runner.run: "runs bench units; takes no model",
    runner.table: "aggregates the ledger; takes no model",
    runner.sections: "aggregates the ledger; takes no model",
    runner.select_games: "looks up games by name",
    zoo.config_hash: "hashes a config; takes no model",
    zoo.derive_seed: "derives a seed from a name; takes no model",
    zoo.generator: "seeds a generator; takes no model",
    zoo.cached: "builds or loads a new model",
    zoo.digits16: "builds data",
    zoo.random_patch_trigger: "builds a trigger",
    zoo.random_blend_trigger: "builds a trigger",
    zoo.MaskedLinear: "a layer class",
    zoo.DigitsMLP: "a model class",
    zoo.DigitsCNN: "a model class",
    zoo.ToyModel: "a model class",
    zoo.Attention: "a layer class",
    zoo.TransformerBlock: "a layer class",
    zoo.TinyTransformer: "a model class",
    zoo.train_classifier: "trains the model it is given: editing it is its purpose",
    zoo.trojaned_classifier: "builds a new model",
    zoo.planted_critical_units: "builds a new model",
    zoo.train_toy_model: "builds a new model",
    zoo.trained_first_token_transformer: "builds a new model",
    zoo.sample_features: "builds data",
    zoo.first_token_task: "builds data",
    representations.cka: "compares two arrays; takes no model",
    representations.StreamingCKA: "a streaming statistic over tensors; takes no model",
    representations.SimilarityMatrix: "a result dataclass",
    representations.cca_correlations: "compares two arrays; takes no model",
    representations.svcca: "compares two arrays; takes no model",
    representations.pwcca: "compares two arrays; takes no model",
    representations.procrustes: "compares two arrays; takes no model",
    demo.digits_cnn: "builds a new model",
    demo.digits16: "builds data",
    core.cache_dir: "returns a path",
    core.atomic_write: "writes a file; takes no model",
    demo.main: "runs the CLI demo",
    hf.load_minilm: "builds a new model (tested in test_hf.py)",
    hf.minilm: "builds a new model",
    hf.tokenize: "tokenises text; takes no model",
}


def _join_area_tables() -> None:
    """Areas may keep their cases in ``tests/hygiene_<area>.py`` (``CASES`` and ``EXEMPT``); they join here.

    conftest.py keeps pytest from collecting those files on their own, so they are only ever
    imported from here, after `Case` and the helpers above exist.
    """
    for path in sorted(Path(__file__).parent.glob("hygiene_*.py")):
        area = importlib.import_module(path.stem)
        TABLE.extend(area.CASES)
        EXEMPT.update(area.EXEMPT)


_join_area_tables()
