"""Time of `seethrough.subnetworks.clusterability` on a 3-hidden-layer, 256-unit MLP (20 shuffles).

The network is 784 → 256 → 256 → 256 → 10 (an MNIST-sized MLP, randomly initialised: the time does not
depend on the weights' values), so the unit graph has 784 + 3·256 + 10 = 1562 nodes. One call of
`clusterability(model, n_modules, n_shuffles=20)` builds the graph, removes dead units, and runs 21
spectral partitions (the model's and 20 within-layer shuffles': each a dense eigendecomposition of
the normalised adjacency for the first ``n_modules`` eigenvectors, then k-means with 10 restarts).
Also timed: one `partition` call (one spectral cut), and, for the functional view, one
`functional_graph(..., method="ablation")` on 256 inputs (1562 - 784 = 778 single-unit ablations
stacked as copies).

Goal (issue #12): the clusterability call, 20 shuffles included, in under a minute on 2 cores. This
goal is an absolute time, so the table quotes medians over ``--repeats`` calls (the minimum too) and
the thread settings; on these shared machines another process on the cores slows every call.

Run: ``python benchmarks/partition.py [--repeats N] [--modules K]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _timing import environment
from torch import nn

from seethrough.subnetworks import clusterability, functional_graph, partition

SIZES = (784, 256, 256, 256, 10)


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(SIZES) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _seconds(fn, repeats: int) -> list[float]:  # noqa: ANN001 - any zero-argument callable
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modules", type=int, default=4)
    args = parser.parse_args()
    model = mlp()
    x = torch.randn(256, SIZES[0], generator=torch.Generator().manual_seed(1))
    print(environment())
    print(f"MLP {' → '.join(map(str, SIZES))}: {sum(SIZES)} nodes; n_modules={args.modules}")
    rows = {
        "partition (1 spectral cut)": lambda: partition(model, args.modules),
        "clusterability (20 shuffles)": lambda: clusterability(model, args.modules, n_shuffles=20),
        "functional_graph (ablation, 256 inputs)": lambda: functional_graph(model, x, method="ablation"),
    }
    print(f"{'call':42s} {'median s':>9s} {'min s':>7s}")
    for name, fn in rows.items():
        times = _seconds(fn, args.repeats)
        print(f"{name:42s} {statistics.median(times):9.2f} {min(times):7.2f}")
    z = clusterability(model, args.modules, n_shuffles=20).z_score
    print(f"goal: clusterability with 20 shuffles < 60 s on 2 cores (z of this random MLP: {z:.2f})")


if __name__ == "__main__":
    main()
