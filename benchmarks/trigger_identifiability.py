"""Is the planted patch the trigger the audit's objective asks for? (issue #11's mask-IoU bars)

The audit reverse-engineers, for a flagged class, the fewest pixels whose stamping sends the scan
images there (Neural Cleanse's objective; its refinement keeps attack success ≥ 0.95). The
`trojan-detection` game scores that mask by its IoU with the planted patch. The two agree only if the
planted patch is, among all triggers the model answers to, the smallest. This script measures, per
patch-trojaned zoo model, on the audit's own scan split (the inputs the model does not already
predict as the target):

- ``planted``: the patch's pixels, its attack success and mean target margin (target logit minus
  the largest other logit);
- ``subset``: the smallest subset of the planted pixels that keeps the attack success the found
  trigger reaches (at most 0.95, the refinement's goal), found by greedy removal (the pixel whose
  loss hurts least goes first; greedy removal can keep too many pixels, never too few), and the
  share of the patch it covers (what naming exactly it would score, were the rest of a mask's
  ranking no help);
- ``found``: the audit's refined trigger for the planted target: its pixels (mask > 0.5), attack
  success, margin, how many of its pixels are planted ones, and its game IoU (top-k, k = the patch's
  size) with the patch and with the patch's identifiable pixels;
- ``alternative``: yes when the found trigger is no larger than the planted subset yet shares at most
  half its pixels with the patch: a different trigger that the objective ranks at least as well as
  the planted one, so no better optimiser of the same objective is bound to prefer the planted
  patch.

Run: ``python benchmarks/trigger_identifiability.py [--archs mlp,cnn] [--seeds 1000-1004]``. Zoo seeds
0-7 are the audit's development seeds; 1000+ are the game's scoring seeds (the game's audit seed is
the zoo seed less 1000; dev models use audit seed 0).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _timing import environment

from seethrough.audit import IDENTIFIABLE_TOLERANCE, scan
from seethrough.audit.refine import identifiable_pixels, target_margin
from seethrough.bench.games.trojan import N_CLEAN_IMAGES, mask_iou
from seethrough.bench.zoo import digits16, trojaned_classifier
from seethrough.evidence import Trigger

GOAL = 0.95  # the attack success the audit's refinement keeps (`refine_trigger`'s success_goal)


def seed_list(text: str) -> list[int]:
    """``"0-7"`` or ``"1000,1003"`` to a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def smallest_subset(model: torch.nn.Module, inputs: torch.Tensor, planted: Trigger, goal: float) -> torch.Tensor:
    """Greedy removal: drop the planted pixel whose loss leaves the attack success highest, while it stays ≥ goal."""
    keep = planted.mask > 0.5

    def success(pixels: torch.Tensor) -> float:
        return target_margin(model, inputs, Trigger(pixels.float(), planted.pattern, planted.target))[1]

    while int(keep.sum()) > 1:
        trials = []
        for row, col in torch.nonzero(keep).tolist():
            fewer = keep.clone()
            fewer[row, col] = False
            trials.append((success(fewer), fewer))
        rate, fewer = max(trials, key=lambda trial: trial[0])
        if rate < goal:
            break
        keep = fewer
    return keep


def measure(arch: str, seed: int, images: torch.Tensor, steps: int) -> dict[str, object]:
    model, meta = trojaned_classifier(arch, "patch", seed)
    model.eval()
    planted = Trigger.from_dict({k: v for k, v in meta["triggers"][0].items() if k not in ("kind", "target_class")})
    audit = scan(model, images, steps=steps, n_scan=N_CLEAN_IMAGES, families=("patch",),
                 seed=seed - 1000 if seed >= 1000 else 0)
    refined = [f.trigger for f in audit.findings if f.trigger is not None and f.trigger.target == planted.target]
    found = refined[0] if refined else audit.scans["patch"].triggers[planted.target].trigger
    assert audit.split is not None
    scan_x = audit.split[0]
    with torch.no_grad():
        others = scan_x[model(scan_x).argmax(-1) != planted.target]
    f_margin, f_success = target_margin(model, others, found)
    subset = smallest_subset(model, others, planted, min(GOAL, f_success))
    ident = (planted.mask > 0.5) & identifiable_pixels(planted, images, tolerance=IDENTIFIABLE_TOLERANCE)
    found_pixels = found.mask > 0.5
    planted_pixels = planted.mask > 0.5
    shared = int((found_pixels & planted_pixels).sum())
    p_margin, p_success = target_margin(model, others, planted)
    return {"arch": arch, "seed": seed, "named": audit.suspect == planted.target,
            "planted": int(planted_pixels.sum()), "identifiable": int(ident.sum()),
            "p_success": p_success, "p_margin": p_margin,
            "subset": int(subset.sum()), "subset_iou": int(subset.sum()) / int(planted_pixels.sum()),
            "found": int(found_pixels.sum()), "shared": shared, "f_success": f_success, "f_margin": f_margin,
            "iou": mask_iou(found.mask, planted.mask),
            "iou_ident": mask_iou(found.mask, ident.float()) if bool(ident.any()) else float("nan"),
            "alternative": int(found_pixels.sum()) <= int(subset.sum()) and shared <= int(found_pixels.sum()) / 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", default="mlp,cnn")
    parser.add_argument("--seeds", default="1000-1004", help="zoo seeds: 0-7 (dev) or 1000+ (the game's)")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(environment())
    images = digits16("test")[0]
    print(f"{'model':10} {'named':>5} {'planted':>7} {'ident':>5} {'p succ/margin':>13} {'subset':>6} "
          f"{'sub IoU':>7} {'found':>5} {'shared':>6} {'f succ/margin':>13} {'IoU':>5} {'IoU id':>6} alternative")
    rows = []
    for arch in args.archs.split(","):
        for seed in seed_list(args.seeds):
            r = measure(arch, seed, images, args.steps)
            rows.append(r)
            print(f"{arch + '/' + str(seed):10} {'yes' if r['named'] else 'NO':>5} {r['planted']:>7} "
                  f"{r['identifiable']:>5} {r['p_success']:>6.2f}/{r['p_margin']:<6.1f} {r['subset']:>6} "
                  f"{r['subset_iou']:>7.2f} {r['found']:>5} {r['shared']:>6} {r['f_success']:>6.2f}/{r['f_margin']:<6.1f} "
                  f"{r['iou']:>5.2f} {r['iou_ident']:>6.2f} {'yes' if r['alternative'] else 'no'}", flush=True)
    for arch in args.archs.split(","):
        mine = [r for r in rows if r["arch"] == arch]
        print(f"{arch}: IoU mean {statistics.mean(r['iou'] for r in mine):.2f}, subset IoU mean "
              f"{statistics.mean(r['subset_iou'] for r in mine):.2f}; found no larger than the planted subset "
              f"{sum(r['found'] <= r['subset'] for r in mine)} of {len(mine)}, of them alternative triggers "
              f"{sum(bool(r['alternative']) for r in mine)}; planted margin above the found trigger's "
              f"{sum(r['p_margin'] > r['f_margin'] for r in mine)} of {len(mine)}")


if __name__ == "__main__":
    main()
