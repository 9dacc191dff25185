"""The trojan audit on planted models, its findings.json contract, and hostile input (issue #4, first part)."""

from __future__ import annotations

import json
import pickle
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from seethrough.audit import scan
from seethrough.bench.zoo import digits16, trojaned_classifier
from seethrough.cli import app

SEED = 11  # outside the seeds 0-7 on which the gap rule was calibrated


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, y = digits16("test")
    path = tmp_path_factory.mktemp("data") / "clean.npz"
    names = ["zero<script>alert(1)</script>", '"one"', "<img src=x onerror=alert(2)>", "three</script>", "four & co",
             "five", "six", "seven", "eight", "$\\alpha$ nine"]
    np.savez(path, x=x.numpy(), y=y.numpy(), class_names=np.array(names))
    return path


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "factory.py"
    path.write_text("from seethrough.bench.zoo import DigitsMLP\n\ndef build():\n    return DigitsMLP()\n")
    return path


def weights(tmp: Path, trojan: str) -> tuple[Path, dict]:
    model, meta = trojaned_classifier("mlp", trojan, SEED)
    path = tmp / f"{trojan}.safetensors"
    save_file(model.state_dict(), str(path))
    return path, meta


def run_audit(factory: Path, weights_path: Path, data: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["audit", "--model", f"{factory}:build", "--weights", str(weights_path),
                                      "--data", str(data), "--out", str(out), *extra])
    return result.exit_code, result.output


def test_trojaned_model_is_found_with_its_target_and_trigger(tmp_path: Path, factory: Path, digits_npz: Path) -> None:
    path, meta = weights(tmp_path, "patch")
    code, output = run_audit(factory, path, digits_npz, tmp_path / "out", "--attack")
    assert code == 0, output
    report = json.loads((tmp_path / "out" / "findings.json").read_text())
    assert report["verdict"] == "trojaned" and report["anomaly_score"] >= 2.0
    planted = meta["trigger"]
    assert {f["target_class"] for f in report["findings"]} == {planted["target"]}
    (finding,) = [f for f in report["findings"] if f["trigger_family"] == "patch"]
    assert finding["kind"] == "trojan" and finding["target_class"] == planted["target"] and finding["validated"]
    # internal evidence: the units that rise under the trigger carry it (ablation beats random units)
    assert finding["internal_evidence"]["validated"] and finding["internal_evidence"]["site"] == "head"
    # engineering use: a trigger designed from those units alone beats random triggers of the same size
    attack = report["attack"]
    assert attack["status"] == "designed" and attack["beats_controls"], attack
    assert attack["attack_success_rate"] > 0.5 > attack["control_max"]
    assert "attack" in output and "Engineering use: attack" in (tmp_path / "out" / "report.html").read_text()
    mask = torch.tensor(finding["trigger_mask"])
    assert mask.shape == (16, 16) and float(mask.min()) >= 0 and float(mask.max()) <= 1
    assert torch.tensor(finding["trigger_pattern"]).shape == (1, 16, 16)
    assert finding["attack_success_rate"] > 0.8
    truth = torch.tensor(planted["mask"]) > 0.5
    top = torch.zeros(256, dtype=torch.bool)
    top[mask.flatten().argsort(descending=True)[: int(truth.sum())]] = True
    assert (top & truth.flatten()).sum() >= 1  # the reversed mask lands on the planted patch


def test_clean_model_is_clean_and_exit_status_is_zero(tmp_path: Path, factory: Path, digits_npz: Path) -> None:
    path, _ = weights(tmp_path, "none")
    code, output = run_audit(factory, path, digits_npz, tmp_path / "out")
    assert code == 0, output
    report = json.loads((tmp_path / "out" / "findings.json").read_text())
    assert report["verdict"] == "clean" and report["findings"] == []
    assert len(report["scan"]) == 10 and isinstance(report["anomaly_score"], float)


def test_hostile_class_names_render_inert(tmp_path: Path, factory: Path, digits_npz: Path) -> None:
    path, _ = weights(tmp_path, "patch")
    assert run_audit(factory, path, digits_npz, tmp_path / "out")[0] == 0
    page = (tmp_path / "out" / "report.html").read_text()

    class Collect(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[str] = []
            self.attrs: list[tuple[str, str | None]] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.append(tag)
            self.attrs += attrs

    parsed = Collect()
    parsed.feed(page)
    assert "script" not in parsed.tags
    assert not [a for a, _ in parsed.attrs if a.startswith("on")]
    assert all(v.startswith("data:image/png;base64,") for a, v in parsed.attrs if a == "src" and v)
    assert "zero&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(2)&gt;" in page


def test_malicious_pickle_weights_never_run(tmp_path: Path, factory: Path, digits_npz: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"fc1.weight": Payload()}))
    code, output = run_audit(factory, evil, digits_npz, tmp_path / "out")
    assert code == 2 and "weights_only" in output and "Traceback" not in output
    assert not marker.exists() and not (tmp_path / "out" / "findings.json").exists()


