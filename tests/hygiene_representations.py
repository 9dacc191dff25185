"""Hygiene cases for probing, concept erasure and TCAV (issue #13): joined into tests/hygiene.py's table."""

from __future__ import annotations

import torch
from hygiene import Case
from models import TinyCNN, TinyMLP, TinyTransformer, images, tokens, vectors

from seethrough import representations as rep
from seethrough.bench.zoo import probing as probing_zoo
from seethrough.bench.zoo import reliance as reliance_zoo


def _labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 2


def _raise_metric(output: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("injected failure in a user metric")


def _ids(x: dict) -> torch.Tensor:
    return x["input_ids"]


CASES: list[Case] = [
    Case("probe", rep.probe, TinyMLP, lambda: vectors(12),
         lambda m, x: rep.probe(m, x, _labels(len(x)), "fc1").to_dict(),
         invalid=(lambda m, x: rep.probe(m, x, _labels(len(x)), "fc9"),
                  lambda m, x: rep.probe(m, x, _labels(len(x) + 1), "fc1"),
                  lambda m, x: rep.probe(m, x, torch.zeros(len(x), dtype=torch.long), "fc1"))),
    Case("probe (transformer positions, groups, mlp probe, train mode)", rep.probe, TinyTransformer,
         lambda: tokens(6, 5),
         lambda m, x: rep.probe(m, x, _ids(x) % 2, "blocks.0", groups=_ids(x), batch_size=2,
                                estimator=rep.MLPProbe(d_hidden=4, epochs=3)).to_dict(),
         train_mode=True),
    Case("erase", rep.erase, TinyMLP, lambda: vectors(12),
         lambda m, x: rep.erase(m, x, _labels(len(x)), "fc1", n_controls=3).to_dict(),
         invalid=(lambda m, x: rep.erase(m, x, _labels(len(x)), "fc1", metric=_raise_metric),
                  lambda m, x: rep.erase(m, x, _labels(len(x)), "fc1", n_controls=0))),
    Case("erase (cnn, train mode)", rep.erase, TinyCNN, lambda: images(8),
         lambda m, x: rep.erase(m, x, _labels(len(x)), "conv", n_controls=2).to_dict(), train_mode=True),
    Case("tcav", rep.tcav, TinyMLP, lambda: vectors(10),
         lambda m, x: rep.tcav(m, x[:4] + 1, x[4:], "fc1", x, 1, n_random=3).to_dict(),
         invalid=(lambda m, x: rep.tcav(m, x[:4], x[4:], "fc1", x, 5, n_random=3),
                  lambda m, x: rep.tcav(m, x[:4], x[4:], "fc1", x, 0, n_random=3, metric=_raise_metric))),
    Case("tcav (cnn, train mode)", rep.tcav, TinyCNN, lambda: images(8),
         lambda m, x: rep.tcav(m, x[:3], x[3:], "conv", x, 2, n_random=2).to_dict(), train_mode=True),
    Case("directional_derivatives", rep.directional_derivatives, TinyMLP, vectors,
         lambda m, x: rep.directional_derivatives(m, x, "act", 0, torch.eye(8)),
         per_example=lambda d: d.T,
         invalid=(lambda m, x: rep.directional_derivatives(m, x, "act", 0, torch.eye(3)),)),
]

EXEMPT: dict = {
    rep.ProbeResult: "a result dataclass",
    rep.Erasure: "a result dataclass",
    rep.TCAVResult: "a result dataclass",
    rep.LinearProbe: "an estimator on arrays; takes no model",
    rep.MLPProbe: "an estimator on arrays; takes no model",
    rep.LeaceEraser: "an estimator on arrays; takes no model (its model-facing user erase is in the table)",
    rep.fit_cavs: "fits classifiers on arrays; takes no model",
    probing_zoo.CategoryModel: "a model class",
    probing_zoo.token_properties: "builds data",
    probing_zoo.category_task: "builds data",
    probing_zoo.trained_category_model: "builds a new model",
    reliance_zoo.add_mark: "edits images; takes no model",
    reliance_zoo.marked_digits_classifier: "builds a new model",
}
