"""Games for gradient attribution (Neurons / gradient attribution): localisation, sanity checks, faithfulness, ROAR.

* `AttributionLocalisationGame` (G3): on images stamped with a planted trojan trigger, the
  target-class attribution should sit on the trigger (Spearman and pixel AUROC against its mask).
* `SanityCheckGame` (G4): maps must change when the model does (top-layer, cascading and
  independent weight randomisation, and a twin trained on shuffled labels; Adebayo et al. 2018).
* `FaithfulnessGame` (G5a): on tabular data with k known relevant features, the top-k attributed
  features should be the relevant ones (chance k/d).
* `RoarGame` (G5b): remove the top-attributed pixels, retrain, and compare the accuracy drop with
  removing random pixels (Hooker et al. 2019).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...evidence.ranks import auroc, spearman
from ...neurons.attribution import gradient_x_input, integrated_gradients, saliency
from ...neurons.guided import guided_backprop
from ...neurons.smoothing import smoothgrad, vargrad
from ..zoo._seeding import derive_seed, generator, materialise
from ..zoo.cache import cached
from ..zoo.classifiers import DigitsCNN, DigitsMLP, evaluate, train_classifier, trojaned_classifier
from ..zoo.data import digits16
from ..zoo.tabular import tabular_task, trained_tabular_mlp
from ..zoo.trojans import Trigger, stamp
from .base import LegacyGame as Game
from .base import Metric, case_generator

__all__ = ["AttributionLocalisationGame", "SanityCheckGame", "FaithfulnessGame", "RoarGame", "attribution_map",
           "spearman_rows", "auroc_rows", "sobel_map", "weight_layers", "randomise_layers", "random_label_twin",
           "remove_top_pixels"]

GRADIENT_METHODS = ("saliency", "gradient-x-input", "integrated-gradients", "smoothgrad", "guided-backprop")


def attribution_map(method: str, model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """The signed attribution of ``target`` to ``x`` by a named gradient method, shaped like ``x``.

    Example:
        >>> attribution_map("saliency", nn.Linear(2, 2), torch.ones(3, 2), torch.zeros(3, dtype=torch.long)).shape
        torch.Size([3, 2])
    """
    if method == "saliency":
        return saliency(model, x, target, absolute=False).values
    if method == "gradient-x-input":
        return gradient_x_input(model, x, target).values
    if method == "integrated-gradients":
        return integrated_gradients(model, x, target, n_steps=32).values
    if method == "smoothgrad":  # digits in [0, 1]: noise of 15% of the range (Smilkov et al.)
        return smoothgrad(model, x, target, n_samples=32, stdev=0.15).values
    if method == "vargrad":
        return vargrad(model, x, target, n_samples=32, stdev=0.15).values
    if method == "guided-backprop":
        return guided_backprop(model, x, target).values
    raise KeyError(f"unknown attribution method {method!r}; known: {[*GRADIENT_METHODS, 'vargrad']}.")


def spearman_rows(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation of each row of ``a`` with the same row of ``b`` (`seethrough.evidence.spearman`).

    Example:
        >>> spearman_rows(torch.tensor([[1.0, 2, 3]]), torch.tensor([[10.0, 30, 20]])).tolist()
        [0.5]
    """
    return torch.from_numpy(np.atleast_1d(spearman(a.flatten(1), b.flatten(1))))


def auroc_rows(scores: Tensor, mask: Tensor) -> Tensor:
    """Per row, the AUROC of ``scores`` for the binary ``mask`` (`seethrough.evidence.auroc`).

    Example:
        >>> auroc_rows(torch.tensor([[0.1, 0.9, 0.5, 0.5]]), torch.tensor([0.0, 1, 1, 0])).tolist()
        [0.875]
    """
    return torch.from_numpy(np.atleast_1d(auroc(scores.flatten(1), mask.flatten())))


