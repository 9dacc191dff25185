"""Shared timing for the benchmarks: candidates interleaved in one run, medians and ratios.

DESIGN §8: on shared 2-core machines, time candidates round-robin in rotating order within one
run and quote medians of per-repetition ratios, never absolute times; record the OpenMP policy.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def time_per_call(fn: Callable[[], Any], number: int) -> float:
    """Seconds per call of ``fn`` over ``number`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def interleaved(cands: dict[str, Callable[[], Any]], repeats: int, *, warmup: int = 1,
                seconds: float = 0.02) -> dict[str, list[float]]:
    """Seconds per call for each candidate and repetition, timed round-robin in rotating order.

    Each timing loops a candidate enough times that one timing lasts about ``seconds``.
    """
    for _ in range(warmup):
        for fn in cands.values():
            fn()
    numbers = {name: max(1, round(seconds / time_per_call(fn, 1))) for name, fn in cands.items()}
    names = list(cands)
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(repeats):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(time_per_call(cands[name], numbers[name]))
    return times


def ratio(times: dict[str, list[float]], name: str, reference: str) -> float:
    """Median over repetitions of ``name``'s time divided by ``reference``'s in the same repetition."""
    return statistics.median(t / r for t, r in zip(times[name], times[reference], strict=True))


def environment() -> str:
    """The settings that change timings on these machines, for the header of every benchmark."""
    malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    return (f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset (torch default)')}  "
            f"torch.get_num_threads()={torch.get_num_threads()}  torch {torch.__version__}  "
            f"malloc: {malloc or 'glibc defaults'}")
