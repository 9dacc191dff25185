"""The HTML report: hostile strings render inert, one image per game, every number shown; checked in Chromium.

DESIGN §8: "hostile strings in reports are harmless". The page is parsed with the standard library's
HTMLParser, and rendered by headless Chromium (a screenshot that must show something, and the DOM
after load, which must hold no trace of script execution).
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from seethrough.core.errors import InputError
from seethrough.report import GameSection, MetricRow, figure_to_data_uri, strip_plot, write_report

PNG_URI = "data:image/png;base64,"
# Each would run script (and leave a mark in the DOM) if it reached the page unescaped.
HOSTILE = (
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "\"quotes' & ampersands",
    "</script>",
    "javascript:alert(1)",
    "<script>document.body.appendChild(document.createElement('pwned'))</script>",
    "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">",
    "<a href=\"javascript:alert(1)\">click</a>",
    "$\\frac{1}{0$ {{ 7*7 }}",  # broken mathtext for matplotlib, template syntax for Jinja
)


def _row(game: str, method: str, metric: str, values: list[float], *, chance: float | None = 0.5,
         bar: float | None = 0.6) -> MetricRow:
    array = np.asarray(values)
    passed = None if bar is None else bool(array.min() >= bar)
    return MetricRow(game, method, metric, len(values), float(array.mean()), float(np.median(array)),
                     float(array.min()), float(array.mean()) - 0.05, float(array.mean()) + 0.05, chance, bar, passed)


def _section(name: str, methods: list[str], metrics: list[str], *, seed: int, description: str = "a game",
             errors: tuple[str, ...] = ()) -> GameSection:
    rng = np.random.default_rng(seed)
    rows, cases = [], {}
    for metric in metrics:
        cases[metric] = {}
        for method in methods:
            values = np.clip(rng.normal(0.7, 0.1, 12), 0.0, 1.0).round(6).tolist()
            cases[metric][method] = values
            rows.append(_row(name, method, metric, values))
    return GameSection(name, "Neurons / perturbation & ablation", description, tuple(rows), cases,
                       dict.fromkeys(metrics, True), errors)


def _hostile_sections() -> list[GameSection]:
    return [
        _section(f"ablation {HOSTILE[1]}", ["ours", f"random {HOSTILE[8]}", HOSTILE[2]], ["auc"], seed=0,
                 description=f"Planted dead units {HOSTILE[0]} {HOSTILE[5]}",
                 errors=(f"ablation/random seed 3: ValueError: {HOSTILE[3]}", f"seed 4: {HOSTILE[6]}")),
        _section("trojan", ["neural-cleanse", HOSTILE[7], "abs", "spectral"], ["auc", "iou", "asr"], seed=1),
        _section(HOSTILE[4], [HOSTILE[5]], ["acc", HOSTILE[6]], seed=2, description=HOSTILE[7]),
    ]


HOSTILE_META = {"command": f"seethrough bench --quick {HOSTILE[0]}", "seeds": "12", HOSTILE[4]: HOSTILE[3],
                "note": HOSTILE[7]}
HOSTILE_TITLE = f"bench {HOSTILE[0]}"
SAFE_ATTRIBUTES = {"lang", "charset", "http-equiv", "content", "name", "class", "src", "alt"}


class _Page(HTMLParser):
    """Collects tags with attributes, visible text, and table rows (as lists of cell texts)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def _cells(row: MetricRow) -> list[str]:
    def number(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    verdict = {True: "✓", False: "✗", None: "—"}[row.passed]
    return [row.game, row.method, row.metric, str(row.n), number(row.mean), number(row.median), number(row.worst),
            f"[{number(row.ci_low)}, {number(row.ci_high)}]", number(row.chance), number(row.bar), verdict]


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[GameSection]]:
    sections = _hostile_sections()
    path = write_report(tmp_path_factory.mktemp("report"), sections, title=HOSTILE_TITLE, meta=HOSTILE_META)
    return path, sections


def test_hostile_strings_render_as_inert_text(hostile_report: tuple[Path, list[GameSection]]) -> None:
    path, sections = hostile_report
    html = path.read_text(encoding="utf-8")
    page = _parse(html)
    assert not page.named("script") and not page.named("a") and not page.named("pwned")
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), f"<{tag}> has an event handler {name}={value!r}"
            # only the attributes the template writes; none of them can carry a URL except <img src>
            assert name in SAFE_ATTRIBUTES, f"<{tag}> has an unexpected attribute {name}={value!r}"
        if tag == "img":
            assert (attrs["src"] or "").startswith(PNG_URI)
    without_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "", html)
    assert not re.search(r"(?i)https?:|//|url\(|@import", without_images), "the page links something outside itself"
    # each hostile string reaches the reader as the very text it was, escaped in the source
    text = "".join(page.text)
    for hostile in HOSTILE:
        assert hostile in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&#34;quotes&#39; &amp; ampersands" in html
    assert "{{ 7*7 }}" in text  # user text is never evaluated as a template
    assert page.named("title") and HOSTILE_TITLE in text


