"""Speed of the diagonal Fisher of `seethrough.weights.importance` against the passes it needs.

The empirical Fisher over n examples needs n per-example gradients. For an MLP (64 → 256 → 256 → 10)
and a small CNN on n examples, this times

- ``ours``: ``importance(model, x, y, method="fisher")``: ``vmap(grad(...))`` over chunks of 64 examples
  (torch.func), including its input checks and the eval-mode switch;
- ``loop``: the reference the issue names, a Python loop of n forward+backward passes of one example
  each on the model itself (``zero_grad``, ``loss.backward()``, square and add ``p.grad``): exactly
  the n per-example passes the Fisher needs;
- ``batched``: Avalanche-style EWC importance, squared gradients of mini-batch mean losses (batch 32),
  i.e. ``importance(..., variant="batched", batch_size=32)``: cheaper but a different quantity (it
  shrinks with the batch size; see the known-task-weights game and tests/weights).

Candidates are timed interleaved (each repetition calls all in rotating order); the table gives the
median time per call and the median of per-repetition ratios to ``loop``. Goal (DESIGN.md §8 and issue
#15): ``ours`` ≤ 1.2× the n per-example forward+backward passes (the ``loop`` column), i.e. ratio ≤ 1.2.

Run: ``OMP_NUM_THREADS=1 python benchmarks/weights.py [--repeats N] [--n N]``.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from _timing import environment, interleaved, ratio
from torch import Tensor, nn

from seethrough.weights import importance


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).eval()


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()


def loop_fisher(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """n forward+backward passes of one example each: the per-example passes the Fisher needs."""
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for n, p in params.items():
            total[n] += p.grad.square()
    model.zero_grad(set_to_none=True)
    return {n: t / len(x) for n, t in total.items()}


def run(name: str, model: nn.Module, x: Tensor, y: Tensor, repeats: int) -> None:
    reference = loop_fisher(model, x, y)
    ours = importance(model, x, y, method="fisher").scores
    worst = max(float((ours[n] - reference[n]).abs().max()) for n in reference)
    times = interleaved({
        "loop": lambda: loop_fisher(model, x, y),
        "ours": lambda: importance(model, x, y, method="fisher"),
        "batched": lambda: importance(model, x, y, method="fisher", variant="batched", batch_size=32),
    }, repeats, seconds=0.2)
    print(f"\n{name}: n = {len(x)}, {sum(p.numel() for p in model.parameters())} parameters; "
          f"max |ours - loop| = {worst:.2e}")
    print(f"{'candidate':<10} {'median s/call':>14} {'ratio to loop':>14}")
    for cand in ("loop", "ours", "batched"):
        print(f"{cand:<10} {statistics.median(times[cand]):>14.5f} {ratio(times, cand, 'loop'):>14.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n", type=int, default=256)
    args = parser.parse_args()
    print(environment())
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    run("MLP 64-256-256-10", mlp(), torch.randn(args.n, 64, generator=gen),
        torch.randint(0, 10, (args.n,), generator=gen), args.repeats)
    run("CNN 1x16x16, 8 and 16 channels", cnn(), torch.randn(args.n, 1, 16, 16, generator=gen),
        torch.randint(0, 10, (args.n,), generator=gen), args.repeats)


if __name__ == "__main__":
    main()
