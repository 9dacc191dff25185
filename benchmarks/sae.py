"""SAE training throughput and streaming memory (issue #14, DESIGN §8).

1. Throughput: one epoch of `SparseAutoencoder.fit` (TopK, Adam, decoder renormalisation, dead-latent
   bookkeeping) against the plain forward+backward of the same SAE over the same batches, timed
   interleaved; the goal is fit ≥ 0.8× the plain pass (ratio of times ≤ 1.25).
   The same for a `Transcoder` (predicting a module's output from its input) against its plain
   forward+backward.
2. Memory: peak resident memory of fitting from a model's site with `site_activations` (streamed,
   one chunk at a time) for n, 4n and 16n inputs, each in a fresh process; the goal is a flat peak.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sae.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import torch
from _timing import environment, interleaved, ratio

from seethrough.representations import SparseAutoencoder, Transcoder

N, D, N_LATENTS, K, BATCH = 8192, 64, 512, 16, 256


def _plain_forward_backward(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    g = torch.Generator().manual_seed(0)
    w_dec = torch.randn(N_LATENTS, D, generator=g)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    w_enc, b_enc, b_dec = w_dec.clone().requires_grad_(), torch.zeros(N_LATENTS, requires_grad=True), \
        torch.zeros(D, requires_grad=True)
    w_dec.requires_grad_()
    for i in range(0, x.shape[0], BATCH):
        batch = x[i:i + BATCH]
        target = batch if y is None else y[i:i + BATCH]
        pre = (batch - b_dec) @ w_enc.T + b_enc
        top = pre.topk(K, dim=1)
        codes = torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))
        loss = ((codes @ w_dec + b_dec - target) ** 2).sum(1).mean()
        loss.backward()


def _fit(x: torch.Tensor) -> None:
    SparseAutoencoder(N_LATENTS, k=K, batch_size=BATCH, max_epochs=1).fit(x)


def throughput() -> None:
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(1))
    times = interleaved({"plain": lambda: _plain_forward_backward(x), "fit": lambda: _fit(x)}, repeats=9,
                        seconds=0.5)
    r = ratio(times, "fit", "plain")
    print(f"throughput: fit / plain forward+backward time = {r:.2f} (fit at {1 / r:.2f}× the plain pass; "
          f"goal ≥ 0.8×)  [{N} rows, d={D}, {N_LATENTS} latents, k={K}, batch {BATCH}]")
    y = torch.relu(x @ torch.randn(D, D, generator=torch.Generator().manual_seed(2)))
    times = interleaved({"plain": lambda: _plain_forward_backward(x, y),
                         "fit": lambda: Transcoder(N_LATENTS, k=K, batch_size=BATCH, max_epochs=1).fit(x, y)},
                        repeats=9, seconds=0.5)
    r = ratio(times, "fit", "plain")
    print(f"transcoder: fit / plain forward+backward time = {r:.2f} (fit at {1 / r:.2f}× the plain pass; "
          f"goal ≥ 0.8×)")


_CHILD = """
import resource, sys, warnings, torch
from torch import nn
from seethrough.representations import SparseAutoencoder, site_activations
n = int(sys.argv[1])
model = nn.Sequential(nn.Linear(8, 512), nn.ReLU()).eval()
inputs = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    SparseAutoencoder(256, k=8, max_epochs=1).fit(site_activations(model, inputs, "1", batch_size=512))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
"""


def memory() -> None:
    rows = {}
    for n in (20_000, 80_000, 320_000):
        out = subprocess.run([sys.executable, "-c", _CHILD, str(n)], capture_output=True, text=True, check=True)
        rows[n] = int(out.stdout.strip().splitlines()[-1]) / 1024
    print("peak RSS growth while fitting from a site (MiB): " + json.dumps({str(k): round(v, 1) for k, v in rows.items()})
          + "  (the activations alone would be "
          + ", ".join(f"{n * 512 * 4 / 2**20:.0f}" for n in rows) + " MiB)")


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    print(environment())
    throughput()
    memory()
