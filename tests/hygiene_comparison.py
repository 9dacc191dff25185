"""Hygiene cases for issue #13 item 3: representation comparison (joined by hygiene.py)."""

from __future__ import annotations

import torch
from hygiene import Case
from models import TinyMLP, TinyTransformer, tokens, vectors

from seethrough import representations
from seethrough.bench.games import correspondence as correspondence_game
from seethrough.bench.zoo import correspondence as zoo_correspondence


def _digits() -> torch.Tensor:
    return torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))


CASES = [
    Case("compare_sites", representations.compare_sites, TinyMLP, vectors,
         lambda m, x: representations.compare_sites(m, m, x, ["fc1", "act"], ["fc2"], index="pwcca",
                                                    n_permutations=2, n_bootstrap=2, batch_size=2).values,
         invalid=(lambda m, x: representations.compare_sites(m, m, x, ["fc1"], ["fc9"]),
                  lambda m, x: representations.compare_sites(m, m, x, ["fc1"], ["fc2"], index="cosine"),
                  lambda m, x: representations.compare_sites(m, m, x[:1], ["fc1"], ["fc2"]))),
    Case("compare_sites (transformer, train mode)", representations.compare_sites, TinyTransformer, tokens,
         lambda m, x: representations.compare_sites(m, m, x, ["embed"], ["blocks.1"], index="rbf_cka",
                                                    batch_size=2).values,
         train_mode=True),
    Case("permuted_twin", zoo_correspondence.permuted_twin, lambda: zoo_correspondence.StagedCNN(seed=0), _digits,
         lambda m, x: zoo_correspondence.permuted_twin(m, 0)[0](x), runs_forward=False,
         invalid=(lambda m, x: zoo_correspondence.permuted_twin(torch.nn.Identity(), 0),)),
]

EXEMPT = {
    representations.debiased_cka: "compares two arrays; takes no model",
    representations.kernel_cka: "compares two arrays; takes no model",
    zoo_correspondence.StagedCNN: "a model class",
    zoo_correspondence.digits8: "builds data",
    zoo_correspondence.staged_cnn: "builds a new model",
    correspondence_game.CorrespondencePlanted: "a value object",
}
