"""Speed of `seethrough.representations.cka` against the numpy formulas and n × n HSIC; memory of `StreamingCKA`.

Formulas (issue #13's goal): at (n, d) = (200,000, 64) and (50,000, 512), two related float32
representations, this times ``ours`` (`cka`: for float32 inputs this large, float32 products over
4096-row chunks summed in float64 after an exact mean correction) against the numpy
feature-space formula ``||Yᶜᵀ Xᶜ||² / (||Xᶜᵀ Xᶜ|| ||Yᶜᵀ Yᶜ||)`` in float64 (``x.astype(float64)``,
centering, three products) and in float32 (same, no conversion), all on the same float32 arrays,
and reports each one's distance to the float64 value. Goal: ≤ 1.2× float64, ≤ 2× float32, within
1e-6 of float64.

Speed: for n in (1000, 5000) examples of two d = 256 float32 representations, this times

- ``ours``: `seethrough.representations.cka` (float64, feature space: O(n d²) time, O(d²) memory);
- ``torch-cka``: the approach of the ``torch_cka`` package (AntixK/PyTorch-Model-Compare): Gram
  matrices K = X Xᵀ and L = Y Yᵀ with zeroed diagonals, the unbiased HSIC of Nguyen et al. (trace of
  K @ L, an n³ matmul) for (K, L), (K, K) and (L, L), in the input dtype (float32);
- ``naive HSIC``: Kornblith et al.'s biased HSIC with an explicit centering matrix H = I − 11ᵀ/n
  (HKH and HLH, 4 n³ matmuls), as in the many ports of the reference notebook; same value as ours.
  Timed at n = 1000 only: at n = 5000 one call takes about half a minute on two cores.

Candidates are timed interleaved: each repetition calls every candidate in a rotating order, and each
timing covers enough calls to last about 0.2 s. The table quotes the median time per call and the
median over repetitions of the per-repetition ratio to ``ours`` (DESIGN.md §8: ratios from one run,
never absolute times). Goal (DESIGN.md §8): ≥ 50× faster than torch-cka.

Memory: `StreamingCKA` fed n = 10k and 100k rows of (256, 256) features in batches of 1000, each in a
fresh subprocess, reporting the bytes of the tensors it holds and the growth of the process's peak
resident set (``VmHWM``, reset just before) while streaming; for contrast, ``cka`` on the materialised
rows. (tracemalloc does not see torch's CPU allocator, hence RSS.) Goal: streaming memory independent
of n. The whole run takes about 1.5 minutes on two cores.

Streaming at scale: `StreamingCKA` fed n = 1,000,000 rows of (256, 256) float32 features in
batches of 10,000 (generated on the fly), with its state bytes and the peak-RSS growth.

Run: ``python benchmarks/cka.py [--repeats N] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from _timing import environment, interleaved, ratio
from torch import Tensor

from seethrough.representations import StreamingCKA, cka

D = 256
BATCH = 1000
BIG_BATCH = 10_000  # rows per batch at n = 1,000,000


def _related(n: int, d: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    y = torch.tanh(x @ torch.randn(d, d, generator=gen) / d**0.5) + 0.5 * torch.randn(n, d, generator=gen)
    return x, y


def torch_cka_style(x: Tensor, y: Tensor) -> float:
    """Unbiased-HSIC CKA on one batch, computed the way the torch_cka package does (trace(K @ L))."""

    def hsic(k: Tensor, l_: Tensor) -> float:
        n = k.shape[0]
        ones = torch.ones(n, 1, dtype=k.dtype)
        total = torch.trace(k @ l_)
        total = total + float(ones.T @ k @ ones @ ones.T @ l_ @ ones) / ((n - 1) * (n - 2))
        total = total - float(ones.T @ k @ l_ @ ones) * 2 / (n - 2)
        return float(total) / (n * (n - 3))

    k, l_ = x @ x.T, y @ y.T
    k.fill_diagonal_(0.0)
    l_.fill_diagonal_(0.0)
    return hsic(k, l_) / (hsic(k, k) ** 0.5 * hsic(l_, l_) ** 0.5)


def naive_hsic(x: Tensor, y: Tensor) -> float:
    """Kornblith et al.'s biased HSIC with an explicit centering matrix (the textbook n × n form)."""
    n = x.shape[0]
    h = torch.eye(n, dtype=x.dtype) - 1.0 / n
    kc, lc = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float((kc * lc).sum() / ((kc * kc).sum().sqrt() * (lc * lc).sum().sqrt()))


