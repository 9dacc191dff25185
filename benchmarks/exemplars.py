"""Throughput and memory of `top_exemplars` over a streamed dataset, against a plain forward pass.

A small CNN (3→32→64 channels on 32×32 images, site: the second conv's 16×16 maps) reads
batches of 256 images generated on the fly from a seed, so the data itself never sits in memory:

- ``plain``: ``model(batch)`` under ``torch.no_grad()`` for every batch;
- ``top_exemplars``: ``top_exemplars(model, batches, site, k=16)``: capture, per-channel spatial max
  and argmax, running top-k merge.

The two are timed interleaved (`_timing.interleaved`) over the same batches; the table quotes the
median ratio of time per pass (1 / throughput ratio). Memory: the peak resident set size of a fresh
child process running `top_exemplars` over 10k and over 100k inputs (torch's CPU allocations are
invisible to tracemalloc, so RSS is what counts).

Goal (DESIGN §8): ≥ 0.9× plain forward throughput (ratio ≤ 1.11), memory independent of the data size.

Run: ``python benchmarks/exemplars.py [--repeats N] [--quick]``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
from collections.abc import Iterator

import torch
from _timing import environment, interleaved, ratio
from torch import nn

from seethrough.neurons.exemplars import top_exemplars

BATCH = 256


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 10)).eval()


class Stream:
    """``n`` random images in batches, regenerated from a seed on every pass (re-iterable, O(batch) memory)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        for start in range(0, self.n, BATCH):
            yield torch.randn(min(BATCH, self.n - start), 3, 32, 32, generator=gen)


def _plain(model: nn.Module, data: Stream) -> None:
    with torch.no_grad():
        for x in data:
            model(x)


def _memory_child(n: int) -> None:
    model = _model()
    top_exemplars(model, Stream(n), "3", k=16)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repetitions over 5k inputs; memory at 2k/20k")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        _memory_child(args.memory_child)
        return
    repeats, n_time, sizes = (3, 5_000, (2_000, 20_000)) if args.quick else (args.repeats, 20_000, (10_000, 100_000))
    print(f"{environment()}  repeats={repeats}")
    model, data = _model(), Stream(n_time)
    times = interleaved({"plain": lambda: _plain(model, data),
                         "top_exemplars": lambda: top_exemplars(model, data, "3", k=16)}, repeats, seconds=0.0)
    for name, ts in times.items():
        print(f"{name:<14} median {statistics.median(ts):8.3f} s per {n_time} inputs   "
              f"time ratio {ratio(times, name, 'plain'):.3f}  throughput ratio {1 / ratio(times, name, 'plain'):.3f}")
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(n)], capture_output=True, text=True,
                             check=True)
        print(f"peak RSS, top_exemplars over {n:>7} inputs: {int(out.stdout.strip()) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
