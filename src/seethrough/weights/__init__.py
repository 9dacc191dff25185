"""seethrough.weights: which weights matter for what (continual learning as a lens, weight masks, pruning).

`importance` scores every weight for a task (diagonal Fisher of EWC in its empirical, exact, sampled and
batched variants, MAS, magnitude, SNIP, Taylor); `learn_mask` learns a binary mask over a frozen
network's weights that keeps a behaviour with as few weights as possible; `overlap` compares the
weights two tasks use. `train_sequential` trains a copy on tasks in sequence with an EWC, SI or MAS
penalty (SI's path integral is an importance map of its own); `allocate` (PackNet) and `unit_allocation`
say which weights and units each task owns. `prune`, `sparsity_curve` and `lottery_ticket` find frivolous
weights; `validate_mask` tests a mask finding against random masks of the same size. Imports only
`seethrough.core` and `seethrough.evidence`.
"""

from .allocation import UNIT_METHODS, Allocation, UnitAllocation, allocate, unit_allocation
from .continual import PENALTIES, SequentialTraining, quadratic_penalty, train_sequential
from .importance import FISHER_VARIANTS, METHODS, Importance, importance
from .masks import WeightMask, learn_mask
from .overlap import Overlap, overlap
from .pruning import (
    SCOPES,
    STRUCTURES,
    LotteryTicket,
    PruningMask,
    SparsityCurve,
    lottery_ticket,
    prunable_parameters,
    prune,
    reinitialised,
    shuffled_masks,
    sparsity_curve,
    train_sparse,
)
from .validation import MaskValidation, correct, validate_mask

__all__ = ["importance", "Importance", "METHODS", "FISHER_VARIANTS", "learn_mask", "WeightMask", "overlap",
           "Overlap"]
__all__ += ["train_sequential", "SequentialTraining", "quadratic_penalty", "PENALTIES"]
__all__ += ["allocate", "Allocation", "unit_allocation", "UnitAllocation", "UNIT_METHODS"]
__all__ += ["prune", "PruningMask", "prunable_parameters", "sparsity_curve", "SparsityCurve", "lottery_ticket",
            "LotteryTicket", "train_sparse", "reinitialised", "shuffled_masks", "SCOPES", "STRUCTURES",
            "validate_mask", "MaskValidation", "correct"]