def test_one_image_per_game_named_in_its_alt_text(hostile_report: tuple[Path, list[GameSection]]) -> None:
    path, sections = hostile_report
    page = _parse(path.read_text(encoding="utf-8"))
    images = page.named("img")
    assert len(images) == len(sections) == len(page.named("section"))
    for attrs, section in zip(images, sections, strict=True):
        assert section.name in (attrs["alt"] or "")
        png = base64.b64decode((attrs["src"] or "")[len(PNG_URI):], validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_tables_hold_every_row_in_summary_and_section(hostile_report: tuple[Path, list[GameSection]]) -> None:
    path, sections = hostile_report
    page = _parse(path.read_text(encoding="utf-8"))
    assert len(page.named("table")) == 2 + len(sections)  # meta, summary, one per game
    header = ["game", "method", "metric", "n", "mean", "median", "worst", "95% CI", "chance", "bar", "pass"]
    assert page.rows.count(header) == 1 + len(sections)
    all_rows = [row for section in sections for row in section.rows]
    assert [r for r in page.rows if len(r) == len(header) and r != header] == (
        [_cells(row) for row in all_rows] + [_cells(row) for row in all_rows])  # summary, then each section
    meta_rows = [r for r in page.rows if len(r) == 2]
    assert meta_rows == [[k, v] for k, v in HOSTILE_META.items()]


def test_missing_values_and_errors_are_shown(tmp_path: Path) -> None:
    values = [0.25, 0.5]
    row = _row("dead units", "ours", "f1", values, chance=None, bar=None)
    section = GameSection("dead units", "Neurons / dead", "d", (row,), {"f1": {"ours": values}}, {"f1": False},
                          ("dead units/ours seed 1: RuntimeError: x", "dead units/ours seed 2: RuntimeError: y"))
    failing = GameSection("empty", "Weights / masks", "every case failed", (), {}, {}, ("empty/ours seed 0: boom",))
    page = _parse(write_report(tmp_path, [section, failing]).read_text(encoding="utf-8"))
    assert _cells(row) == ["dead units", "ours", "f1", "2", "0.375", "0.375", "0.250", "[0.325, 0.425]", "—", "—",
                           "—"]
    assert _cells(row) in page.rows
    assert len(page.named("img")) == 2  # a game with no finished case still gets its (empty) figure
    assert len(page.named("li")) == 3
    text = "".join(page.text)
    assert "RuntimeError: y" in text and "empty/ours seed 0: boom" in text and "seethrough bench" in text


def test_write_is_atomic_and_replaces_the_page(tmp_path: Path) -> None:
    first = write_report(tmp_path / "new" / "dir", [_section("a", ["m"], ["x"], seed=0)], title="one")
    second = write_report(tmp_path / "new" / "dir", [_section("a", ["m"], ["x"], seed=0)], title="two")
    assert first == second == tmp_path / "new" / "dir" / "index.html"
    assert [p.name for p in first.parent.iterdir()] == ["index.html"]  # no temp file left behind
    assert "<title>two</title>" in second.read_text(encoding="utf-8")
    assert first.stat().st_mode & 0o444 == 0o444  # readable by all, unlike a bare mkstemp file


def test_bad_reports_are_refused(tmp_path: Path) -> None:
    game = _section("a", ["m"], ["x"], seed=0)
    with pytest.raises(InputError, match="twice"):
        write_report(tmp_path, [game, game])
    stray = GameSection("b", "i", "d", game.rows, game.cases, game.higher_is_better)
    with pytest.raises(InputError, match="other games"):
        write_report(tmp_path, [stray])
    nan = GameSection("a", "i", "d", game.rows, {"x": {"m": [0.5, float("nan")]}}, {"x": True})
    with pytest.raises(InputError, match="'m'"):
        write_report(tmp_path, [nan])
    # wrong *types* may be caught by the test-time type checker first (a TypeError too)
    with pytest.raises(TypeError, match="meta"):
        write_report(tmp_path, [game], meta={"seeds": 3})  # type: ignore[dict-item]  # the refusal under test
    with pytest.raises(TypeError):
        write_report(tmp_path, [game.name])  # type: ignore[list-item]  # the refusal under test
    assert not (tmp_path / "index.html").exists()


def test_strip_plot_draws_every_case_a_box_and_both_lines_without_global_state() -> None:
    import matplotlib.pyplot as plt  # only to see that no figure is registered with pyplot

    rc_before, figures_before, backend = dict(matplotlib.rcParams), plt.get_fignums(), matplotlib.get_backend()
    values = {"ours": [0.9, 0.8, 0.95, 0.7], "random": [0.5, 0.4], "$\\frac{1}{0$": [0.6]}
    fig = strip_plot(values, chance=0.5, bar=0.75, metric="auc", title="ablation $x$", higher_is_better=False)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    dots = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(dots) == 7 and sorted(dots[:, 1].tolist()) == sorted(sum(values.values(), []))
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert lines["chance = 0.500"].get_linestyle() == "--" and lines["chance = 0.500"].get_ydata()[0] == 0.5
    assert lines["pass bar = 0.750"].get_linestyle() == "-" and lines["pass bar = 0.750"].get_ydata()[0] == 0.75
    assert "lower is better" in ax.get_ylabel() and ax.get_title() == "ablation $x$"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ours\n(n=4)", "random\n(n=2)", "$\\frac{1}{0$\n(n=1)"]
    assert figure_to_data_uri(fig).startswith(PNG_URI)  # broken mathtext in a name renders as plain text
    again = strip_plot(values, chance=0.5, bar=0.75, metric="auc", title="ablation $x$", higher_is_better=False)
    np.testing.assert_array_equal(np.concatenate([c.get_offsets() for c in again.axes[0].collections]), dots)
    assert plt.get_fignums() == figures_before and matplotlib.get_backend() == backend
    assert dict(matplotlib.rcParams) == rc_before


def test_figure_to_data_uri_is_a_deterministic_base64_png() -> None:
    fig = strip_plot({"m": [0.1, 0.2, 0.3]}, chance=None, bar=None, metric="x", title="t")
    uri = figure_to_data_uri(fig)
    assert re.fullmatch(r"data:image/png;base64,[A-Za-z0-9+/]+={0,2}", uri)
    image = Image.open(io.BytesIO(base64.b64decode(uri[len(PNG_URI):])))
    assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
    assert figure_to_data_uri(fig) == uri
    with pytest.raises(TypeError, match="Figure"):  # ours, or the test-time type checker's
        figure_to_data_uri("not a figure")  # type: ignore[arg-type]  # the refusal under test


# ---- headless Chromium -------------------------------------------------------------------------------------

CHROMIUM_TIMEOUT_S = 60


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install -y chromium); this "
                    "test renders the report in a real browser and must not be skipped.")
    return found


