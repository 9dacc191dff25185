"""`seethrough bench` end to end (issue #3): the quick suite beats chance, resumes, survives SIGKILL,
records failing units as errors and retries them, and gives the same table on the Ray executor.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seethrough.bench import runner
from seethrough.bench.executors import Outcome
from seethrough.bench.games import GAMES
from seethrough.cli import app

KEYS = ["game", "method", "metric", "n", "mean", "median", "worst", "ci_low", "ci_high", "chance", "bar", "passed"]


def bench(tmp: Path, *args: str, name: str = "run") -> tuple[int, list[dict], str]:
    out = tmp / f"{name}.json"
    result = CliRunner().invoke(app, ["bench", "--db", str(tmp / f"{name}.sqlite"), "--report", str(tmp / name),
                                      "--json", str(out), *args])
    rows = json.loads(out.read_text()) if out.exists() else []
    return result.exit_code, rows, result.output


def subprocess_bench(tmp: Path, db: Path, json_out: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "seethrough", "bench", "--db", str(db), "--report", str(tmp / "r"),
               "--json", str(json_out), *args]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], str]:
    """The whole quick suite, on a local Ray (one unit per core: it halves CI's longest step, about 15 min cold on
    one core with 29 games); the Ray executor gives the local executor's table (test_ray_executor_... below)."""
    import ray  # noqa: F401 - the [ray] extra is installed by `make test`; fail loudly if it is not
    tmp = tmp_path_factory.mktemp("quick")
    code, rows, output = bench(tmp, "--quick", "--executor", "ray")
    assert code == 0, output
    return tmp, rows, output


def test_quick_suite_table_has_the_design_contract(quick: tuple[Path, list[dict], str]) -> None:
    _, rows, output = quick
    assert rows and all(list(r) == KEYS for r in rows)
    assert {r["game"] for r in rows} == set(GAMES)
    for game in GAMES.values():
        for method in game.methods:
            assert any(r["game"] == game.name and r["method"] == method for r in rows), (game.name, method)
    assert all(r["n"] >= 3 for r in rows)  # --quick runs 3 seeds: every metric has at least 3 cases
    assert "seethrough bench" in output and "report:" in output


def test_quick_rows_score_every_declared_metric(quick: tuple[Path, list[dict], str]) -> None:
    """Issue #9's common check, for every game (test_games.py plays only the cheap ones): each metric gets rows."""
    _, rows, _ = quick
    for game in GAMES.values():
        assert {r["metric"] for r in rows if r["game"] == game.name} == {m.name for m in game.metrics}, game.name


