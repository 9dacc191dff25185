"""The README's Python examples run as written, and its games table is the registry's (docs stay true to behaviour)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from seethrough.bench.listing import games_markdown

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) == len(CHECKS), "add a check for each new README python block"


def games_table(text: str) -> str:
    """The README's table of games: the lines from its header row to the first line that is not a row."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| game | taxonomy item |")), None)
    assert start is not None, "the README has no table of games (a '| game | taxonomy item |' header)"
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end]) + "\n"


def test_readme_games_table_is_generated_from_the_registry() -> None:
    """Issue #9: the table drifted from the code (dissection's bar); now it must equal the registry's."""
    assert games_table(README.read_text()) == games_markdown(), (
        "the README's games table differs from the registry; regenerate it with\n  python -c \"from "
        "seethrough.bench.listing import games_markdown; print(games_markdown(), end='')\"")


def test_games_table_check_fails_on_a_drifted_readme() -> None:
    """Planted bug: a README whose dissection bar drifted (0.6 -> 0.5) is caught."""
    drifted = README.read_text().replace("label_accuracy (0.0833 → 0.6)", "label_accuracy (0.0833 → 0.5)")
    assert drifted != README.read_text()
    assert games_table(drifted) != games_markdown()
    assert games_table("intro\n" + games_markdown() + "\nafter\n") == games_markdown()


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int) -> None:
    namespace: dict = {}
    if index > 0:  # later blocks build on the first (import lines, the toy model)
        exec(compile(BLOCKS[0], "README.md[0]", "exec"), namespace)  # noqa: S102 - our own README
    exec(compile(BLOCKS[index], f"README.md[{index}]", "exec"), namespace)  # noqa: S102 - our own README
    CHECKS[index](namespace)


def _tour(ns: dict) -> None:
    torch, st = ns["torch"], ns["st"]
    assert list(ns["acts"]) == ["0", st.Site("2", point="input")]
    # the last patch doubles layer 0's output: check it against a hand computation
    model, x = ns["model"], ns["x"]
    expected = model[2](torch.relu(model[0](x) * 2))
    torch.testing.assert_close(ns["out"], expected, rtol=0, atol=0)


def _evidence(ns: dict) -> None:
    torch, st = ns["torch"], ns["st"]
    imp, check, model, x = ns["imp"], ns["check"], ns["model"], ns["held_out"]
    assert imp.values.shape == (8,) and len(check.control_effects) == 99
    assert check.in_sample is False and check.n_examples == 8  # discovered on x[:8], validated on x[8:]
    # oracle: the effect is the mean drop of log p(class 0) on the held-out half when the two top units are zeroed
    top = imp.top(2)
    clean = torch.log_softmax(model(x), -1)[:, 0]
    ablated = torch.log_softmax(st.patch(model, x, {st.Site("1", units=top): torch.zeros(2)}), -1)[:, 0]
    assert abs(check.effect - float((clean - ablated).detach().double().mean())) < 1e-5
    assert ns["summarize"]([0.9, 0.7, 1.0, 0.4]).worst == 0.4


def _hf(ns: dict) -> None:
    assert ns["hidden"].shape[-1] == 384 and ns["hidden"].shape[0] == 2
    (cls,) = ns["cls"].values()
    ns["torch"].testing.assert_close(cls, ns["hidden"][:, :1], rtol=0, atol=0)


def _contract(ns: dict) -> None:
    torch = ns["torch"]
    ig, model, x = ns["ig"], ns["model"], ns["x"]
    assert ig.values.shape == x.shape and ns["layer"].values.shape == (16, 8)
    # completeness: attributions sum to F(x) - F(0) up to the reported delta
    gap = model(x)[:, 0] - model(torch.zeros_like(x))[:, 0]
    torch.testing.assert_close(ig.values.sum(1) - gap.detach(), ig.delta, rtol=0, atol=1e-5)
    assert isinstance(ns["cka"](ns["acts"]["0"], ns["acts"]["0"]), float)


def _neurons(ns: dict) -> None:
    torch, st = ns["torch"], ns["st"]
    model, x = ns["model"], ns["x"]
    act = st.capture(model, x, ["1"])["1"]
    # oracles: the exemplars are the k largest values per unit, steering adds alpha * direction
    torch.testing.assert_close(ns["top"].values, act.topk(5, dim=0).values, rtol=0, atol=0)
    by_hand = st.patch(model, x, {"1": lambda v, s: v + 4.0 * torch.ones(8)})  # used as given, not normalised
    torch.testing.assert_close(ns["steered"], by_hand)
    assert ns["smooth"].values.shape == x.shape and ns["dream"].images.shape[1:] == (4,)
    assert ns["ablated"].shape == (16, 3) and len(ns["hazards"].to_frame()) == 8


CHECKS = [_tour, _hf, _evidence, _contract, _neurons]  # in README order
