"""Hygiene cases for issue #15: the weights area (importance, learned masks), joined by hygiene.py.

Every method runs the model through torch.func on detached parameters and must leave it exactly as
found: no ``.grad``, no ``requires_grad`` flip, modes restored (they run in eval mode), the global RNG
untouched. ``learn_mask``'s case also applies and ablates its mask: both return copies.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from hygiene import Case
from models import TinyCNN, TinyMLP, TinyTransformer, images, tokens, vectors

from seethrough import weights
from seethrough.bench.games import masks as masks_game
from seethrough.bench.games import pruning as pruning_game
from seethrough.bench.games import weights as weights_game
from seethrough.bench.zoo import irrelevance, task_weights


def _labels(x: Any) -> torch.Tensor:
    n = len(x) if isinstance(x, torch.Tensor) else len(x["input_ids"])
    return torch.arange(n) % 3


def _scores(result: weights.Importance) -> torch.Tensor:
    return torch.cat([s.flatten() for s in result.scores.values()])


def _mask_and_copies(m: torch.nn.Module, x: Any) -> torch.Tensor:
    result = weights.learn_mask(m, x, _labels(x), steps=5, seed=1)
    result.apply(m), result.ablate(m)
    return torch.cat([v.flatten() for v in result.masks.values()])


CASES: list[Case] = [
    *[Case(f"importance ({method})", weights.importance, TinyMLP, vectors,
           lambda m, x, method=method: _scores(weights.importance(m, x, _labels(x), method=method)),
           invalid=(lambda m, x, method=method: weights.importance(m, x, _labels(x)[:2], method=method),
                    lambda m, x: weights.importance(m, x, _labels(x) + 5, method="fisher")))
      for method in ("fisher", "mas", "snip", "taylor")],
    Case("importance (magnitude)", weights.importance, TinyMLP, vectors,
         lambda m, x: _scores(weights.importance(m, x, None, method="magnitude")), runs_forward=False,
         invalid=(lambda m, x: weights.importance(m, x, None, method="hessian"),)),
    *[Case(f"importance (fisher {variant}, cnn, train mode)", weights.importance, TinyCNN, images,
           lambda m, x, variant=variant: _scores(weights.importance(m, x, _labels(x), method="fisher", variant=variant,
                                                                    batch_size=2)),
           train_mode=True)
      for variant in ("exact", "sampled", "batched")],
    Case("importance (transformer, keyword inputs, custom loss)", weights.importance, TinyTransformer, tokens,
         lambda m, x: _scores(weights.importance(m, x, _labels(x), method="taylor",
                                                 loss=lambda out, y: F.cross_entropy(out[:, -1, :3], y))),
         train_mode=True),
    Case("learn_mask", weights.learn_mask, TinyMLP, vectors, _mask_and_copies,
         invalid=(lambda m, x: weights.learn_mask(m, x, _labels(x), steps=0),
                  lambda m, x: weights.learn_mask(m, x, _labels(x), parameters=["fc9.weight"]))),
    Case("learn_mask (cnn, train mode)", weights.learn_mask, TinyCNN, images, _mask_and_copies, train_mode=True),
]

EXEMPT: dict[Any, str] = {
    weights.Importance: "a result dataclass",
    weights.WeightMask: "a result dataclass (apply/ablate return copies; exercised by the learn_mask cases)",
    weights.Overlap: "a result dataclass",
    weights.overlap: "compares two boolean selections; takes no model",
    task_weights.two_task_network: "builds a new model",
    task_weights.TaskWeights: "a planted case (a model and its answer key)",
    task_weights.TaskHead: "a model class (one task's view of a network)",
    weights_game.TaskWeightsAnswer: "a game answer (scores per task)",
    weights_game.task_auroc: "ranks numbers; takes no model",
    masks_game.MaskAnswer: "a game answer (masks per task)",
    masks_game.jaccard: "compares masks; takes no model",
    irrelevance.planted_irrelevance: "builds a new model",
    irrelevance.PlantedIrrelevance: "a planted case (a model and its answer key)",
    pruning_game.PruningAnswer: "a game answer (scores per weight)",
    pruning_game.largest_sparsity: "prunes copies of a planted case's own network (functional_call); never edits it",
}
