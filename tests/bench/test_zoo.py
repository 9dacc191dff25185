"""Tests for seethrough.bench.zoo: the cache, the data, triggers and the planted-ground-truth models.

Every score in a zoo entry's metadata is recomputed here independently (a hand-written forward,
hand-stamped images, hand-counted weights), then held to the documented thresholds: the planted
trojan is learnt, the critical units are necessary, superposition appears only with sparse
features, the first-token task is solved through attention. The whole file trains into one
fresh temporary cache, so each zoo entry is built once and the numbers come from this code.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seethrough import Site, capture, patch
from seethrough.bench.zoo import (
    Attention,
    DigitsCNN,
    DigitsMLP,
    MaskedLinear,
    ToyModel,
    cached,
    config_hash,
    digits16,
    first_token_task,
    planted_critical_units,
    random_blend_trigger,
    random_patch_trigger,
    sample_features,
    train_classifier,
    train_toy_model,
    trained_first_token_transformer,
    trojaned_classifier,
)
from seethrough.core import InputError, InputTypeError, cache_dir
from seethrough.evidence import Trigger, accuracy, attack_success, stamp


@pytest.fixture(autouse=True, scope="module")
def _fresh_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One fresh cache for this file: entries are shared by its tests, never read from an older run."""
    path = tmp_path_factory.mktemp("zoo-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEETHROUGH_CACHE", str(path))
        yield path


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Reference accuracy: one plain forward, no helpers from the package."""
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).double().mean())


def _by_hand(x: Tensor, trigger: dict[str, Any]) -> Tensor:
    """Reference stamping from the JSON trigger: (1 - m) * x + m * p, written out."""
    m, p = torch.tensor(trigger["mask"]), torch.tensor(trigger["pattern"])
    return x * (1 - m)[None, None] + p[None] * m[None, None]


# -- config_hash and cached ---------------------------------------------------------------


def test_config_hash_is_canonical_sha256_and_order_insensitive() -> None:
    expected = hashlib.sha256(b'{"a":1,"b":[2,3],"c":{"x":null,"y":0.5}}').hexdigest()[:16]
    assert config_hash({"a": 1, "b": [2, 3], "c": {"x": None, "y": 0.5}}) == expected
    assert config_hash({"c": {"y": 0.5, "x": None}, "b": (2, 3), "a": 1}) == expected
    assert config_hash({"a": 2, "b": [2, 3], "c": {"x": None, "y": 0.5}}) != expected
    assert config_hash({"a": 1}) != config_hash({"a": 1.5}) != config_hash({"a": "1"})


@pytest.mark.parametrize("bad, error, words", [
    ({"w": torch.zeros(2)}, InputTypeError, "tolist"),
    ({"w": np.float32(1.0)}, InputTypeError, "config['w']"),
    ({"nested": {"deep": [1, {2, 3}]}}, InputTypeError, "config['nested']['deep'][1]"),
    ({"lr": float("nan")}, InputError, "NaN"),
    ({"a": {1: "int key"}}, InputTypeError, "JSON keys must be str"),  # top level: beartype objects first
])
def test_config_hash_rejects_non_json_with_the_path(bad: dict, error: type, words: str) -> None:
    with pytest.raises(error) as info:
        config_hash(bad)
    assert words in str(info.value)


class _Counter:
    """A train function that records its calls and sets known weights."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        self.calls += 1
        with torch.no_grad():
            for i, p in enumerate(model.parameters()):
                p.copy_(torch.linspace(-1, 1, p.numel()).reshape(p.shape) * (i + 1))
        return {"score": 0.25, "pair": (1, 2), "truth": {"units": [3, 1]}}


def _small() -> nn.Module:
    return DigitsMLP(8, 4, seed=1)


def test_cached_round_trip_is_bit_identical_and_trains_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEETHROUGH_CACHE", str(tmp_path))
    train = _Counter()
    config = {"kind": "demo", "seed": 3}
    first, meta1 = cached("unit_test", config, _small, train)
    path = tmp_path / "zoo" / "unit_test" / f"{config_hash(config)}.safetensors"
    assert path.is_file() and path.with_name(path.name + ".json").is_file()
    second, meta2 = cached("unit_test", config, _small, train)
    assert train.calls == 1
    _assert_same_state(first, second)
    assert meta1 == meta2 == {"score": 0.25, "pair": [1, 2], "truth": {"units": [3, 1]}, "config": config}
    assert torch.equal(second.fc1.weight, torch.linspace(-1, 1, 8 * 256).reshape(8, 256))  # what train set
    for model in (first, second):
        assert not model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    cached("unit_test", {"kind": "demo", "seed": 4}, _small, train)
    assert train.calls == 2  # another config is another entry


