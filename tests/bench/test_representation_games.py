"""The probing and TCAV games' zoo entries hold their planted truth (issue #13), and the games score as declared."""

from __future__ import annotations

import torch

from seethrough import patch
from seethrough.bench.games import GAMES
from seethrough.bench.games.probing import ProbingAnswer, ProbingPlanted
from seethrough.bench.zoo import generator
from seethrough.bench.zoo.probing import category_task, trained_category_model
from seethrough.bench.zoo.reliance import add_mark, marked_digits_classifier


def test_category_model_solves_its_task_and_never_reads_the_planted_properties() -> None:
    model, meta = trained_category_model(0)
    assert meta["accuracy"] >= 0.95 and meta["ablation_change"] == 0.0
    tokens, _ = category_task(generator(0, "check"), 64, meta["seq_len"], torch.tensor(meta["category"]))
    n_unused = len(meta["unused"])
    # the oracle by intervention: replace the planted dimensions by noise; the output is bit-identical
    noise = torch.randn(64, meta["seq_len"], n_unused, generator=torch.Generator().manual_seed(0))

    def scramble(value: torch.Tensor, site: object) -> torch.Tensor:
        return torch.cat([value[..., :-n_unused], noise], -1)

    with torch.no_grad():
        assert torch.equal(patch(model, tokens, {"embed": scramble}), model(tokens))
        planted = model.embed.weight[:, -n_unused:]
    assert torch.equal(planted, (torch.tensor(meta["unused"]).T * 2 - 1).float())  # exactly decodable


def test_marked_digits_reliance_grows_with_the_planted_strength() -> None:
    weak, strong = marked_digits_classifier(0, 0.0)[1], marked_digits_classifier(0, 1.0)[1]
    assert weak["accuracy"] >= 0.9 and strong["accuracy"] >= 0.9
    assert abs(weak["reliance"]) <= 0.05 and strong["reliance"] >= 0.8
    assert add_mark(torch.zeros(1, 1, 16, 16)).sum() == 9.0


def test_probing_score_is_the_auroc_of_used_scores_with_the_category_first() -> None:
    score = GAMES["decodable-but-unused"].score
    labels = tuple(torch.zeros(1, 1, dtype=torch.long) for _ in range(5))
    planted = ProbingPlanted(torch.nn.Identity(), torch.zeros(1, 1, dtype=torch.long), labels, "embed", 0)
    assert score(ProbingAnswer(0.3, (0.9, 0.1, 0.2, 0.3, 0.0)), planted)["used_auroc"] == 1.0
    assert score(ProbingAnswer(0.3, (0.1, 0.9, 0.2, 0.3, 0.0)), planted)["used_auroc"] == 0.25
    assert {"decodable-but-unused", "planted-reliance"} <= set(GAMES)
