"""Overhead of `seethrough.capture` when reading every block output, against a plain forward pass.

For four models (a small MLP, a CNN, a small ``nn.TransformerEncoder`` and MiniLM, if the ``hf`` extra
is installed) this times, under ``torch.no_grad()``:

- ``plain``: ``model(inputs)``;
- ``capture``: ``seethrough.capture(model, inputs, sites)`` with a site on every block;
- ``raw hooks``: forward hooks registered on the same modules, outputs stored in a dict, hooks removed;
- ``no-op hooks``: forward hooks that do nothing on the same modules: the floor any hook-based tool pays;
- ``captum``: Captum's ``LayerActivation`` over the same modules (the peer library).

Candidates are timed interleaved in one run: each repetition calls every candidate once, in a rotating
order, and each timing covers ``number`` calls (chosen so the plain forward takes about 20 ms). The table
quotes the median time per call and the median over repetitions of the per-repetition ratio to ``plain``,
which cancels slow drifts in machine load (DESIGN.md §8: quote ratios from one run, never absolute times).

Goal: capture ≤ 1.05× the plain forward for the CNN and the transformers, ≤ 1.10× for the small MLP,
where the fixed cost per call weighs most.

Two effects hit every hook-based candidate alike, so read ``capture`` against ``raw hooks`` too:
``nn.TransformerEncoderLayer`` leaves its fused fast path whenever a forward hook is attached to it, and
keeping activations alive makes glibc's malloc return and re-fault freed pages (the MALLOC_* variables
printed at the top, e.g. ``MALLOC_TRIM_THRESHOLD_``, change that cost).

Run: ``python benchmarks/capture.py [--repeats N] [--quick]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable
from typing import Any

import torch
from _timing import environment, interleaved, ratio
from torch import Tensor, nn

import seethrough

Case = tuple[str, nn.Module, Any, list[str]]  # name, model, inputs, site paths


def _mlp() -> Case:
    blocks = [nn.Sequential(nn.Linear(256, 256), nn.ReLU()) for _ in range(6)]
    return "mlp", nn.Sequential(*blocks), torch.randn(256, 256), [str(i) for i in range(6)]  # every block


def _cnn() -> Case:
    def block(c_in: int, c_out: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))

    model = nn.Sequential(block(3, 32), block(32, 64), block(64, 128), nn.Flatten(), nn.Linear(128 * 4 * 4, 10))
    return "cnn", model, torch.randn(64, 3, 32, 32), ["0", "1", "2", "4"]


def _transformer() -> Case:
    layer = nn.TransformerEncoderLayer(d_model=128, nhead=4, dim_feedforward=512, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=4, enable_nested_tensor=False)
    return "transformer", model, torch.randn(32, 64, 128), [f"layers.{i}" for i in range(4)]


def _minilm() -> Case | None:
    try:
        from seethrough.hf import load_minilm, tokenize

        tokenizer, model = load_minilm()
    except seethrough.LoadError as err:
        print(f"note: skipping MiniLM ({err})")
        return None
    rng = random.Random(0)
    words = "the a model reads every layer of network while small cats sit on warm mats near doors".split()
    texts = [" ".join(rng.choices(words, k=rng.randint(12, 40))) for _ in range(32)]
    inputs = tokenize(tokenizer, texts, max_length=32)
    return "minilm", model, inputs, [f"encoder.layer.{i}" for i in range(6)]


def _call(model: nn.Module, inputs: Any) -> Any:
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def _first_tensor(output: Any) -> Tensor:
    return output if isinstance(output, Tensor) else output[0]


def _raw_hooks(model: nn.Module, inputs: Any, paths: list[str]) -> dict[str, Tensor]:
    """The peer baseline: plain forward hooks that store each output in a dict."""
    store: dict[str, Tensor] = {}
    handles = [
        model.get_submodule(p).register_forward_hook(lambda m, a, out, p=p: store.__setitem__(p, _first_tensor(out)))
        for p in paths
    ]
    try:
        _call(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return store


def _noop_hooks(model: nn.Module, inputs: Any, paths: list[str]) -> None:
    """The floor: hooks that store nothing (``nn.TransformerEncoderLayer`` still leaves its fast path)."""
    handles = [model.get_submodule(p).register_forward_hook(lambda m, a, out: None) for p in paths]
    try:
        _call(model, inputs)
    finally:
        for h in handles:
            h.remove()


def _captum(model: nn.Module, inputs: Any, paths: list[str]) -> Callable[[], Any] | None:
    try:
        from captum.attr import LayerActivation
    except ImportError:
        print("note: captum is not installed; skipping its column")
        return None
    layer_act = LayerActivation(model, [model.get_submodule(p) for p in paths])
    if isinstance(inputs, Tensor):
        return lambda: layer_act.attribute(inputs)
    # MiniLM: BertModel(input_ids, attention_mask, token_type_ids) positionally.
    extra = (inputs["attention_mask"], inputs.get("token_type_ids"))
    return lambda: layer_act.attribute(inputs["input_ids"], additional_forward_args=extra)


def _candidates(model: nn.Module, inputs: Any, paths: list[str]) -> dict[str, Callable[[], Any]]:
    cands: dict[str, Callable[[], Any]] = {
        "plain": lambda: _call(model, inputs),
        "capture": lambda: seethrough.capture(model, inputs, paths),
        "raw hooks": lambda: _raw_hooks(model, inputs, paths),
        "no-op hooks": lambda: _noop_hooks(model, inputs, paths),
    }
    captum = _captum(model, inputs, paths)
    if captum is not None:
        cands["captum"] = captum
    return cands


def _check_agree(model: nn.Module, inputs: Any, paths: list[str]) -> None:
    ours, raw = seethrough.capture(model, inputs, paths), _raw_hooks(model, inputs, paths)
    assert all(torch.equal(ours[p], raw[p]) for p in paths), "capture and raw hooks disagree"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed repetitions per candidate (default 50)")
    parser.add_argument("--quick", action="store_true", help="5 repetitions, 1 warm-up: a smoke test")
    args = parser.parse_args()
    repeats, warmup = (5, 1) if args.quick else (args.repeats, 3)

    torch.manual_seed(0)
    print(f"{environment()}  repeats={repeats}")
    print("ratio = median over repetitions of (candidate time / plain time in the same repetition)\n")
    print(f"{'model':<12} {'candidate':<11} {'median ms':>10} {'ratio':>7}  sites")
    for make in (_mlp, _cnn, _transformer, _minilm):
        case = make()
        if case is None:
            continue
        name, model, inputs, paths = case
        model.eval()
        with torch.no_grad():
            _check_agree(model, inputs, paths)
            times = interleaved(_candidates(model, inputs, paths), repeats, warmup=warmup)
        for cand, ts in times.items():
            print(f"{name:<12} {cand:<11} {statistics.median(ts) * 1e3:>10.3f} {ratio(times, cand, 'plain'):>7.3f}"
                  f"  {len(paths)}")
        print()


if __name__ == "__main__":
    main()