@pytest.mark.parametrize("damage", ["garbage", "truncated", "no sidecar", "other config", "bad sidecar"])
def test_cached_rebuilds_a_corrupt_entry(damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEETHROUGH_CACHE", str(tmp_path))
    train, config = _Counter(), {"seed": 0}
    original, _ = cached("unit_test", config, _small, train)
    path = cache_dir() / "zoo" / "unit_test" / f"{config_hash(config)}.safetensors"
    sidecar = path.with_name(path.name + ".json")
    if damage == "garbage":
        path.write_bytes(b"\x00not a safetensors file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "no sidecar":
        sidecar.unlink()
    elif damage == "other config":
        sidecar.write_text(json.dumps({"score": 0.25, "config": {"seed": 1}}))
    else:
        sidecar.write_text("{not json")
    with pytest.warns(UserWarning, match="unusable.*rebuilding"):
        rebuilt, meta = cached("unit_test", config, _small, train)
    assert train.calls == 2 and meta["config"] == config
    _assert_same_state(original, rebuilt)
    cached("unit_test", config, _small, train)
    assert train.calls == 2  # the rebuilt entry was written back


def test_cached_refuses_bad_kind_and_metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEETHROUGH_CACHE", str(tmp_path))
    with pytest.raises(InputError, match="folder name"):
        cached("../escape", {}, _small, _Counter())
    with pytest.raises(InputTypeError, match=r"\['truth'\].*tolist"):
        cached("unit_test", {}, _small, lambda m: {"truth": torch.arange(3)})
    with pytest.raises(InputError, match="reserved"):
        cached("unit_test", {}, _small, lambda m: {"config": 1})
    assert not any(tmp_path.rglob("*.safetensors"))


# -- data and triggers --------------------------------------------------------------------


def test_digits16_is_a_fixed_stratified_split_of_upsampled_digits() -> None:
    from sklearn.datasets import load_digits

    (x, y), (xt, yt) = digits16("train"), digits16("test")
    assert x.shape == (1347, 1, 16, 16) and xt.shape == (450, 1, 16, 16)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # Nearest-neighbour upsampling: each 2×2 block repeats one original pixel.
    for img in (x, xt):
        assert torch.equal(img, img[:, :, ::2, ::2].repeat_interleave(2, 2).repeat_interleave(2, 3))
    # Together the splits are exactly the original 1797 images, each once.
    raw = load_digits()
    original = sorted(map(tuple, (raw.images.reshape(-1, 64) / 16.0).astype(np.float32).tolist()))
    ours = sorted(map(tuple, torch.cat([x, xt])[:, 0, ::2, ::2].reshape(-1, 64).tolist()))
    assert ours == original
    # Stratified 75/25: every class has round(n_c / 4) test examples.
    counts = np.bincount(raw.target, minlength=10)
    assert yt.bincount(minlength=10).tolist() == [int(round(c / 4)) for c in counts]
    # Deterministic, and fresh tensors on each call.
    x[:] = 7.0
    again, y_again = digits16("train")
    assert float(again.max()) == 1.0 and torch.equal(y_again, y)


def test_stamp_closed_forms() -> None:
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    pattern = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(stamp(x, Trigger(torch.zeros(16, 16), pattern, 0, "patch")), x)
    assert torch.equal(stamp(x, Trigger(torch.ones(16, 16), pattern, 0, "patch")), pattern.expand_as(x))
    blend = stamp(x, Trigger(torch.full((16, 16), 0.25), pattern, 0, "blend"))
    torch.testing.assert_close(blend, 0.75 * x + 0.25 * pattern)  # default float32 tolerances
    with pytest.raises(InputError, match="do not fit"):
        stamp(torch.zeros(2, 3, 16, 16), Trigger(torch.zeros(16, 16), pattern, 0, "patch"))


def test_trigger_validation_equality_and_json() -> None:
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        Trigger(torch.full((4, 4), 1.5), torch.zeros(1, 4, 4), 0, "patch")
    with pytest.raises(InputError, match="target"):
        Trigger(torch.zeros(4, 4), torch.zeros(1, 4, 4), -1, "patch")
    for trigger in (random_patch_trigger(5), random_blend_trigger(5, alpha=0.2)):
        text = json.dumps(trigger.to_dict())
        assert Trigger.from_dict(json.loads(text)) == trigger
        assert hash(Trigger.from_dict(json.loads(text))) == hash(trigger)
    assert random_patch_trigger(5) != random_patch_trigger(6)
    with pytest.raises(InputError, match="exactly the keys"):
        Trigger.from_dict({"kind": "patch"})


@pytest.mark.parametrize("seed", range(20))
def test_random_patch_trigger_is_a_small_binary_square(seed: int) -> None:
    trigger = random_patch_trigger(seed)
    assert trigger == random_patch_trigger(seed) and 0 <= trigger.target < 10 and trigger.family == "patch"
    rows, cols = torch.nonzero(trigger.mask, as_tuple=True)
    side = int(rows.max() - rows.min()) + 1
    assert side in (2, 3) and int(cols.max() - cols.min()) + 1 == side and int(trigger.mask.sum()) == side ** 2
    assert set(trigger.mask.unique().tolist()) == {0.0, 1.0}
    inside = trigger.pattern[:, trigger.mask.bool()]
    assert set(inside.unique().tolist()) == {0.0, 1.0}  # at least one 0 and one 1
    assert float(trigger.pattern[:, ~trigger.mask.bool()].abs().sum()) == 0.0
    assert int(random_patch_trigger(seed, size=4).mask.sum()) == 16


def test_random_blend_trigger_and_bad_sizes() -> None:
    trigger = random_blend_trigger(3, alpha=0.2, channels=3, image_size=8)
    assert trigger.mask.shape == (8, 8) and trigger.pattern.shape == (3, 8, 8)
    assert torch.equal(trigger.mask, torch.full((8, 8), 0.2))
    assert set(trigger.pattern.unique().tolist()) == {0.0, 1.0}
    with pytest.raises(InputError, match="alpha"):
        random_blend_trigger(0, alpha=0.0)
    with pytest.raises(InputError, match="patch size"):
        random_patch_trigger(0, size=1)


# -- classifiers -------------------------------------------------------------------------


def test_masked_linear_uses_only_unmasked_weights() -> None:
    layer = DigitsMLP(8, 4, masked_head=True, seed=0).head
    assert isinstance(layer, MaskedLinear) and torch.equal(layer.mask, torch.ones(10, 4))
    layer.mask[:, 1] = 0.0
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = layer(x)
    torch.testing.assert_close(out, x @ (layer.weight * layer.mask).T + layer.bias, rtol=0, atol=1e-6)
    out.sum().backward()
    assert float(layer.weight.grad[:, 1].abs().sum()) == 0.0 and float(x.grad[:, 1].abs().sum()) == 0.0


def test_accuracy_and_attack_success_on_a_constant_model() -> None:
    class Always(nn.Module):
        def __init__(self, label: int) -> None:
            super().__init__()
            self.label = label

        def forward(self, x: Tensor) -> Tensor:
            return F.one_hot(torch.full((len(x),), self.label), 10).float()

    x, y = digits16("test")
    model = Always(3).train()
    assert accuracy(model, x, y) == pytest.approx(float((y == 3).double().mean()), abs=0)
    assert model.training  # the mode is left as it was
    trigger = random_patch_trigger(0)
    hit = 1.0 if trigger.target == 3 else 0.0
    assert attack_success(model, x, y, trigger) == hit
    with pytest.raises(InputError, match="target class"):
        attack_success(model, x[y == trigger.target], y[y == trigger.target], trigger)


def test_building_and_training_are_deterministic_and_leave_the_global_rng_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    _assert_same_state(DigitsCNN(seed=4), DigitsCNN(seed=4))
    assert not torch.equal(DigitsCNN(seed=4).conv1.weight, DigitsCNN(seed=5).conv1.weight)
    models = []
    for name in ("a", "b"):
        monkeypatch.setenv("SEETHROUGH_CACHE", str(tmp_path / name))
        models.append(trojaned_classifier("mlp", "patch", 3, epochs=2))
    (m1, meta1), (m2, meta2) = models
    _assert_same_state(m1, m2)
    assert meta1 == meta2
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]


def test_train_classifier_validates_and_clears_grads() -> None:
    model = DigitsMLP(8, 4, seed=0).eval()
    x, y = digits16("train")
    with pytest.raises(InputError, match="poison_rate"):
        train_classifier(model, x, y, epochs=1, lr=1e-3, batch_size=32, seed=0, poison_rate=1.5)
    with pytest.raises(InputError, match="N > 0"):
        train_classifier(model, x[:0], y[:0], epochs=1, lr=1e-3, batch_size=32, seed=0)
    before = _state(model)
    train_classifier(model, x[:64], y[:64], epochs=1, lr=1e-3, batch_size=32, seed=0)
    assert not model.training and all(p.grad is None for p in model.parameters())  # eval mode restored
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


TROJANED = [("mlp", "patch", 0), ("mlp", "patch", 1), ("mlp", "blend", 0), ("cnn", "patch", 0), ("cnn", "blend", 1)]
MIN_ACCURACY = {"mlp": 0.9, "cnn": 0.93}
MIN_ASR = {"patch": 0.9, "blend": 0.8}


@pytest.mark.parametrize("arch, trojan, seed", TROJANED)
def test_trojaned_classifier_learns_the_trigger_and_the_task(arch: str, trojan: str, seed: int) -> None:
    model, meta = trojaned_classifier(arch, trojan, seed)
    assert isinstance(model, DigitsMLP if arch == "mlp" else DigitsCNN) and not model.training
    expected = random_patch_trigger(seed) if trojan == "patch" else random_blend_trigger(seed, alpha=0.1)
    # the planted trigger, plus the keys games read before issue #9
    assert Trigger.from_dict(meta["trigger"]) == expected
    assert meta["trigger"] == {**expected.to_dict(), "kind": trojan, "target_class": expected.target}
    assert meta["config"]["arch"] == arch and meta["config"]["trojan"] == trojan and meta["config"]["seed"] == seed
    xt, yt = digits16("test")
    clean = _accuracy(model, xt, yt)
    others = yt != meta["trigger"]["target"]
    asr = _accuracy(model, _by_hand(xt[others], meta["trigger"]), torch.full_like(yt[others], expected.target))
    assert meta["clean_accuracy"] == pytest.approx(clean, abs=1e-12)
    assert meta["attack_success_rate"] == pytest.approx(asr, abs=1e-12)
    assert clean >= MIN_ACCURACY[arch] and asr >= MIN_ASR[trojan]


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_clean_classifier_is_accurate_and_ignores_the_triggers(arch: str) -> None:
    clean, meta = trojaned_classifier(arch, "none", 0)
    assert meta["attack_success_rate"] is None and meta["trigger"] is None
    xt, yt = digits16("test")
    assert meta["clean_accuracy"] == pytest.approx(_accuracy(clean, xt, yt), abs=1e-12)
    assert meta["clean_accuracy"] >= MIN_ACCURACY[arch]
    for trigger in (random_patch_trigger(0), random_blend_trigger(0, alpha=0.1)):
        assert attack_success(clean, xt, yt, trigger) < 0.3


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_critical_units_are_necessary_for_the_target_only(seed: int) -> None:
    model, meta = planted_critical_units(seed)
    target, critical = meta["target_class"], meta["critical_units"]
    assert meta["site"] == "act2" and meta["n_units"] == 32 and 0 <= target < 10
    assert critical == sorted(set(critical)) and len(critical) == 4 and all(0 <= u < 32 for u in critical)
    # The wiring: the target row reads only S, every other row only the rest.
    in_s = torch.zeros(32)
    in_s[critical] = 1.0
    head = model.head
    assert isinstance(head, MaskedLinear)
    assert torch.equal(head.mask[target], in_s)
    assert torch.equal(head.mask[torch.arange(10) != target], (1 - in_s).expand(9, 32))
    xt, yt = digits16("test")
    is_target = yt == target
    assert meta["clean_accuracy"] == pytest.approx(_accuracy(model, xt, yt), abs=1e-12)
    assert meta["clean_accuracy"] >= 0.9
    assert meta["target_accuracy"] == pytest.approx(_accuracy(model, xt[is_target], yt[is_target]), abs=1e-12)

    def target_accuracy_without(units: list[int]) -> float:
        out = patch(model, xt[is_target], {Site("act2", units=units): torch.zeros(len(units))})
        return float((out.argmax(-1) == target).double().mean())

    assert target_accuracy_without(critical) < 0.2
    # Each unit of S matters on its own: zeroing one unit at a time, S lowers the target's
    # mean log-probability most.
    with torch.no_grad():
        base = model(xt[is_target]).log_softmax(-1)[:, target].mean()
        drops = [float(base - patch(model, xt[is_target], {Site("act2", units=[u]): torch.zeros(1)})
                       .log_softmax(-1)[:, target].mean()) for u in range(32)]
    assert sorted(np.argsort(drops)[-4:].tolist()) == critical
    rng = np.random.default_rng(seed)
    for _ in range(5):
        control = sorted(rng.choice([u for u in range(32) if u not in critical], size=4, replace=False).tolist())
        assert target_accuracy_without(control) >= 0.8


# -- superposition -----------------------------------------------------------------------


def test_toy_model_forward_is_relu_of_wtw_x_plus_b() -> None:
    model = ToyModel(6, 2, seed=0)
    x = sample_features(0, 50, 6, sparsity=0.5)
    w, b = model.W.detach(), model.b.detach()
    torch.testing.assert_close(model(x), torch.relu(x @ w.T @ w + b), rtol=0, atol=1e-6)
    assert capture(model, x, ["hidden"])["hidden"].shape == (50, 2)


def test_sample_features_sparsity_and_range() -> None:
    x = sample_features(1, 20000, 10, sparsity=0.9)
    assert torch.equal(x, sample_features(1, 20000, 10, sparsity=0.9))
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    present = float((x > 0).double().mean())
    assert abs(present - 0.1) < 4 * math.sqrt(0.1 * 0.9 / x.numel())  # a 4-sigma binomial bound


@pytest.mark.parametrize("sparsity, superposed", [(0.9, True), (0.0, False)])
def test_toy_model_superposes_only_sparse_features(sparsity: float, superposed: bool) -> None:
    model, meta = train_toy_model(0, sparsity=sparsity)
    w = model.W.detach()
    norms = w.norm(dim=0)
    represented = [i for i in range(20) if norms[i] > 0.5]
    assert meta["represented"] == represented
    torch.testing.assert_close(torch.tensor(meta["feature_directions"]), w.T, rtol=0, atol=0)
    loads = [(w[j].abs() > 0.3)[represented].sum().item() for j in range(5)]
    assert meta["features_per_unit"] == loads
    if superposed:
        assert len(represented) > 5 and sum(loads) > 5  # more features than dimensions
    else:
        # Dense features: the 5 most important get their own (orthogonal) directions.
        assert represented == [0, 1, 2, 3, 4]
        gram = w[:, represented].T @ w[:, represented]
        torch.testing.assert_close(gram, torch.eye(5), rtol=0, atol=0.1)  # near-orthonormal, not exact


# -- sequences ---------------------------------------------------------------------------


def test_attention_matches_torch_causal_attention() -> None:
    layer = Attention(8, 2)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.randn(3, 5, 8, generator=gen)
    q, k, v = (f(x).view(3, 5, 2, 4).transpose(1, 2) for f in (layer.q, layer.k, layer.v))
    reference = layer.o(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(3, 5, 8))
    torch.testing.assert_close(layer(x), reference, rtol=1e-5, atol=1e-5)  # two summation orders


def test_first_token_task_labels() -> None:
    tokens, labels = first_token_task(7, 100)
    assert tokens.shape == (100, 8) and tokens.dtype == torch.int64 and int(tokens.max()) < 10
    assert torch.equal(labels, tokens[:, 0])
    assert torch.equal(first_token_task(7, 100)[0], tokens)


def test_first_token_transformer_solves_the_task_through_attention() -> None:
    model, meta = trained_first_token_transformer(0)
    tokens, labels = first_token_task(123, 500)
    with torch.no_grad():
        assert float((model(tokens)[:, -1].argmax(-1) == labels).double().mean()) >= 0.95
    assert meta["accuracy"] >= 0.95 and meta["task"]["read_position"] == 7 and meta["task"]["source_position"] == 0
    with torch.no_grad():
        patterns = capture(model, tokens, ["blocks.0.attn.pattern"])["blocks.0.attn.pattern"]
    assert patterns.shape == (500, 2, 8, 8)
    torch.testing.assert_close(patterns.sum(-1), torch.ones(500, 2, 8))
    assert float(patterns.triu(1).abs().max()) == 0.0  # causal
    # Only attention moves information between positions: without it, accuracy is chance.
    zeroed = patch(model, tokens, {"blocks.0.attn": torch.zeros(()), "blocks.1.attn": torch.zeros(())})
    assert float((zeroed[:, -1].argmax(-1) == labels).double().mean()) < 0.3