#: Rows a method under test is known to fail, reported as they are (never tuned away), each with the
#: issue that must fix it. Remove an entry when the method improves: the test then requires a pass.
KNOWN_FAILURES = {
    ("planted-hazards", "discovered-polysemanticity", "polysemanticity_spearman"):
        "without known features, k-means clusters of a unit's inputs do not recover how many features it "
        "carries (Spearman 0.17 over 10 seeds, worst -0.56); the known-feature score passes",
    ("trigger-rediscovery", "synthesis", "correct_style"):
        "0.70 over seeds 0-9 but 0.58 on the 3 quick seeds, under the 0.6 bar chosen on development seeds",
    ("trigger-rediscovery", "synthesis", "correct_natural"):
        "the small glyph CNN learns natural-feature triggers poorly (per-trigger success often 0.1-0.6), so "
        "several cases score 0",
    ("attribution-localisation", "gradient-x-input", "pixel_auroc"):
        "with the zero baseline, black trigger pixels get zero attribution (x = 0): half of every trigger",
    ("attribution-localisation", "gradient-x-input", "spearman"): "as pixel_auroc: zero input, zero attribution",
    ("attribution-localisation", "integrated-gradients", "pixel_auroc"): "as gradient x input: zero baseline",
    ("attribution-localisation", "integrated-gradients", "spearman"): "as gradient x input: zero baseline",
    ("sanity-checks", "saliency", "abs_rank_corr_top_randomised"):
        "|maps| keep structure after top-layer randomisation (0.25; signed maps pass at -0.03)",
    ("sanity-checks", "smoothgrad", "abs_rank_corr_top_randomised"): "as saliency: |maps| 0.25, signed maps pass",
    ("sanity-checks", "gradient-x-input", "abs_rank_corr_top_randomised"):
        "|gradient x input| keeps the input's zeros whatever the weights (0.92), as Adebayo et al. found; signed "
        "maps pass",
    ("sanity-checks", "integrated-gradients", "abs_rank_corr_top_randomised"): "as gradient x input (0.92)",
    ("sanity-checks", "guided-backprop", "rank_corr_top_randomised"):
        "guided backprop is insensitive to the weights: the expected failure (Adebayo et al. 2018)",
    ("sanity-checks", "guided-backprop", "rank_corr_independent"): "as above: guided backprop ignores the weights",
    ("sanity-checks", "guided-backprop", "abs_rank_corr_top_randomised"): "as above",
    ("roar", "saliency", "area_vs_random"):
        "remove-and-retrain: removing the top pixels is no worse than removing random ones, as Hooker et al. "
        "2019 found for plain gradients; VarGrad passes",
    ("roar", "smoothgrad", "area_vs_random"): "as saliency (Hooker et al.: SmoothGrad no better than random)",
    ("roar", "gradient-x-input", "area_vs_random"): "as saliency",
    ("roar", "integrated-gradients", "area_vs_random"): "as saliency (Hooker et al.: IG no better than random)",
    ("sae-dictionary", "jumprelu-sae", "recovered"):
        "JumpReLU recovers 0.79 of the true directions above cosine 0.9 (worst 0.73) against the 0.8 bar; its MMCS "
        "(0.94) and firing F1 pass, TopK/BatchTopK/ReLU pass every row",
    ("planted-reliance", "tcav", "reliance_auroc"):
        "models with mark strength 0.25 flip only 10-13% of digits (counted as not relying, cut 0.2 fixed before "
        "scoring) yet the sign-based TCAV score calls them significant; with 40 null statistics a few saturated "
        "ones keep strong reliance at p 0.10-0.15. The calibrated false-positive rate passes (0.07)",
    ("planted-irrelevance", "magnitude", "irrelevant_auroc"):
        "the planted irrelevant weights are large on purpose (magnitude is not importance): the expected failure",
    ("planted-irrelevance", "magnitude", "prunable_ratio"): "as above: magnitude prunes the needed small weights first",
    ("trojan-detection", "audit", "mask_iou_patch"):
        "0.59 (worst 0.13) against the 0.6 bar: the smallest trigger is not always the planted one (model seed 1001's "
        "reversed mask takes a 4-pixel shortcut beside 2 planted pixels; on CNNs shifted copies of the planted patch "
        "also fire and smaller triggers exist); refinement's placement step moved 2 of 8 dev CNN masks, no MLP mask",
    ("trojan-detection", "audit", "mask_iou_identifiable_patch"):
        "as mask_iou_patch (every planted pixel was identifiable on these seeds): 0.59 against the 0.7 bar",
    ("planted-irrelevance", "magnitude-units", "irrelevant_auroc"):
        "unit magnitude ranks the planted irrelevant units, whose weights are 3x larger, first to keep (AUROC 0.03): "
        "the unit-level counter-example; Taylor on units passes",
    ("planted-irrelevance", "magnitude-units", "prunable_ratio"): "as above: unit magnitude prunes needed units first",
    ("planted-irrelevance", "magnitude-units", "beats_random_pruning"): "as above (beats random on 0.33 of seeds)",
}
# known-task-weights: magnitude is the counter-example the issue asks to show failing (decoy weights are the
# largest); on the leaky blocks Fisher and MAS (sensitivity alone) rank the small cross-talk weights on active
# paths like block weights, while SNIP and Taylor (sensitivity times weight) pass.
for _metric in ("task_a_auroc", "task_b_auroc", "task_a_auroc_leaky", "task_b_auroc_leaky"):
    KNOWN_FAILURES[("known-task-weights", "magnitude", _metric)] = "magnitude is not importance: large decoy weights"
