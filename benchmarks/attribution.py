"""Cost of `seethrough.neurons.integrated_gradients` against one fused forward+backward and against Captum.

For two digits-sized models from the zoo (an MLP 256→128→64→10 and the small CNN on 1×16×16 images),
batch 32, 50 Gauss–Legendre steps, this times:

- ``fwd+bwd``: one forward and one backward (``torch.autograd.grad`` with respect to the input) over the
  fused ``(50 × 32)`` inputs, built once outside the timing: the floor any batched IG pays;
- ``ours``: ``integrated_gradients(model, x, target)`` (which also runs one no-grad forward of the 2 × 32
  endpoints for the completeness ``delta``);
- ``captum``: Captum's ``IntegratedGradients(model).attribute(x, target=target)`` with its defaults
  (``internal_batch_size=None``: all steps in one pass; no convergence delta).

Candidates are timed interleaved in one run: each repetition calls every candidate once, in a rotating
order, and each timing covers ``number`` calls (chosen so the reference takes about 20 ms). The table quotes
the median time per call and the median over repetitions of the per-repetition ratios to the reference and
to Captum, which cancels slow drifts in machine load (DESIGN.md §8: ratios from one run, never absolute
times). Goal: ``ours`` ≤ 1.1× ``fwd+bwd`` and ≤ 1.0× ``captum``.

A second table compares SmoothGrad (50 samples, signed gradient) with Captum's
``NoiseTunnel(Saliency)`` and unit conductance at a hidden layer with Captum's ``LayerConductance``
(both 50 samples/steps, everything in one pass on both sides), same models and inputs.

Run: ``python benchmarks/attribution.py [--repeats N] [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import torch
from _timing import environment, interleaved, ratio
from torch import Tensor, nn

from seethrough.bench.zoo import DigitsCNN, DigitsMLP
from seethrough.neurons import integrated_gradients
from seethrough.neurons.conductance import conductance
from seethrough.neurons.smoothing import smoothgrad

N_STEPS = 50
BATCH = 32


def _fused_forward_backward(model: nn.Module, x: Tensor, target: Tensor) -> Callable[[], Any]:
    """The reference: one forward+backward over ``N_STEPS`` stacked copies of the batch."""
    fused = x.repeat(N_STEPS, *[1] * (x.ndim - 1))
    index = target.repeat(N_STEPS)[:, None]

    def run() -> Tensor:
        leaf = fused.detach().requires_grad_()
        return torch.autograd.grad(model(leaf).gather(1, index).sum(), leaf)[0]

    return run


def _candidates(model: nn.Module, x: Tensor, target: Tensor) -> dict[str, Callable[[], Any]]:
    cands: dict[str, Callable[[], Any]] = {
        "fwd+bwd": _fused_forward_backward(model, x, target),
        "ours": lambda: integrated_gradients(model, x, target, n_steps=N_STEPS),
    }
    try:
        from captum.attr import IntegratedGradients
    except ImportError:
        print("note: captum is not installed; skipping its column")
        return cands
    ig = IntegratedGradients(model)
    cands["captum"] = lambda: ig.attribute(x, target=target, n_steps=N_STEPS)
    return cands


def _check_agree(model: nn.Module, x: Tensor, target: Tensor) -> str:
    ours = integrated_gradients(model, x, target, n_steps=N_STEPS).values
    try:
        from captum.attr import IntegratedGradients
    except ImportError:
        return "n/a"
    theirs = IntegratedGradients(model).attribute(x, target=target, n_steps=N_STEPS)
    err = float((ours - theirs).abs().max() / theirs.abs().max())
    assert err < 1e-4, f"ours and captum disagree: max relative error {err:.2e}"
    return f"{err:.1e}"


def _other_methods(model: nn.Module, layer: str, x: Tensor, target: Tensor) -> dict[str, Callable[[], Any]]:
    """SmoothGrad and conductance, ours and Captum's, keyed ``"<method> ours"`` / ``"<method> captum"``."""
    cands: dict[str, Callable[[], Any]] = {
        "smoothgrad ours": lambda: smoothgrad(model, x, target, n_samples=N_STEPS, stdev=0.15),
        "conductance ours": lambda: conductance(model, x, target, site=layer, n_steps=N_STEPS,
                                                method="riemann_trapezoid"),
    }
    try:
        from captum.attr import LayerConductance, NoiseTunnel, Saliency
    except ImportError:
        return cands
    tunnel, lc = NoiseTunnel(Saliency(model)), LayerConductance(model, model.get_submodule(layer))
    cands["smoothgrad captum"] = lambda: tunnel.attribute(x.clone().requires_grad_(), nt_type="smoothgrad",
                                                          nt_samples=N_STEPS, stdevs=0.15, abs=False, target=target)
    cands["conductance captum"] = lambda: lc.attribute(x, target=target, n_steps=N_STEPS, method="riemann_trapezoid")
    return cands


def _ratio(times: dict[str, list[float]], name: str, reference: str) -> str:
    return f"{ratio(times, name, reference):.3f}" if reference in times else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="timed repetitions per candidate (default 40)")
    parser.add_argument("--quick", action="store_true", help="5 repetitions, 1 warm-up: a smoke test")
    args = parser.parse_args()
    repeats, warmup = (5, 1) if args.quick else (args.repeats, 3)

    torch.manual_seed(0)
    print(f"{environment()}  repeats={repeats}  n_steps={N_STEPS}  batch={BATCH}")
    print("ratios = median over repetitions of (candidate time / other's time in the same repetition)\n")
    print(f"{'model':<6} {'candidate':<9} {'median ms':>10} {'vs fwd+bwd':>11} {'vs captum':>10}  agreement")
    for name, model in (("mlp", DigitsMLP(128, 64, seed=0)), ("cnn", DigitsCNN(seed=0))):
        model.eval()
        x = torch.rand(BATCH, 1, 16, 16, generator=torch.Generator().manual_seed(1))
        target = torch.arange(BATCH) % 10
        agreement = _check_agree(model, x, target)
        times = interleaved(_candidates(model, x, target), repeats, warmup=warmup)
        for cand, ts in times.items():
            print(f"{name:<6} {cand:<9} {statistics.median(ts) * 1e3:>10.3f} {_ratio(times, cand, 'fwd+bwd'):>11} "
                  f"{_ratio(times, cand, 'captum'):>10}  {agreement if cand == 'ours' else ''}")
        print()
        others = interleaved(_other_methods(model, "fc2" if name == "mlp" else "conv2", x, target), repeats,
                             warmup=warmup)
        for method in ("smoothgrad", "conductance"):
            theirs = f"{method} captum"
            versus = f"{ratio(others, f'{method} ours', theirs):.3f}" if theirs in others else "-"
            print(f"{name:<6} {method:<11} ours {statistics.median(others[f'{method} ours']) * 1e3:>9.3f} ms  "
                  f"vs captum {versus}")
        print()


if __name__ == "__main__":
    main()
