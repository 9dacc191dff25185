"""Cost of `seethrough audit` on a 16×16 digits CNN and MLP: the K-Arm scan beside the full scan (issue #11).

Builds (or loads from the zoo cache) a patch-, a blend- and a warp-trojaned and a clean model of each
architecture (zoo seed 0 by default) and audits each from the clean test split twice, with
``schedule="k-arm"`` (the default) and ``schedule="full"`` (every class searched to the end, plain
Neural Cleanse's cost), scanning the families the image audit scans by default
(`seethrough.audit.verdict.DEFAULT_FAMILIES`: patch, blend and warp) unless ``--families`` says
otherwise. For each it prints:

- ``scan``: the forward+backward passes of the model the trigger searches spent (examples through the
  model with a backward pass / the batch size of 128, summed over the families scanned;
  `NeuralCleanse.passes`), and the split per family;
- ``+refine``: the refinement restarts' passes as the audit records them (``findings.json``'s
  ``searched.refinement_passes``), and beside it (``hook``) the passes the rest of the audit spent with
  gradients on, counted independently by a forward hook on the model (examples through it while
  autograd is on / 128) less the scans' own count; on a model nothing is flagged in, both are 0, which
  checks the scans' count against the hook's. The hook's is an upper bound: a forward made with
  autograd on but no backward counts too (a one-row input check per refined trigger); forward-only
  passes made without autograd (validation, the refinement's bisection and placement) are not
  forward+backward passes and count in neither;
- the wall time, the verdict, the planted target and the validated targets the audit named, and each
  family's gap; under an "inconclusive" verdict, the classes searched to the end whose searches had
  not converged, with their sizes beside the family's smallest (`AuditResult.reasons` has the words).

The goal (issue #11, DESIGN's cost goal): ≤ 2,500 forward+backward passes per audit, scan and refinement
together, with the full scan's verdicts and targets; the last lines say whether every K-Arm audit met it.

Run: ``python benchmarks/audit.py [--steps N] [--seed S] [--families patch,blend,warp]
[--trojans patch,blend,warp,none]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from _timing import environment

from seethrough.audit import scan
from seethrough.audit.verdict import DEFAULT_FAMILIES
from seethrough.bench.zoo import digits16, trojaned_classifier
from seethrough.core import Site, hooks

GOAL = 2500  # forward+backward passes per audit (issue #11)
BATCH = 128  # the searches' batch size (neural_cleanse's and refine_trigger's default): passes = examples / BATCH


class GradExamples:
    """Counts the examples a model sees while autograd is on (a hook on its output, through `core.hooks`), to check
    the scans' own count."""

    def __init__(self) -> None:
        self.examples = 0

    def __call__(self, value: torch.Tensor, site: Site) -> None:
        if torch.is_grad_enabled():
            self.examples += int(value.shape[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimisation steps per class (CLI default 300)")
    parser.add_argument("--seed", type=int, default=0, help="zoo seed of the models")
    parser.add_argument("--families", default=",".join(DEFAULT_FAMILIES),
                        help="trigger families scanned, comma-separated (default: the image audit's)")
    parser.add_argument("--trojans", default="patch,blend,warp,none", help="zoo trojans audited, comma-separated")
    parser.add_argument("--archs", default="cnn,mlp", help="zoo architectures, comma-separated")
    args = parser.parse_args()
    families = tuple(args.families.split(","))
    print(environment())
    x, _ = digits16("test")
    print(f"families {', '.join(families)}; {args.steps} steps; zoo seed {args.seed}; goal ≤ {GOAL:,} passes per audit")
    print(f"{'model':<11} {'schedule':<8} {'scan':>6} {'per family':<16} {'+refine':>7} {'(hook)':>7} {'wall s':>7}  "
          f"{'verdict':<12} {'planted':>7}  named  gaps")
    worst, agree, same_targets, pairs = 0.0, 0, 0, 0
    for arch in args.archs.split(","):
        for trojan in args.trojans.split(","):
            model, meta = trojaned_classifier(arch, trojan, args.seed)
            planted = meta["trigger"]["target"] if meta["trigger"] else None
            outcome = {}
            for schedule in ("k-arm", "full"):
                counter = GradExamples()
                start = time.perf_counter()
                with hooks(model, {Site(""): counter}):
                    result = scan(model, x, steps=args.steps, families=families, schedule=schedule)
                wall = time.perf_counter() - start
                per_family = {f: r.passes for f, r in result.scans.items()}
                passes = sum(per_family.values())
                refine = float(result.settings["refinement_passes"])
                hooked = counter.examples / BATCH - passes
                named = sorted({f.target for f, v in zip(result.findings, result.validations, strict=True)
                                if v.validated})
                outcome[schedule] = (result.verdict, named)
                why = ""
                if result.verdict == "inconclusive":
                    why = "  [" + "; ".join(u for f, r in result.scans.items() if (u := _unconverged(f, r))) + "]"
                if schedule == "k-arm":
                    worst = max(worst, passes + refine)
                split = "/".join(f"{p:.0f}" for p in per_family.values())
                gaps = " ".join(f"{f}={g:.2f}" for f, g in result.gaps.items())
                print(f"{arch + '/' + trojan:<11} {schedule:<8} {passes:>6.0f} {split:<16} {refine:>7.0f} {hooked:>7.0f} "
                      f"{wall:>7.1f}  {result.verdict:<12} {planted!s:>7}  {named!s:<6} {gaps}{why}", flush=True)
            pairs += 1
            agree += outcome["k-arm"] == outcome["full"]
            same_targets += outcome["k-arm"][1] == outcome["full"][1]
    print(f"K-Arm: at most {worst:,.0f} passes per audit, scan and refinement (goal ≤ {GOAL:,}: "
          f"{'met' if worst <= GOAL else 'MISSED'}); "
          f"named targets equal to the full scan's in {same_targets} of {pairs} models, verdicts in {agree} of {pairs}")


def _unconverged(family: str, result: Any) -> str:
    """``"warp: 0 (1,236), 8 (1,243) of smallest 288"``: the classes searched to the end whose searches had not
    converged, with their sizes beside the family's smallest (empty when every one converged)."""
    late = [(t.trigger.target, t.mask_l1) for t in result.triggers if t.finite and not t.converged and not t.pruned]
    if not late:
        return ""
    return (f"{family}: " + ", ".join(f"{c} ({size:,.0f})" for c, size in late)
            + f" of smallest {min(result.norms.tolist()):,.0f}")


if __name__ == "__main__":
    main()