class VectorTrojan(nn.Module):
    """(N, 12) → 3 classes by a fixed linear map, plus a planted trojan: feature 7 high → class 2."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(12, 3)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(3, 12, generator=torch.Generator().manual_seed(0)))
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bump = torch.zeros(x.shape[0], 3)
        bump[:, 2] = 40.0 * x[:, 7]
        return self.linear(x) + bump


def test_vector_models_get_one_row_masks_and_the_planted_feature() -> None:
    x = torch.rand(160, 12, generator=torch.Generator().manual_seed(1)) * 0.2
    result = scan(VectorTrojan().eval(), x, steps=150, n_controls=20)
    assert result.scan.triggers[0].trigger.mask.shape == (1, 12)
    assert result.scan.suspect == 2 and int(result.scan.triggers[2].trigger.mask.argmax()) == 7


def test_refinement_restarts_count_in_the_audits_recorded_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #11 / DESIGN's cost goal is per audit (<= 2,500 forward+backward passes), so findings.json records the
    refinement restarts' passes beside the scans'. Oracle: the examples the model saw with autograd on while
    `refine_trigger` ran (a counting wrapper), over its batch of 128."""
    from seethrough.audit import verdict
    from seethrough.bench.zoo import digits16, trojaned_classifier

    class Counting(nn.Module):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model, self.counting, self.examples = model, False, 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.counting and torch.is_grad_enabled():
                self.examples += int(x.shape[0])
            return self.model(x)

    model, spent = Counting(trojaned_classifier("mlp", "patch", 11)[0]).eval(), []
    real = verdict.refine_trigger

    def counted(*args, **kwargs):
        model.counting = True
        try:
            found = real(*args, **kwargs)
        finally:
            model.counting = False
        spent.append(float(found.passes))
        return found

    monkeypatch.setattr(verdict, "refine_trigger", counted)
    x = digits16("test")[0]
    result = scan(model, x, families=("patch",), n_controls=20)
    assert result.verdict == "trojaned" and len(spent) == len(result.findings) >= 1
    recorded = result.to_dict()["searched"]["refinement_passes"]
    assert recorded == result.settings["refinement_passes"] == sum(spent) > 0
    # the restarts' batches, plus at most the one-row input check each call makes with autograd on
    assert sum(spent) <= model.examples / 128 <= sum(spent) + len(spent) / 128
    plain = scan(model, x, families=("patch",), n_controls=20, refine=False)
    assert plain.to_dict()["searched"]["refinement_passes"] == 0.0


def test_a_model_predicting_one_class_everywhere_is_not_called_trojaned() -> None:
    model = nn.Sequential(nn.Linear(12, 3)).eval()
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([0.0, 50.0, 0.0]))
    result = scan(model, torch.rand(40, 12), steps=20, n_controls=20)
    # not trojaned, and not "clean" either (issue #10): no trigger in the data's range moves an input
    # past a bias of 50 to class 0 or 2, so their smallest triggers are unknown
    assert result.verdict == "inconclusive" and result.findings == ()
    assert any("classes 0 ('0'), 2 ('2')" in r or "class(es) 0 ('0'), 2 ('2')" in r for r in result.reasons), \
        result.reasons


@pytest.mark.parametrize("x, message", [(torch.zeros(3, 1, 16, 16), "at least 4"), (torch.zeros(8, 2, 3), r"\(N, D\)")])
def test_bad_audit_inputs(x: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scan(nn.Sequential(nn.Flatten(), nn.Linear(256, 10)), x)


def test_repair_unlearns_the_planted_trigger_and_keeps_accuracy(tmp_path: Path, factory: Path,
                                                                digits_npz: Path) -> None:
    from safetensors.torch import load_file

    from seethrough.bench.zoo import DigitsMLP
    from seethrough.evidence import Trigger, accuracy, attack_success

    path, meta = weights(tmp_path, "patch")
    result = CliRunner().invoke(app, ["audit", "--model", f"{factory}:build", "--weights", str(path), "--data",
                                      str(digits_npz), "--out", str(tmp_path / "out"), "--repair"])
    assert result.exit_code == 0, result.output
    repair = json.loads((tmp_path / "out" / "findings.json").read_text())["repair"]
    assert repair["status"] == "repaired" and repair["attack_success_after"] < 0.1  # the reversed trigger
    # 225 repair examples: measured drops 2-5 points here (seed 11: 3.6); the 2-point bar is scored
    # by the trojan-repair game, which repairs on the training split
    assert repair["clean_accuracy_after"] >= repair["clean_accuracy_before"] - 0.05
    # oracle: the *planted* trigger, which the audit never saw, on the whole test split
    before, _ = trojaned_classifier("mlp", "patch", SEED)
    after = DigitsMLP()
    after.load_state_dict(load_file(str(tmp_path / "out" / "repaired.safetensors")))
    after.eval()
    x, y = digits16("test")
    planted = Trigger.from_dict(meta["trigger"])
    asr_before, asr_after = (attack_success(m, x, y, planted) for m in (before, after))
    assert asr_before > 0.9 and asr_after < asr_before / 3  # measured: 0.99 -> 0.13
    assert accuracy(after, x, y) >= accuracy(before, x, y) - 0.05


def test_repair_on_a_clean_model_does_nothing(tmp_path: Path, factory: Path, digits_npz: Path) -> None:
    path, _ = weights(tmp_path, "none")
    result = CliRunner().invoke(app, ["audit", "--model", f"{factory}:build", "--weights", str(path), "--data",
                                      str(digits_npz), "--out", str(tmp_path / "out"), "--repair"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "findings.json").read_text())["repair"]["status"].startswith("nothing")
    assert not (tmp_path / "out" / "repaired.safetensors").exists()
