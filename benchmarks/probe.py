"""Benchmark: a linear probe on 10,000 × 512 activations with 10 classes, against scikit-learn.

Issue #13's goal: `LinearProbe` at scikit-learn's `LogisticRegression` accuracy (the same
objective, L2 with C = 1, multinomial, intercept unpenalised) and no slower. The activations are a
fixed random 10-class Gaussian mixture in 512 dimensions with anisotropic noise (8,000 rows to fit,
2,000 held out). Both fit raw features (``standardize=False``) and both with standardisation
(scikit-learn: a StandardScaler pipeline). Timed round-robin in one run (benchmarks/_timing.py);
we quote medians of per-repetition ratios. Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/probe.py``.
"""

from __future__ import annotations

import statistics
import warnings

import numpy as np
import torch
from _timing import environment, interleaved, ratio
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from seethrough.representations import LinearProbe

N, N_TEST, D, K = 10_000, 2_000, 512, 10


def activations(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """10-class mixture: class means in a 32-d subspace, anisotropic noise (scales 0.5 to 3) in all 512."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (N,), generator=g)
    basis = torch.linalg.qr(torch.randn(D, 32, generator=g))[0]
    means = torch.randn(K, 32, generator=g) @ basis.T * 1.2
    noise = torch.randn(N, D, generator=g) * torch.linspace(0.5, 3.0, D)
    return (means[y] + noise).float().numpy(), y.numpy()


def main() -> None:
    x, y = activations()
    x_fit, y_fit, x_test, y_test = x[:-N_TEST], y[:-N_TEST], x[-N_TEST:], y[-N_TEST:]
    fitted: dict[str, object] = {}

    def make(name: str, build):  # noqa: ANN001, ANN202 - small benchmark closures
        def run() -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                fitted[name] = build().fit(x_fit, y_fit)
        return run

    cands = {
        "sklearn": make("sklearn", lambda: LogisticRegression(C=1.0)),
        "LinearProbe": make("LinearProbe", lambda: LinearProbe(C=1.0, standardize=False)),
        "sklearn+scaler": make("sklearn+scaler", lambda: make_pipeline(StandardScaler(), LogisticRegression(C=1.0))),
        "LinearProbe(standardize)": make("LinearProbe(standardize)", lambda: LinearProbe(C=1.0)),
    }
    times = interleaved(cands, repeats=3, warmup=1, seconds=0.0)
    print(f"linear probe, {N - N_TEST} x {D} fit, {N_TEST} held out, {K} classes")
    print(environment())
    print(f"{'fit':<26} {'held-out accuracy':>18} {'median s':>9} {'ratio to sklearn':>17}")
    for name, reference in (("sklearn", "sklearn"), ("LinearProbe", "sklearn"),
                            ("sklearn+scaler", "sklearn+scaler"), ("LinearProbe(standardize)", "sklearn+scaler")):
        accuracy = float((np.asarray(fitted[name].predict(x_test)) == y_test).mean())  # type: ignore[attr-defined]
        print(f"{name:<26} {accuracy:>18.4f} {statistics.median(times[name]):>9.2f} "
              f"{ratio(times, name, reference):>17.2f}")
    ours, ref = fitted["LinearProbe"], fitted["sklearn"]
    gap = float(np.abs(ours.predict_proba(x_test) - ref.predict_proba(x_test)).max())  # type: ignore[attr-defined]
    print(f"max |probability difference| LinearProbe vs sklearn on held-out rows: {gap:.2e}")


if __name__ == "__main__":
    main()
