"""Cost of `seethrough audit` on a 16×16 digits CNN and MLP: the K-Arm scan beside the full scan (issue #11).

Builds (or loads from the zoo cache) a patch-trojaned, a blend-trojaned and a clean model of each
architecture (zoo seed 0 by default) and audits each from the clean test split twice, with
``schedule="k-arm"`` (the default) and ``schedule="full"`` (every class searched to the end, plain
Neural Cleanse's cost). For each it prints the forward+backward passes of the model the trigger
searches spent (counted: examples through the model with a backward pass / batch size, summed over the
families scanned; `NeuralCleanse.passes`), the wall time, the verdict and the named targets beside the
planted one. The goal (issue #11): ≤ 2,500 passes per audit with the full scan's verdicts and targets.

Run: ``python benchmarks/audit.py [--steps N] [--seed S] [--families patch,blend]``.
"""

from __future__ import annotations

import argparse
import time

from _timing import environment

from seethrough.audit import scan
from seethrough.bench.zoo import digits16, trojaned_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimisation steps per class (CLI default 300)")
    parser.add_argument("--seed", type=int, default=0, help="zoo seed of the models")
    parser.add_argument("--families", default="patch,blend", help="trigger families scanned, comma-separated")
    args = parser.parse_args()
    families = tuple(args.families.split(","))
    print(environment())
    x, _ = digits16("test")
    print(f"families {', '.join(families)}; {args.steps} steps; zoo seed {args.seed}")
    print(f"{'model':<12} {'schedule':<8} {'passes':>7} {'wall s':>7}  {'verdict':<12} {'planted':>7}  named  "
          "gaps")
    for arch in ("cnn", "mlp"):
        for trojan in ("patch", "blend", "none"):
            model, meta = trojaned_classifier(arch, trojan, args.seed)
            planted = meta["trigger"]["target"] if meta["trigger"] else None
            for schedule in ("k-arm", "full"):
                start = time.perf_counter()
                result = scan(model, x, steps=args.steps, families=families, schedule=schedule)
                wall = time.perf_counter() - start
                passes = sum(r.passes for r in result.scans.values())
                named = sorted({f.target for f, v in zip(result.findings, result.validations, strict=True)
                                if v.validated})
                gaps = " ".join(f"{f}={g:.2f}" for f, g in result.gaps.items())
                print(f"{arch + '/' + trojan:<12} {schedule:<8} {passes:>7.0f} {wall:>7.1f}  {result.verdict:<12} "
                      f"{planted!s:>7}  {named!s:<6} {gaps}", flush=True)


if __name__ == "__main__":
    main()