def formula64(x: np.ndarray, y: np.ndarray) -> float:
    """The numpy feature-space formula in float64 (the inputs converted first)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def formula32(x: np.ndarray, y: np.ndarray) -> float:
    """The same formula in the inputs' float32."""
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def formulas(sizes: tuple[tuple[int, int], ...], repeats: int) -> None:
    print(f"{'n':>8} {'d':>4} {'candidate':<12} {'median ms':>10} {'x f64':>6} {'x f32':>6}  |value - f64|")
    for n, d in sizes:
        x, y = _related(n, d)
        y = y + 3.0  # off the origin, as activations after a ReLU are
        xn, yn = x.numpy(), y.numpy()
        cands: dict[str, Callable[[], Any]] = {
            "ours": lambda x=x, y=y: cka(x, y),
            "numpy f64": lambda xn=xn, yn=yn: formula64(xn, yn),
            "numpy f32": lambda xn=xn, yn=yn: formula32(xn, yn),
        }
        values = {name: fn() for name, fn in cands.items()}
        assert abs(values["ours"] - values["numpy f64"]) < 1e-6, "cka is more than 1e-6 from the float64 formula"
        times = interleaved(cands, repeats, warmup=0, seconds=0.5)
        for name, ts in times.items():
            print(f"{n:>8} {d:>4} {name:<12} {statistics.median(ts) * 1e3:>10.1f} "
                  f"{ratio(times, name, 'numpy f64'):>6.2f} {ratio(times, name, 'numpy f32'):>6.2f}  "
                  f"{abs(values[name] - values['numpy f64']):.1e}")
    print()


def speed(repeats: dict[int, int]) -> None:
    print(f"{'n':>6} {'candidate':<11} {'median ms':>11} {'× ours':>8}  value")
    for n, reps in repeats.items():
        x, y = _related(n, D)
        cands: dict[str, Callable[[], Any]] = {
            "ours": lambda x=x, y=y: cka(x, y),
            "torch-cka": lambda x=x, y=y: torch_cka_style(x, y),
        }
        if n <= 2000:
            cands["naive HSIC"] = lambda x=x, y=y: naive_hsic(x, y)
            ref = naive_hsic(x.double(), y.double())
            assert abs(cka(x, y) - ref) < 1e-10, "cka disagrees with the float64 n × n reference"
        values = {name: fn() for name, fn in cands.items()}
        times = interleaved(cands, reps, warmup=0, seconds=0.2)
        for name, ts in times.items():
            print(f"{n:>6} {name:<11} {statistics.median(ts) * 1e3:>11.2f} {ratio(times, name, 'ours'):>8.1f}  "
                  f"{values[name]:.6f}")
        print()


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (Linux ≥ 4.0: writing 5 to /proc/self/clear_refs); else keep it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_kib() -> int:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _state_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of every tensor reachable from ``obj``'s attributes."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_state_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_state_bytes(v, seen) for v in obj)
    return _state_bytes(vars(obj), seen) if hasattr(obj, "__dict__") else 0


def memory_child(mode: str, n: int) -> None:
    """Run in a subprocess: stream (or materialise) n rows and print the peak-RSS growth."""
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(D, D, generator=gen) / D**0.5
    rows = BIG_BATCH if n >= 1_000_000 else BATCH

    def batch() -> tuple[Tensor, Tensor]:
        x = torch.randn(rows, D, generator=gen)
        return x, torch.tanh(x @ mix)

    acc = StreamingCKA()
    acc.update(*batch())  # warm-up: allocator pools, BLAS buffers
    _ = acc.value
    _reset_peak()
    base = _peak_kib()
    if mode == "stream":
        acc = StreamingCKA()
        for _ in range(n // rows):
            acc.update(*batch())
        value, state = acc.value, _state_bytes(acc)
    else:
        parts = [batch() for _ in range(n // rows)]
        value, state = cka(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])), 0
    print(f"{(_peak_kib() - base) / 1024:.1f} {state} {value:.6f}")


def memory(sizes: tuple[int, ...], big: int | None) -> None:
    print(f"{'mode':<22} {'n':>7} {'state MiB':>10} {'peak RSS growth MiB':>20}  value")
    runs = [("stream", n) for n in sizes] + [("concat", n) for n in sizes] + ([("stream", big)] if big else [])
    for mode, n in runs:
        out = subprocess.run([sys.executable, __file__, "--memory-child", mode, str(n)], check=True,
                             capture_output=True, text=True, env=os.environ.copy()).stdout.split()
        growth, state, value = float(out[0]), int(out[1]), out[2]
        label = "StreamingCKA" if mode == "stream" else "cka on all rows"
        state_mib = f"{state / 2**20:.3f}" if mode == "stream" else "-"
        print(f"{label:<22} {n:>7} {state_mib:>10} {growth:>20.1f}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed repetitions at n = 1000 (default 15)")
    parser.add_argument("--quick", action="store_true", help="few repetitions and sizes: a smoke test")
    parser.add_argument("--formula-repeats", type=int, default=7, help="timed repetitions of the formula rows")
    parser.add_argument("--memory-child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return

    torch.manual_seed(0)
    print(f"{environment()}  d={D}")
    print("× ours = median over repetitions of (candidate time / ours time in the same repetition)\n")
    # torch-cka and the naive form are O(n³): at n = 5000 one call takes seconds, so fewer repetitions.
    formulas(((20_000, 64), (5_000, 512)) if args.quick else ((200_000, 64), (50_000, 512)),
             2 if args.quick else args.formula_repeats)
    speed({1000: 3, 2000: 2} if args.quick else {1000: args.repeats, 5000: 3})
    memory((2_000, 20_000) if args.quick else (10_000, 100_000), None if args.quick else 1_000_000)


if __name__ == "__main__":
    main()