for _method in ("fisher", "fisher-exact", "fisher-batched", "mas", "si"):
    for _metric in ("task_a_auroc_leaky", "task_b_auroc_leaky"):
        KNOWN_FAILURES[("known-task-weights", _method, _metric)] = (
            "0.79-0.90 on leaky blocks: sensitivity alone (or SI's path integral) ranks cross-talk weights on active "
            "paths as task weights")
# Forgetting: the class-incremental setting (digits 0-4 then 5-9, one head) is the honest failing baseline: after
# task B the single head answers 5-9, and every penalty keeps only 0.25-0.47 of task A (naive and random 0);
# a magnitude penalty protects the large weights, not the ones task A needs (0.36-0.48 of forgetting prevented).
for _method in ("fisher", "fisher-exact", "fisher-batched", "si", "mas", "snip", "taylor", "magnitude"):
    for _metric in ("forgetting_prevented_class_incremental", "average_accuracy_class_incremental"):
        KNOWN_FAILURES[("known-task-weights", _method, _metric)] = (
            "class-incremental: one head, the new classes win; penalties keep 0.25-0.47 of task A")
for _metric in ("forgetting_prevented", "average_accuracy"):
    KNOWN_FAILURES[("known-task-weights", "magnitude", _metric)] = (
        "a magnitude penalty protects large weights, not task A's: 0.36-0.48 of naive forgetting prevented")
# planted-circuits: CMD's 0.05 bar is out of reach on these nets (the AND -> XOR chain keeps nothing until all
# 4 planted edges, 19-27% of the edges, are in: even a perfect ranking leaves ~0.19 of area); EAP fails on the
# saturated pairs where the AND unit is off on every clean input (zero gradient), which EAP-IG recovers.
for _ablation in ("", " (mean)", " (resample)"):
    for _method in ("exact", "eap", "eap-ig", "acdc"):
        KNOWN_FAILURES[("planted-circuits", _method + _ablation, "cmd")] = "CMD bar unreachable on this chain"
    for _metric in ("edge_auroc", "faithfulness_at_k"):
        KNOWN_FAILURES[("planted-circuits", "eap" + _ablation, _metric)] = "zero gradient on saturated pairs"


# planted-circuits, zero ablation and the trained (SIIT-style) arm (issue #12): zeroing cannot switch on the AND unit
# that is off on every saturated clean input, and it removes the distractors' mean output, which the trained
# readers use as an offset; EAP's zero gradient on saturated pairs drops a planted edge from its top 4.
for _method in ("exact", "eap", "eap-ig", "acdc"):
    for _metric in ("edge_auroc", "node_auroc", "faithfulness_at_k", "cmd"):
        KNOWN_FAILURES[("planted-circuits", _method + " (zero)", _metric)] = (
            "zero ablation cannot switch on the AND unit that is off on every saturated clean input (AND edges score 0)"
            if _metric != "cmd" else "CMD bar unreachable on this chain")
    KNOWN_FAILURES[("planted-circuits", _method + " (zero)", "trained_faithfulness_at_k")] = (
        "zeroing removes the distractors' mean output, which the SIIT-trained readers use as an offset")
for _method in ("exact (zero)", "acdc (zero)"):
    KNOWN_FAILURES[("planted-circuits", _method, "trained_node_auroc")] = (
        "zeroing a distractor moves the trained circuit off-distribution (seed 0: 6.0, above 3 of 4 planted edges)")