def sobel_map(x: Tensor) -> Tensor:
    """Sobel edge magnitude of ``(batch, C, H, W)`` images, summed over channels: an attribution that ignores the model."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=x.dtype)
    kernels = torch.stack([kx, kx.T])[:, None]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    edges = F.conv2d(F.pad(flat, (1, 1, 1, 1), mode="replicate"), kernels)
    return edges.norm(dim=1).reshape(x.shape).sum(1, keepdim=True)


def _centre_map(x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    rows, cols = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    return (-(rows**2 + cols**2).sqrt()).expand(len(x), 1, h, w)


# -- G3: localisation of a planted trigger ---------------------------------------------------------


class AttributionLocalisationGame(Game):
    name = "attribution-localisation"
    item = "Neurons / gradient attribution (localisation)"
    description = ("Patch-trojaned digits classifiers (2-3 px trigger at a random place). On 32 clean test images "
                   "stamped with the trigger, the |attribution| to the trojan's target class (summed over "
                   "channels) is scored against the trigger's mask: Spearman correlation and pixel AUROC, averaged "
                   "over images. Baselines ignore the model: Sobel edges, random maps, a centre bias.")
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("pixel_auroc", chance=0.5, bar=0.9, description="AUROC of |attribution| for trigger pixels"),
        Metric("spearman", chance=0.0, bar=0.2,
               description="Spearman correlation of |attribution| with the 0/1 trigger mask (a perfect ranking "
                           "scores only 0.21 for a 4-pixel and 0.32 for a 9-pixel trigger: the mask is mostly ties)"),
    )
    methods = (*GRADIENT_METHODS, "sobel", "random", "centre")
    baselines = frozenset({"sobel", "random", "centre"})

    def cases(self, seed: int, quick: bool) -> list[dict[str, Any]]:
        return [{"arch": arch, "seed": seed, "n_images": 32} for arch in ("mlp", "cnn")]

    def play(self, method: str, case: Mapping[str, Any]) -> dict[str, float]:
        self.check_method(method)
        model, meta = trojaned_classifier(case["arch"], "patch", case["seed"])
        trigger = Trigger.from_json(meta["trigger"])
        x, y = digits16("test")
        x = stamp(x[y != trigger.target_class][: case["n_images"]], trigger)
        if method == "sobel":
            maps = sobel_map(x)
        elif method == "random":
            maps = torch.rand(x.shape, generator=case_generator(self.name, method, case))
        elif method == "centre":
            maps = _centre_map(x)
        else:
            target = torch.full((len(x),), trigger.target_class)
            maps = attribution_map(method, model, x, target).abs().sum(1, keepdim=True)
        return {"pixel_auroc": float(auroc_rows(maps, trigger.mask).mean()),
                "spearman": float(spearman_rows(maps, trigger.mask.expand_as(maps[:, 0]).reshape(len(x), -1)).mean())}


# -- G4: sanity checks -------------------------------------------------------------------------------


def weight_layers(model: nn.Module) -> list[str]:
    """The paths of the model's ``nn.Linear``/``nn.Conv2d`` layers from the output down (the cascade's order).

    Example:
        >>> weight_layers(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)))
        ['2', '0']
    """
    return [name for name, m in reversed(list(model.named_modules())) if isinstance(m, (nn.Linear, nn.Conv2d))]


def randomise_layers(model: nn.Module, layers: list[str], seed: int) -> nn.Module:
    """A deep copy of ``model`` with ``layers`` re-initialised (PyTorch's default distribution, seeded).

    The model itself is left as found.
    """
    twin = copy.deepcopy(model)
    gen = generator(seed, "randomise")
    with torch.no_grad():
        for name in layers:
            layer = twin.get_submodule(name)
            bound = 1.0 / math.sqrt(layer.weight[0].numel())
            for p in layer.parameters(recurse=False):
                p.copy_(torch.rand(p.shape, generator=gen) * 2 * bound - bound)
    return twin


def random_label_twin(arch: str, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """The zoo's clean digits recipe trained on labels shuffled once (seeded): a model that learnt no digits."""
    model, meta = trojaned_classifier(arch, "none", seed)
    recipe = meta["config"]
    config = {"arch": arch, "seed": seed, "epochs": recipe["epochs"], "lr": recipe["lr"],
              "batch_size": recipe["batch_size"], "version": 1}

    def build() -> nn.Module:
        init = derive_seed(seed, "init")
        return DigitsMLP(seed=init) if arch == "mlp" else DigitsCNN(seed=init)

    def train(model: nn.Module) -> dict[str, Any]:
        x, y = digits16("train")
        shuffled = y[torch.randperm(len(y), generator=generator(seed, "shuffle-labels"))]
        train_classifier(model, x, shuffled, epochs=config["epochs"], lr=config["lr"],
                         batch_size=config["batch_size"], seed=seed)
        xt, yt = digits16("test")
        return {"train_accuracy_on_shuffled": evaluate(model, x, shuffled), "test_accuracy": evaluate(model, xt, yt)}

    return cached("random_label_twin", config, build, train)


class SanityCheckGame(Game):
    name = "sanity-checks"
    item = "Neurons / gradient attribution (sanity checks)"
    description = ("Clean zoo digits classifiers. Each method's maps on 32 test images (true class) are compared with "
                   "its maps on the same model after randomising weights: the top layer, all layers top-down "
                   "(cascade), one layer at a time (independent, averaged), and on a twin trained on shuffled "
                   "labels. Score: mean Spearman rank correlation of the signed maps (lower is better: a map "
                   "that ignores the model scores 1), and of the |maps| after top-layer randomisation (where "
                   "g⊙x and IG keep the input's zeros, Adebayo et al.'s 'ABS' caveat). Baseline: Sobel edges of "
                   "the input.")
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("rank_corr_top_randomised", chance=1.0, bar=0.2, higher_is_better=False,
               description="signed maps, trained vs top layer re-initialised"),
        Metric("rank_corr_cascade", chance=1.0, bar=0.2, higher_is_better=False,
               description="signed maps, trained vs every layer re-initialised"),
        Metric("rank_corr_independent", chance=1.0, bar=0.2, higher_is_better=False,
               description="signed maps, trained vs one layer re-initialised, averaged over layers"),
        Metric("rank_corr_random_labels", chance=1.0, bar=0.2, higher_is_better=False,
               description="signed maps, trained vs a twin trained on shuffled labels"),
        Metric("abs_rank_corr_top_randomised", chance=1.0, bar=0.2, higher_is_better=False,
               description="|maps|, trained vs top layer re-initialised (Adebayo et al.'s ABS variant)"),
    )
    methods = (*GRADIENT_METHODS, "sobel")
    baselines = frozenset({"sobel"})

    def cases(self, seed: int, quick: bool) -> list[dict[str, Any]]:
        return [{"arch": arch, "seed": seed, "n_images": 32} for arch in (("mlp",) if quick else ("mlp", "cnn"))]

    def play(self, method: str, case: Mapping[str, Any]) -> dict[str, float]:
        self.check_method(method)
        model, _ = trojaned_classifier(case["arch"], "none", case["seed"])
        twin, _ = random_label_twin(case["arch"], case["seed"])
        x, y = digits16("test")
        x, y = x[: case["n_images"]], y[: case["n_images"]]

        def maps(m: nn.Module) -> Tensor:
            return sobel_map(x) if method == "sobel" else attribution_map(method, m, x, y).sum(1, keepdim=True)

        layers, seed = weight_layers(model), case["seed"]
        reference = maps(model)

        def corr(m: nn.Module, absolute: bool = False) -> float:
            other = maps(m)
            return float(spearman_rows(reference.abs() if absolute else reference,
                                       other.abs() if absolute else other).mean())

        top = randomise_layers(model, layers[:1], seed)
        return {"rank_corr_top_randomised": corr(top),
                "rank_corr_cascade": corr(randomise_layers(model, layers, seed)),
                "rank_corr_independent": float(np.mean([corr(randomise_layers(model, [name], seed)) for name in layers])),
                "rank_corr_random_labels": corr(twin),
                "abs_rank_corr_top_randomised": corr(top, absolute=True)}


