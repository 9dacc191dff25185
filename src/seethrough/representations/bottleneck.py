"""Concept bottleneck models with test-time interventions and a leakage test (Representations / self-explaining).

A `ConceptBottleneck` predicts ``k`` binary concepts from the input and the label from the concepts
only (Koh et al. 2020). `train_concept_bottleneck` builds one three ways: ``"joint"`` (concept and
task losses together, so the task's gradient reaches the concept logits), ``"sequential"`` (concepts
first, then a head on the frozen concept predictions) and ``"independent"`` (concepts first, a head
on the *true* concepts). The head reads hard concepts (0/1), probabilities or logits
(``head_input``). `intervene` replaces predicted concepts by true ones, the test-time intervention
that makes a bottleneck correctable.

A soft bottleneck can carry more than its concepts (Mahinpei et al. 2021; Havasi et al. 2022):
information about the label hidden in *how sure* each concept is, or in concept values bent
towards the label. `leakage_test` measures it on held-out data: fresh heads are trained on the
bottleneck's soft concept outputs, on the same thresholded to 0/1, and on the true concepts; the
leakage is the soft head's accuracy minus the true concepts' (their information ceiling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError
from ..core.modes import eval_mode
from ..core.results import Result, new_figure

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["ConceptBottleneck", "train_concept_bottleneck", "intervene", "leakage_test", "Leakage",
           "BOTTLENECK_MODES", "HEAD_INPUTS"]

BOTTLENECK_MODES = ("joint", "sequential", "independent")
HEAD_INPUTS = ("hard", "probabilities", "logits")


class ConceptBottleneck(nn.Module):
    """``concepts``: input → ``n_concepts`` logits (an MLP); ``head``: concept representation → class logits.

    ``forward(x)`` returns class logits computed from the concepts only; `concept_logits` gives the
    concept logits and `represent` what the head reads (``head_input``).
    """

    def __init__(self, n_inputs: int, n_concepts: int, n_classes: int, *, hidden: int = 64,
                 head_input: str = "probabilities") -> None:
        super().__init__()
        if head_input not in HEAD_INPUTS:
            raise InputError(f"head_input must be one of {HEAD_INPUTS}, got {head_input!r}.")
        self.head_input = head_input
        self.concepts = nn.Sequential(nn.Linear(n_inputs, hidden), nn.ReLU(), nn.Linear(hidden, n_concepts))
        self.head = nn.Sequential(nn.Linear(n_concepts, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def concept_logits(self, x: Tensor) -> Tensor:
        return self.concepts(x)

    def represent(self, logits: Tensor) -> Tensor:
        """What the head reads from concept logits: hard 0/1, probabilities or the logits themselves."""
        if self.head_input == "hard":
            return (logits > 0).to(logits.dtype)
        return torch.sigmoid(logits) if self.head_input == "probabilities" else logits

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.represent(self.concept_logits(x)))


def _data(inputs: Any, concepts: Any, labels: Any) -> tuple[Tensor, Tensor, Tensor]:
    for name, value in (("inputs", inputs), ("concepts", concepts), ("labels", labels)):
        if not isinstance(value, Tensor):
            raise InputTypeError(f"{name} must be a torch tensor, got {type(value).__name__}.")
    if inputs.ndim != 2 or not inputs.is_floating_point():
        raise InputError(f"inputs must be a float (n, d) tensor, got {tuple(inputs.shape)} {inputs.dtype}.")
    if concepts.shape != (len(inputs), concepts.shape[-1]) or concepts.ndim != 2 or not bool(
            ((concepts == 0) | (concepts == 1)).all()):
        raise InputError(f"concepts must be a 0/1 tensor of shape ({len(inputs)}, n_concepts).")
    if labels.dtype != torch.int64 or labels.shape != (len(inputs),):
        raise InputError(f"labels must be an int64 tensor of shape ({len(inputs)},).")
    return inputs.detach().float(), concepts.detach().float(), labels.detach()


def _fit(parameters: Sequence[nn.Parameter], loss_fn, n: int, *, epochs: int, batch_size: int, lr: float,
         generator: torch.Generator) -> None:
    optimiser = torch.optim.Adam(parameters, lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=generator).split(batch_size):
            loss = loss_fn(idx)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()


def train_concept_bottleneck(inputs: Tensor, concepts: Tensor, labels: Tensor, *, mode: str = "joint",
                             head_input: str = "probabilities", concept_weight: float = 1.0, hidden: int = 64,
                             epochs: int = 60, batch_size: int = 64, lr: float = 3e-3,
                             seed: int = 0) -> ConceptBottleneck:
    """A new `ConceptBottleneck` trained on ``(inputs, concepts, labels)``; returned in eval mode.

    ``"joint"`` minimises cross-entropy of the label plus ``concept_weight`` times the concepts'
    binary cross-entropy, end to end. ``"sequential"`` trains the concept predictor on the concepts,
    freezes it, then trains the head on its outputs (``head_input``). ``"independent"`` trains the
    head on the true concepts (as ``head_input`` would show them: 0/1, or probabilities/logits of a
    perfect predictor at ±4) and the concept predictor separately; at test time the head reads the
    predictions. Sequential and independent predictors never see the label: they are task-blind.

    References:
        Koh et al. 2020, "Concept bottleneck models".
    """
    x, c, y = _data(inputs, concepts, labels)
    if mode not in BOTTLENECK_MODES:
        raise InputError(f"mode must be one of {BOTTLENECK_MODES}, got {mode!r}.")
    check_float("concept_weight", concept_weight, at_least=0.0)
    check_int("hidden", hidden, at_least=1)
    check_int("epochs", epochs, at_least=0)
    check_int("batch_size", batch_size, at_least=1)
    check_float("lr", lr, at_least=0.0)
    check_int("seed", seed, at_least=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ConceptBottleneck(x.shape[1], c.shape[1], int(y.max()) + 1, hidden=hidden, head_input=head_input)
    generator = torch.Generator().manual_seed(seed)
    fit = {"n": len(x), "epochs": epochs, "batch_size": batch_size, "lr": lr, "generator": generator}
    model.train()

    def concept_loss(idx: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(model.concept_logits(x[idx]), c[idx])

    if mode == "joint":
        _fit(list(model.parameters()),
             lambda idx: F.cross_entropy(model(x[idx]), y[idx]) + concept_weight * concept_loss(idx), **fit)
    else:
        _fit(list(model.concepts.parameters()), concept_loss, **fit)
        if mode == "sequential":
            with torch.no_grad():
                seen = model.represent(model.concept_logits(x))
        else:
            seen = model.represent(8.0 * c - 4.0)  # a perfect predictor's logits at ±4
        _fit(list(model.head.parameters()), lambda idx: F.cross_entropy(model.head(seen[idx]), y[idx]), **fit)
    for p in model.parameters():
        p.grad = None
    return model.eval()


@torch.no_grad()
def intervene(model: ConceptBottleneck, inputs: Tensor, concepts: Tensor, which: Sequence[int]) -> Tensor:
    """Class logits with the concepts ``which`` set to their true values (logits ±4 for soft heads).

    The test-time intervention of a concept bottleneck: an expert fixes some concepts and the
    prediction follows. ``which`` empty gives the model's own output.
    """
    if not isinstance(model, ConceptBottleneck):
        raise InputTypeError(f"model must be a ConceptBottleneck, got {type(model).__name__}.")
    if not isinstance(inputs, Tensor) or not isinstance(concepts, Tensor):
        raise InputTypeError("inputs and concepts must be torch tensors.")
    width = model.concepts[0].in_features
    if inputs.ndim != 2 or inputs.shape[1] != width or not inputs.is_floating_point():
        raise InputError(f"inputs must be a float (n, {width}) tensor, got {tuple(inputs.shape)} {inputs.dtype}.")
    x, c = inputs.detach(), concepts.detach().to(inputs.dtype)
    if c.shape != (len(x), model.concepts[-1].out_features):
        raise InputError(f"concepts must have shape ({len(x)}, {model.concepts[-1].out_features}).")
    chosen = list(which)
    if any(not 0 <= i < c.shape[1] for i in chosen):
        raise InputError(f"which must list concept indices in [0, {c.shape[1]}), got {chosen}.")
    logits = model.concept_logits(x).clone()
    logits[:, chosen] = 8.0 * c[:, chosen] - 4.0
    return model.head(model.represent(logits))


@dataclass(frozen=True)
class Leakage(Result):
    """Held-out accuracy of fresh heads on a bottleneck's soft concept outputs, the same made hard, and the truth.

    ``leakage = soft_accuracy − truth_accuracy``: task information the bottleneck's concept outputs
    carry beyond what the true concepts allow (their ceiling). ``hard_accuracy`` shows where it hides:
    above the truth too, the predicted concept *values* themselves were bent towards the label;
    at or below it, the information sits in the confidence only.
    """

    soft_accuracy: float
    hard_accuracy: float
    truth_accuracy: float
    leakage: float
    representation: str

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame([{"head reads": f"soft ({self.representation})", "accuracy": self.soft_accuracy},
                             {"head reads": "hard concepts", "accuracy": self.hard_accuracy},
                             {"head reads": "true concepts", "accuracy": self.truth_accuracy}])

    def plot(self) -> Figure:
        fig = new_figure(3.5, 2.5)
        ax = fig.add_subplot()
        frame = self.to_frame()
        ax.bar(range(3), frame["accuracy"], color=["tab:red", "tab:blue", "tab:gray"])
        ax.set_xticks(range(3), ["soft", "hard", "truth"])
        ax.set_ylabel("held-out accuracy")
        ax.set_title(f"leakage {self.leakage:+.3f}", fontsize=9)
        return fig


def _head_accuracy(features: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int) -> float:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    head = MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-3, max_iter=2000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        head.fit(features[train], labels[train])
    return float(head.score(features[test], labels[test]))


@torch.no_grad()
def leakage_test(model: ConceptBottleneck, inputs: Tensor, concepts: Tensor, labels: Tensor, *,
                 representation: str = "logits", test_fraction: float = 0.5, seed: int = 0) -> Leakage:
    """How much task information the bottleneck's soft concept outputs carry beyond their 0/1 values.

    On ``inputs`` (held out from the bottleneck's training), fresh heads (scikit-learn MLPs, 64 hidden
    units, nonlinear so a parity of concepts is learnable) are fitted on a part of the rows and
    scored on the rest, reading (a) the concept ``representation`` (``"logits"`` or
    ``"probabilities"``), (b) the same thresholded at 0.5, and (c) the true ``concepts``. The leakage
    is (a) − (c). Where the label's other causes are independent of the concepts (as in the
    planted-concepts game), a task-blind bottleneck cannot beat its true concepts (its concept errors
    put (a) a little below (c)), while one trained jointly with a soft head can hide label information
    in its concept outputs and (a) exceeds (c). Where the concepts' own inputs carry more about the
    label than the concept values do, a task-blind predictor's confidence can exceed (c) too: that is
    leakage as well, of a kind training cannot avoid. The test needs the true concepts and labels.

    References:
        Mahinpei et al. 2021, "Promises and pitfalls of black-box concept learning models"; Havasi,
        Parbhoo & Doshi-Velez 2022, "Addressing leakage in concept bottleneck models".
    """
    if not isinstance(model, ConceptBottleneck):
        raise InputTypeError(f"model must be a ConceptBottleneck, got {type(model).__name__}.")
    x, c, y = _data(inputs, concepts, labels)
    if representation not in ("logits", "probabilities"):
        raise InputError(f"representation must be 'logits' or 'probabilities', got {representation!r}.")
    check_float("test_fraction", test_fraction, at_least=0.1, at_most=0.9)
    check_int("seed", seed, at_least=0)
    with eval_mode(model):
        logits = model.concept_logits(x)
    soft = (logits if representation == "logits" else torch.sigmoid(logits)).numpy()
    hard = (logits > 0).float().numpy()
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    labels_np = y.numpy()
    soft_acc = _head_accuracy(soft, labels_np, train, test, seed)
    hard_acc = _head_accuracy(hard, labels_np, train, test, seed)
    truth_acc = _head_accuracy(c.numpy(), labels_np, train, test, seed)
    return Leakage(soft_acc, hard_acc, truth_acc, soft_acc - truth_acc, representation)
