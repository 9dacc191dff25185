"""Hygiene cases for streaming probes, INLP erasure, steering and TCAV over several concepts (issue #13 items 1, 2, 5).

Joined into tests/hygiene.py's table (``CASES``, ``EXEMPT``).
"""

from __future__ import annotations

import torch
from hygiene import Case
from models import TinyCNN, TinyMLP, TinyTransformer, images, tokens, vectors

from seethrough import representations as rep


def _labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 2


def _raise_metric(output: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("injected failure in a user metric")


def _halves(x: dict) -> list[dict]:
    return [{k: v[:3] for k, v in x.items()}, {k: v[3:] for k, v in x.items()}]


CASES: list[Case] = [
    Case("probe (a list of token batches)", rep.probe, TinyTransformer, lambda: tokens(6, 5),
         lambda m, x: rep.probe(m, _halves(x), [b["input_ids"] % 2 for b in _halves(x)], "blocks.0",
                                groups=[b["input_ids"] for b in _halves(x)]).to_dict(),
         invalid=(lambda m, x: rep.probe(m, _halves(x), [x["input_ids"] % 2], "blocks.0"),),
         train_mode=True),
    Case("erase (inlp)", rep.erase, TinyMLP, lambda: vectors(16),
         lambda m, x: rep.erase(m, x, _labels(len(x)), "fc1", n_controls=2,
                                eraser=rep.INLPEraser(n_iterations=2)).to_dict(),
         invalid=(lambda m, x: rep.erase(m, x, _labels(len(x)), "fc1", eraser=object()),)),
    Case("steer", rep.steer, TinyMLP, lambda: vectors(12),
         lambda m, x: rep.steer(m, x, torch.ones(8), "fc1", n_controls=3).to_dict(),
         invalid=(lambda m, x: rep.steer(m, x, torch.ones(8), "fc1", metric=_raise_metric),
                  lambda m, x: rep.steer(m, x, torch.ones(3), "fc1"),
                  lambda m, x: rep.steer(m, x, torch.zeros(8), "fc9"))),
    Case("steer (cnn, train mode)", rep.steer, TinyCNN, lambda: images(6),
         lambda m, x: rep.steer(m, x, torch.ones(4 * 6 * 6), "conv", n_controls=2).to_dict(), train_mode=True),
    Case("tcav_concepts", rep.tcav_concepts, TinyMLP, lambda: vectors(12),
         lambda m, x: rep.tcav_concepts(m, {"a": x[:4] + 1, "b": x[4:8]}, x[8:], "fc1", x, 1, n_random=39,
                                        n_runs=2).to_dict(),
         invalid=(lambda m, x: rep.tcav_concepts(m, {"a": x[:4]}, x[4:], "fc1", x, 0, n_random=3,
                                                 metric=_raise_metric),
                  lambda m, x: rep.tcav_concepts(m, {"a": x[:4]}, x[4:], "fc1", x, 0, statistic="magnitude"))),
    Case("tcav (cosine statistic)", rep.tcav, TinyMLP, lambda: vectors(10),
         lambda m, x: rep.tcav(m, x[:4] + 1, x[4:], "fc1", x, 1, n_random=3, statistic="cosine").to_dict()),
]

EXEMPT: dict = {
    rep.INLPEraser: "an estimator on arrays; takes no model (its model-facing user erase is in the table)",
    rep.Steering: "a result dataclass",
    rep.ConceptTests: "a result dataclass",
}