def _run_chromium(extra: list[str], page: Path, profile: Path) -> subprocess.CompletedProcess[str]:
    args = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
    # its own session, so that on a timeout we kill chromium's whole process group and nothing else
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "HOME": str(profile)})
    try:
        out, err = proc.communicate(timeout=CHROMIUM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {CHROMIUM_TIMEOUT_S} s: {' '.join(args)}")
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {err[-2000:]}"
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_chromium_renders_the_report_and_runs_nothing(hostile_report: tuple[Path, list[GameSection]],
                                                      tmp_path: Path) -> None:
    path, sections = hostile_report
    shot = tmp_path / "shot.png"
    _run_chromium([f"--screenshot={shot}", "--window-size=1200,2000"], path, tmp_path / "profile-shot")
    assert shot.is_file() and shot.stat().st_size > 10_000
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (2000, 1200, 3)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100, "the screenshot is (nearly) one flat colour"
    inked = (pixels.min(axis=2) < 200).mean()
    assert 0.02 < inked < 0.6, f"{inked:.1%} of the screenshot is drawn on; expected text, tables and plots"

    dom = _parse(_run_chromium(["--dump-dom"], path, tmp_path / "profile-dom").stdout)
    assert len(dom.named("img")) == len(sections)
    assert all((attrs.get("src") or "").startswith(PNG_URI) for attrs in dom.named("img"))
    assert len(dom.named("table")) == 2 + len(sections) and len(dom.named("section")) == len(sections)
    # no script ran: the payloads would have added a <pwned> element or a data-pwned attribute
    assert not dom.named("script") and not dom.named("pwned")
    assert all("data-pwned" not in attrs for _, attrs in dom.tags)
    assert all(not name.startswith("on") for _, attrs in dom.tags for name in attrs)
    text = "".join(dom.text)
    assert HOSTILE_TITLE in text and all(hostile in text for hostile in HOSTILE)
    expected = [_cells(row) for section in sections for row in section.rows]
    assert [r for r in dom.rows if len(r) == 11 and r[0] != "game"] == expected + expected