for _ablation in ("", " (mean)", " (resample)"):
    KNOWN_FAILURES[("planted-circuits", "eap" + _ablation, "trained_faithfulness_at_k")] = (
        "zero gradient on saturated pairs drops a planted edge from EAP's top 4 (worst 0.43)")
# planted-reliance (issue #13): the sign statistic's permutation null saturates at 0 and 1; the 0.2 reliance cut
# calls McNemar-significant strength-0.25 models "not relying"
KNOWN_FAILURES[("planted-reliance", "tcav", "tested_reliance_auroc")] = (
    "0.71: the sign statistic's null saturates (2-3 of 40 null statistics at exactly 0 or 1), so relying models get "
    "p 0.073-0.098 on seed 1002; tcav-cosine passes (1.000)")
KNOWN_FAILURES[("planted-reliance", "tcav-cosine", "reliance_auroc")] = (
    "0.83: the strength-0.25 models of seeds 1000-1001 (reliance 0.10 and 0.13, below the 0.2 cut) are significant "
    "at p = 1/41; their flips are real (McNemar-significant; strength 0 flips at most 0.002): the cut is at fault")
# known-route and basis-change (issue #13): raw attention and the logit lens are the planted failures
KNOWN_FAILURES[("known-route", "raw attention", "spearman")] = (
    "raw last-layer attention ranks positions unlike blank-out importance (0.03 over seeds 1000-1009; rollout 0.69, "
    "flow 0.74): the baseline the composed methods must beat")
KNOWN_FAILURES[("known-route", "raw attention", "source_top1")] = (
    "0.50: 1.0 on copy, 0.0 on two-hop, where the planted mask hides the source from the last layer")
KNOWN_FAILURES[("basis-change", "logit lens", "rotated_kl_fraction")] = (
    "1.77 against a 0.5 bar: the logit lens reads the rotated stream in the unembedding's basis (3.4-3.6 nats against "
    "0.07-0.15 unrotated), worse than a uniform guess: the planted failure")

# layer-correspondence (issue #13): with 250 digits the two widest stages (1024 and 512 units) fill every available
# dimension, so canonical correlations with them are 1 whatever the data: the published PWCCA > CCA order is not
# reproduced here (CKA > PWCCA is)
KNOWN_FAILURES[("layer-correspondence", "PWCCA", "depth_accuracy")] = (
    "0.00: stages wider than the 250 examples saturate every canonical correlation at 1; ties decide the match")
KNOWN_FAILURES[("layer-correspondence", "PWCCA", "twin_error")] = (
    "worst 3.6e-4 against 1e-6: PWCCA's weights depend on an arbitrary basis of the tied directions, so permuting "
    "units moves it")
KNOWN_FAILURES[("layer-correspondence", "SVCCA", "depth_accuracy")] = (
    "0.13: the mean correlation follows width, not depth (against the 10 logits only 10 correlations count)")
KNOWN_FAILURES[("layer-correspondence", "CCA (mean rho)", "depth_accuracy")] = (
    "0.20 (chance): the same saturation as PWCCA; CCA picks the widest stages for every stage")

# sae-dictionary's hierarchy and toy-superposition cases (issue #14): what the literature reports, measured here
for _method, _value in (("topk-sae", "0.62"), ("topk-sae-resample", "0.63"), ("batchtopk-sae", "0.41"),
                        ("jumprelu-sae", "0.41")):
    KNOWN_FAILURES[("sae-dictionary", _method, "absorption")] = (
        f"{_value}: the parent's best latent is silent on many rows where a child's latent fires (feature absorption, "
        "Chanin et al.); only ReLU-L1 passes (0.20)")
for _method in ("batchtopk-sae", "jumprelu-sae"):
    KNOWN_FAILURES[("sae-dictionary", _method, "seed_stability")] = (
        "0.32-0.37: two seeds share about a third of their latents (the literature's ~30%); TopK and ReLU pass")
