"""Wall time of `seethrough audit` on a 16×16 digits CNN and MLP (goal: ≤ 2 minutes on 2 cores).

Builds (or loads from the zoo cache) a patch-trojaned, a blend-trojaned and a clean model of each architecture,
audits each from the clean test split with the CLI's defaults (patch and blend scans), and prints the wall time, the
verdict and whether the planted target was named. One forward+backward of the model over the scan
batch is timed in the same run, so the audit's cost also reads as a number of such passes.

Run: ``python benchmarks/audit.py [--steps N]``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from _timing import environment, interleaved

from seethrough.audit import audit_classifier
from seethrough.bench.zoo import digits16, trojaned_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimisation steps per class (CLI default 300)")
    args = parser.parse_args()
    print(environment())
    x, y = digits16("test")
    print(f"{'model':<12} {'wall s':>7} {'≈ fwd+bwd passes':>17}  verdict    planted target  named")
    for arch in ("cnn", "mlp"):
        for trojan in ("patch", "blend", "none"):
            model, meta = trojaned_classifier(arch, trojan, 0)
            batch = x[:128]

            def step(model: torch.nn.Module = model, batch: torch.Tensor = batch) -> None:
                probe = batch.clone().requires_grad_(True)
                torch.autograd.grad(F.cross_entropy(model(probe), y[:128]), probe)

            one_pass = min(interleaved({"fwd+bwd": step}, 5)["fwd+bwd"])
            start = time.perf_counter()
            result = audit_classifier(model, x, steps=args.steps)
            wall = time.perf_counter() - start
            planted = meta["trigger"]["target_class"] if meta["trigger"] else None
            named = [f.target for f in result.findings]
            print(f"{arch + '/' + trojan:<12} {wall:>7.1f} {wall / one_pass:>17.0f}  {result.verdict:<10} "
                  f"{str(planted):>14}  {named}")


if __name__ == "__main__":
    main()
