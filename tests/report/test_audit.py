"""The audit's HTML page (issue #10, items 6 and 7): the verdict with its limits, reasons of an inconclusive
scan, suspects near the threshold highlighted, the implicated-units cell naming its site, headers that do not
wrap mid-word, and control/bidi characters in class names shown visibly (findings.json keeps them)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from models import TinyCNN, images

from seethrough.audit import AuditResult, scan, trigger_units
from seethrough.evidence import Finding, Trigger, Validation
from seethrough.report import write_audit_report
from seethrough.report.audit import visible

HOSTILE = ("rtl\u202eevil", "nul\x00byte", "zero\u200bwidth")


def _trigger() -> Trigger:
    mask = torch.zeros(6, 6)
    mask[1:3, 1:3] = 1.0
    return Trigger(mask, torch.ones(1, 6, 6), 1, "patch")


@pytest.fixture(scope="module")
def result() -> tuple[AuditResult, torch.Tensor]:
    """A real (too short, hence inconclusive) scan of a tiny CNN, with a validated finding and its units
    spliced in (built without the model's hooks), and the patch gap set near the threshold."""
    model, x = TinyCNN().eval(), images(16)
    found = scan(model, x, class_names=HOSTILE, steps=10, n_controls=20)
    finding = Finding("trojan", "planted", trigger=_trigger(), score=3.0,
                      evidence={"trigger_family": "patch", "gap_to_runner_up": 3.0})
    validation = Validation("trojan", 1.0, 1.0, 1.0, 0.01, (0.0,), len(x))
    units = dataclasses.replace(trigger_units(model, x, _trigger(), site="act", k=2, n_controls=3),
                                validation=validation)
    return dataclasses.replace(found, findings=(finding,), validations=(validation,), internal=(units,),
                               gaps={"patch": 1.7, "blend": 1.0, "warp": 1.0}), x


def _page(result: AuditResult, x: torch.Tensor, tmp_path: Path) -> str:
    return write_audit_report(tmp_path, result, x).read_text(encoding="utf-8")


def test_visible_shows_control_format_and_separator_characters() -> None:
    assert visible("a\u202eb\x00c\u200bd\u2028e f\tg") == "a<U+202E>b<U+0000>c<U+200B>d<U+2028>e f<U+0009>g"
    assert visible("plain name, é ü 中") == "plain name, é ü 中"


def test_control_and_bidi_characters_in_class_names_never_reach_the_html(result, tmp_path: Path) -> None:
    found, x = result
    page = _page(found, x, tmp_path)
    assert not re.search("[\u202a-\u202e\u2066-\u2069\u200b\x00]", page)
    assert "rtl&lt;U+202E&gt;evil" in page and "nul&lt;U+0000&gt;byte" in page and "zero&lt;U+200B&gt;width" in page
    record = json.loads(json.dumps(found.to_dict(), allow_nan=False))  # findings.json keeps the names as data
    assert [row["class_name"] for row in record["scan"]] == list(HOSTILE)


def test_an_inconclusive_page_says_why_and_states_the_summary(result, tmp_path: Path) -> None:
    found, x = result
    assert found.verdict == "inconclusive" and found.reasons  # 10 steps on a tiny CNN: the search could not finish
    page = _page(found, x, tmp_path)
    assert 'class="verdict inconclusive"' in page and "The scan could not decide" in page
    for reason in found.reasons:
        assert visible(reason).replace("'", "&#39;") in page


def test_a_suspect_near_the_threshold_is_highlighted(result, tmp_path: Path) -> None:
    found, x = result
    suspect = found.scans["patch"].suspect
    assert found.near_threshold == [{"family": "patch", "class": suspect, "class_name": HOSTILE[suspect],
                                     "gap": 1.7, "min_gap": 2.0}]
    page = _page(found, x, tmp_path)
    assert "Near the threshold" in page and page.count('<tr class="near') == 2  # the list and the scan row
    assert f'<tr class="near suspect"><td class="text">{suspect}: ' in page


def test_the_implicated_units_cell_names_the_site(result, tmp_path: Path) -> None:
    found, x = result
    page = _page(found, x, tmp_path)
    units = ", ".join(str(u) for u in found.internal[0].units)
    assert f"site &#39;act&#39; (output of that module), units {units};" in page


def test_table_headers_do_not_wrap_mid_word(result, tmp_path: Path) -> None:
    """Regression (issue #10): headers broke inside words ("anomal-y") under `overflow-wrap: anywhere`."""
    found, x = result
    style = _page(found, x, tmp_path).split("<style>")[1].split("</style>")[0]
    rules = dict(re.findall(r"([^{}]+)\{([^}]*)\}", style))
    th = next(body for selector, body in rules.items() if selector.strip() == "th")
    assert "word-break: keep-all" in th and "overflow-wrap: normal" in th
    anywhere = [s.strip() for s, body in rules.items() if "anywhere" in body or "break-all" in body]
    assert anywhere and all(s.startswith("td") for s in anywhere), anywhere


def test_a_warp_finding_shows_its_field_and_every_finding_its_identifiable_pixels(result, tmp_path: Path) -> None:
    """Issue #11: a warp finding (a displacement field, no pattern) renders with its reversed field, beside a
    patch finding of another class (several trojans); class names stay escaped in both rows."""
    found, x = result
    field = torch.zeros(2, 6, 6)
    field[0] = 0.5
    warp = Trigger(torch.ones(6, 6), torch.zeros(1, 6, 6), 2, "warp", field)
    finding = Finding("trojan", "planted warp", trigger=warp, score=2.0,
                      evidence={"trigger_family": "warp", "gap_to_runner_up": 2.5, "refined": False})
    pixels = torch.zeros(6, 6, dtype=torch.bool)
    pixels[1:3, 1:3] = True
    two = dataclasses.replace(found, findings=(found.findings[0], finding),
                              validations=(found.validations[0], found.validations[0]),
                              internal=(found.internal[0], None), identifiable=(pixels, None))
    page = _page(two, x, tmp_path)
    assert 'alt="reversed warp field for class 2"' in page and "0.500 px (mean displacement)" in page
    assert "zero&lt;U+200B&gt;width" in page and not re.search("[\u202a-\u202e\u200b\x00]", page)
    rows = page.split("<h2>Findings</h2>")[1].split("</table>")[0]
    assert rows.count("<tr><td") == 2 and "<td>4</td>" in rows  # the patch finding's 4 identifiable pixels
    record = json.loads(json.dumps(two.to_dict(), allow_nan=False))
    assert [f["identifiable_pixels"] for f in record["findings"]] == [4, None]
    assert record["findings"][1]["trigger_field"] == field.tolist()