for _method in ("topk-sae", "topk-sae-resample", "batchtopk-sae", "jumprelu-sae", "relu-sae"):
    KNOWN_FAILURES[("sae-dictionary", _method, "hierarchy_recovered")] = (
        "0.45-0.66: with a parent gating exclusive children and correlated firing no SAE recovers 0.8 of the directions")
KNOWN_FAILURES[("sae-dictionary", "jumprelu-sae", "toy_mmcs_best")] = (
    "0.79: JumpReLU with the default penalty fails the toy model even at its best sparsity")
for _method, _value in (("jumprelu-sae", "0.16"), ("batchtopk-sae", "0.72 (worst seed 0.44)"),
                        ("relu-sae", "0.80 (worst seed 0.57)")):
    KNOWN_FAILURES[("sae-dictionary", _method, "toy_recovered_best")] = (
        f"{_value}: below 0.8 recovered at its best sparsity on some seeds")
for _method in ("topk-sae", "topk-sae-resample", "batchtopk-sae", "jumprelu-sae"):
    KNOWN_FAILURES[("sae-dictionary", _method, "toy_recovered_worst")] = (
        "0.00-0.19: at the dense setting (sparsity 0.7) these SAEs recover almost none of the represented features")


def test_methods_under_test_beat_chance_on_mean_and_pass_their_bar(quick: tuple[Path, list[dict], str]) -> None:
    _, rows, _ = quick
    for r in rows:
        baseline = r["method"] in GAMES[r["game"]].baselines
        assert (r["bar"] is None) == baseline and (r["passed"] is None) == baseline
        if not baseline and (r["game"], r["method"], r["metric"]) not in KNOWN_FAILURES:
            assert r["passed"], f"{r['game']}/{r['method']}/{r['metric']} failed its bar: {r}"
            higher = GAMES[r["game"]].metric(r["metric"]).higher_is_better
            assert r["ci_low"] > r["chance"] if higher else r["ci_high"] < r["chance"], r
    reported = {(r["game"], r["method"], r["metric"]) for r in rows}
    assert set(KNOWN_FAILURES) <= reported, "known failures must still be reported in the table"
    now_passing = [(r["game"], r["method"], r["metric"]) for r in rows
                   if (r["game"], r["method"], r["metric"]) in KNOWN_FAILURES and r["passed"]]
    assert not now_passing, f"these rows pass now: remove them from KNOWN_FAILURES: {now_passing}"


def test_report_has_one_image_per_game_and_no_external_urls(quick: tuple[Path, list[dict], str]) -> None:
    tmp, _, _ = quick
    page = (tmp / "run" / "index.html").read_text()
    assert page.count("<img") == len(GAMES)
    assert "http://" not in page and "https://" not in page


def test_rerun_resumes_without_recomputing(quick: tuple[Path, list[dict], str], monkeypatch) -> None:
    tmp, rows, _ = quick

    def refuse(*args: object) -> None:
        raise AssertionError("a finished unit was recomputed")

    monkeypatch.setattr("seethrough.bench.executors.execute_unit", refuse)
    code, again, output = bench(tmp, "--quick")
    assert code == 0, output
    assert again == rows  # re-aggregated from the ledger, identical