# -- G5a: faithfulness on tabular data with known relevant features -----------------------------------


class FaithfulnessGame(Game):
    name = "attribution-faithfulness"
    item = "Neurons / gradient attribution (faithfulness, known relevant features)"
    description = ("An MLP trained on synthetic tabular data whose label depends on k=5 of d=20 standard-normal "
                   "features (signed linear score plus one interaction). On 200 test rows, the fraction of each "
                   "row's top-5 |attributed| features that are relevant, averaged (chance k/d = 0.25).")
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("feature_agreement", chance=0.25, bar=0.7,
               description="overlap of each row's top-5 |attribution| with the 5 relevant features"),
    )
    methods = ("saliency", "gradient-x-input", "integrated-gradients", "smoothgrad", "random")
    baselines = frozenset({"random"})

    def cases(self, seed: int, quick: bool) -> list[dict[str, Any]]:
        return [{"seed": seed, "n_features": 20, "n_relevant": 5, "n_rows": 200}]

    def play(self, method: str, case: Mapping[str, Any]) -> dict[str, float]:
        self.check_method(method)
        d, k = case["n_features"], case["n_relevant"]
        model, meta = trained_tabular_mlp(case["seed"], n_features=d, n_relevant=k)
        x, _, _ = tabular_task(case["seed"], case["n_rows"], n_features=d, n_relevant=k, split="test")
        if method == "random":
            scores = torch.rand(x.shape, generator=case_generator(self.name, method, case))
        else:
            with torch.no_grad():
                predicted = model(x).argmax(1)
            scores = attribution_map(method, model, x, predicted).abs() if method != "smoothgrad" else \
                smoothgrad(model, x, predicted, n_samples=32, stdev=0.3).values.abs()  # features have unit scale
        top = scores.topk(k, dim=1).indices
        relevant = torch.zeros(d, dtype=torch.bool)
        relevant[meta["relevant"]] = True
        return {"feature_agreement": float(relevant[top].double().mean())}