def test_failing_unit_is_recorded_as_error_and_retried(tmp_path: Path, monkeypatch) -> None:
    game = GAMES["ablation"]
    real_play = type(game).play

    def flaky(self, method: str, case: dict) -> dict:
        if method == "random" and case["seed"] == 1:
            raise RuntimeError("injected unit failure")
        return real_play(self, method, case)

    monkeypatch.setattr(type(game), "play", flaky)
    code, rows, output = bench(tmp_path, "--quick", "--games", "ablation", "--seeds", "2")
    assert code == 1 and "injected unit failure" in output
    with sqlite3.connect(tmp_path / "run.sqlite") as db:
        status = dict(db.execute("SELECT id, status FROM units").fetchall())
    errored = [k for k, v in status.items() if v == "error"]
    assert len(errored) == 1 and errored[0].startswith("ablation/random/1/")
    assert next(r for r in rows if r["method"] == "random")["n"] == 1  # errors are never results
    monkeypatch.setattr(type(game), "play", real_play)
    code, rows, output = bench(tmp_path, "--quick", "--games", "ablation", "--seeds", "2")
    assert code == 0, output
    assert next(r for r in rows if r["method"] == "random")["n"] == 2
    with sqlite3.connect(tmp_path / "run.sqlite") as db:
        assert db.execute("SELECT attempts FROM units WHERE id = ?", (errored[0],)).fetchone() == (2,)


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    args = ("--quick", "--games", "ablation", "--seeds", "3")
    reference = tmp_path / "reference.json"
    done = subprocess_bench(tmp_path, tmp_path / "reference.sqlite", reference, *args)
    assert done.wait(timeout=600) == 0, done.stderr.read() if done.stderr else ""
    expected = json.loads(reference.read_text())
    planned = {u.key.id for u in runner.plan([GAMES["ablation"]], [0, 1, 2], quick=True)}
    delays = random.Random(0)
    for trial in range(5):
        db, out = tmp_path / f"trial{trial}.sqlite", tmp_path / f"trial{trial}.json"
        proc = subprocess_bench(tmp_path, db, out, *args)
        time.sleep(delays.uniform(1.0, 6.0))  # somewhere between start-up and the last unit
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        resumed = subprocess_bench(tmp_path, db, out, *args)
        assert resumed.wait(timeout=600) == 0, resumed.stderr.read() if resumed.stderr else ""
        assert json.loads(out.read_text()) == expected, f"trial {trial}: resumed table differs"
        with sqlite3.connect(db) as conn:
            ids = [row[0] for row in conn.execute("SELECT id FROM units")]
        assert len(ids) == len(set(ids)) and set(ids) == planned, f"trial {trial}: duplicate or missing rows"


def test_ray_executor_gives_the_same_table(tmp_path: Path) -> None:
    import ray  # noqa: F401 - the [ray] extra is installed by `make test`; fail loudly if it is not
    args = ("--quick", "--games", "ablation", "--seeds", "2")
    code, local, output = bench(tmp_path, *args, name="local")
    assert code == 0, output
    code, distributed, output = bench(tmp_path, *args, "--executor", "ray", name="ray")
    assert code == 0, output
    assert distributed == local


def test_list_and_bad_arguments() -> None:
    result = CliRunner().invoke(app, ["bench", "--list"])
    assert result.exit_code == 0 and all(name in result.output for name in GAMES)
    result = CliRunner().invoke(app, ["bench", "--games", "nope", "--list"])
    assert result.exit_code == 2 and "unknown game" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["bench", "--executor", "spark", "--games", "ablation"])
    assert result.exit_code == 2 and "--executor" in result.output


# -- issue #10 item 7: bad bench input refused in one line, before the first unit; nothing half-written --------


def _one_line_error(result, fragment: str) -> None:  # noqa: ANN001 - click's Result
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert result.stdout == ""


@pytest.fixture
def no_units(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if a unit starts: the refusal must come before any work."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the run started before the bad input was refused")

    monkeypatch.setattr(runner, "run", refuse)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens on it once the socket is closed


def test_unreachable_ray_cluster_times_out_in_one_line(tmp_path: Path) -> None:
    """Issue #10 item 7: `--ray-address` of an unreachable cluster hung forever inside ray.init."""
    import ray  # noqa: F401 - the [ray] extra is installed by `make test`; fail loudly if it is not
    address = f"127.0.0.1:{_closed_port()}"
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["bench", "--games", "ablation", "--quick", "--seeds", "1", "--executor", "ray",
                                      "--ray-address", address, "--db", str(tmp_path / "l.sqlite"),
                                      "--report", str(tmp_path / "r"), "--json", str(tmp_path / "t.json")])
    _one_line_error(result, f"cannot reach the Ray cluster at {address!r} within 10 s")
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("where", ["folder", "under a file"])
def test_unwritable_json_is_refused_before_the_run(tmp_path: Path, where: str, no_units: None) -> None:
    """Issue #10 item 7: `--json` to an unwritable path gave a traceback after the whole run."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    target, fragment = ((tmp_path, f"--json {str(tmp_path)!r} is a folder") if where == "folder" else
                        (blocker / "t.json", f"{str(blocker)!r} is a file, not a folder"))
    result = CliRunner().invoke(app, ["bench", "--games", "ablation", "--quick", "--db", str(tmp_path / "l.sqlite"),
                                      "--report", str(tmp_path / "r"), "--json", str(target)])
    _one_line_error(result, fragment)
    assert not (tmp_path / "l.sqlite").exists() and not (tmp_path / "r").exists()  # nothing was started


def test_unwritable_report_is_refused_before_the_run(tmp_path: Path, no_units: None) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    result = CliRunner().invoke(app, ["bench", "--games", "ablation", "--quick", "--db", str(tmp_path / "l.sqlite"),
                                      "--report", str(blocker)])
    _one_line_error(result, f"--report {str(blocker)!r} is a file, not a folder")


@pytest.mark.parametrize("seeds", [str(2**70), "0", "-3"])
def test_seed_counts_out_of_range_are_one_line(tmp_path: Path, seeds: str, no_units: None) -> None:
    """Issue #10 item 7: --seeds 2**70 tried to plan 2**70 seeds (a traceback or a hang)."""
    result = CliRunner().invoke(app, ["bench", "--games", "ablation", "--seeds", seeds, "--db",
                                      str(tmp_path / "l.sqlite")])
    _one_line_error(result, f"--seeds must be an int in 1..1000, got {seeds}")


def _instant_unit(index: int, game_name: str, method: str, case: dict) -> Outcome:
    """A unit that scores 0.5 on every metric at once (the table's writing is under test, not the games)."""
    return Outcome(index, {m.name: 0.5 for m in GAMES[game_name].metrics}, None, 0.0)


def test_json_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while writing --json leaves the earlier table whole (temp file, then rename), in one line."""
    target = tmp_path / "t.json"
    target.write_text('[{"earlier": "table"}]')
    real = Path.write_text

    def half_then_fail(self: Path, text: str, *args: object, **kwargs: object) -> int:
        if self.name.startswith(f".{target.name}."):  # atomic_write's temp file beside --json
            real(self, text[: len(text) // 2])
            raise OSError(28, "No space left on device")
        return real(self, text, *args, **kwargs)  # type: ignore[arg-type]  # passed through unchanged

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    monkeypatch.setattr("seethrough.bench.executors.execute_unit", _instant_unit)
    result = CliRunner().invoke(app, ["bench", "--games", "ablation", "--quick", "--seeds", "1", "--db",
                                      str(tmp_path / "l.sqlite"), "--report", str(tmp_path / "r"), "--json",
                                      str(target)])
    assert result.exit_code == 2 and "No space left on device" in result.stderr, result.output
    assert target.read_text() == '[{"earlier": "table"}]'
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind


def test_ctrl_c_exits_130_with_one_line_and_keeps_the_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #10 item 7: Ctrl-C exited with click's "Aborted!" (status 1); finished units stay for the rerun."""
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run", interrupt)
    db = tmp_path / "l.sqlite"
    result = CliRunner().invoke(app, ["bench", "--games", "ablation", "--quick", "--db", str(db), "--report",
                                      str(tmp_path / "r"), "--json", str(tmp_path / "t.json")])
    assert result.exit_code == 130, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: interrupted (Ctrl-C); finished units are kept in {str(db)!r}: rerun the same command to resume."]
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "r").exists()