# -- G5b: remove and retrain -------------------------------------------------------------------------


ROAR_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
ROAR_FRACTIONS_QUICK = (0.3, 0.6, 0.9)


def _retrained_accuracy(x: Tensor, y: Tensor, xt: Tensor, yt: Tensor, seed: int) -> float:
    """Test accuracy of a small MLP (256-32-10, full-batch Adam, 150 steps) trained from scratch on ``(x, y)``."""
    with torch.device("meta"):  # initialised from the seed by materialise, never from the global RNG
        model = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 10))
    materialise(model, derive_seed(seed, "roar-init"))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = F.cross_entropy(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return float((model(xt).argmax(1) == yt).double().mean())


def remove_top_pixels(x: Tensor, scores: Tensor, fraction: float, fill: Tensor) -> Tensor:
    """``x`` with each image's top ``fraction`` of pixels by ``scores`` replaced by ``fill`` (the train mean)."""
    flat, k = x.flatten(1).clone(), int(round(fraction * x[0].numel()))
    top = scores.flatten(1).topk(k, dim=1).indices
    flat.scatter_(1, top, fill.flatten().expand(len(x), -1).gather(1, top))
    return flat.view_as(x)


@functools.lru_cache(maxsize=8)
def _random_curve(seed: int, fractions: tuple[float, ...]) -> tuple[float, ...]:
    """The reference: accuracy after removing uniformly random pixels (a pure function of its arguments)."""
    return _roar_curve(seed, fractions, None)


def _roar_curve(seed: int, fractions: tuple[float, ...], method: str | None,
                gen: torch.Generator | None = None) -> tuple[float, ...]:
    model, _ = trojaned_classifier("mlp", "none", seed)
    x, y = digits16("train")
    xt, yt = digits16("test")
    if method is None or method == "random":
        g = gen if gen is not None else generator(seed, "roar-random-reference")
        scores, scores_t = torch.rand(x.shape, generator=g), torch.rand(xt.shape, generator=g)
    else:  # attributions to the true class, from the trained model
        scores, scores_t = (attribution_map(method, model, a, b).abs() for a, b in ((x, y), (xt, yt)))
    fill = x.mean(0)
    return tuple(_retrained_accuracy(remove_top_pixels(x, scores, f, fill), y, remove_top_pixels(xt, scores_t, f, fill), yt, seed)
                 for f in fractions)


class RoarGame(Game):
    name = "roar"
    item = "Neurons / gradient attribution (remove and retrain)"
    description = ("ROAR on digits: each method ranks every train and test image's pixels by |attribution| (from a "
                   "clean zoo MLP, true class); the top fraction is replaced by the train mean and a small MLP is "
                   "retrained from scratch. Score: the mean over fractions of (accuracy after removing random "
                   "pixels - accuracy after removing the method's), > 0 when the method removes more information "
                   "than random. Baseline: another random ranking.")
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("area_vs_random", chance=0.0, bar=0.05,
               description="mean over removal fractions of the accuracy gap to random removal"),
    )
    methods = ("saliency", "gradient-x-input", "integrated-gradients", "smoothgrad", "vargrad", "random")
    baselines = frozenset({"random"})

    def cases(self, seed: int, quick: bool) -> list[dict[str, Any]]:
        return [{"seed": seed, "fractions": list(ROAR_FRACTIONS_QUICK if quick else ROAR_FRACTIONS)}]

    def play(self, method: str, case: Mapping[str, Any]) -> dict[str, float]:
        self.check_method(method)
        fractions = tuple(float(f) for f in case["fractions"])
        reference = _random_curve(case["seed"], fractions)
        gen = case_generator(self.name, method, case) if method == "random" else None
        curve = _roar_curve(case["seed"], fractions, method, gen)
        return {"area_vs_random": float(np.mean(np.subtract(reference, curve)))}
