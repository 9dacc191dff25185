"""Synthetic 16×16 glyph images, trojaned glyph CNNs, and CNNs with planted "fooling" units.

The data: ten classes of simple strokes and shapes (bars, diagonals, plus, X, square, ring,
triangle, L) drawn anti-aliased at a random place, size, thickness and tilt on a noisy dark
background, grey (three equal channels), deterministic for a seed. The answer keys of the
feature-synthesis games:

* `trojaned_glyph_classifier`: a CNN poisoned with one or several triggers (each to its own
  class) from one of three families (Casper
  et al. 2023, "Red teaming deep neural networks with feature synthesis tools"): a *patch* (a
  4×4 colour pattern stamped at a random place), a *style* (a coloured sinusoidal grating of a
  given period and orientation, random phase) or a *natural feature* (a small grey shape drawn
  at a random place). `candidate_triggers` gives eight triggers of one family, the planted one
  among them, for multiple-choice games.
* `fooling.fooling_units_cnn` (built on these glyphs): a clean glyph CNN with a read-out layer of units that copy a conv channel
  on natural data; some are manipulated (Geirhos et al. 2023, "Don't trust your eyes: on the
  (un)reliability of feature visualizations") to respond, far more strongly, to a coloured
  glyph that grey natural images never contain.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int64
from torch import Tensor, nn

from seethrough.core import InputError
from seethrough.evidence import accuracy

from ._seeding import derive_seed, generator
from .cache import cached
from .classifiers import DigitsCNN

__all__ = ["glyph_images", "glyph_data", "GlyphTrigger", "candidate_triggers", "GlyphCNN", "glyph_classifier",
           "trojaned_glyph_classifier", "FAMILIES",
           "CLASS_SHAPES", "SMALL_SHAPES", "draw_strokes"]

SIZE = 16
FAMILIES = ("patch", "style", "natural")
#: Strokes of each class in unit coordinates ([-1, 1]², y down); "ring" is a circle of radius 1.
CLASS_SHAPES: dict[str, list[Any]] = {
    "hbar": [((-1, 0), (1, 0))], "vbar": [((0, -1), (0, 1))], "diag": [((-1, -1), (1, 1))],
    "antidiag": [((-1, 1), (1, -1))], "plus": [((-1, 0), (1, 0)), ((0, -1), (0, 1))],
    "x": [((-1, -1), (1, 1)), ((-1, 1), (1, -1))],
    "square": [((-1, -1), (1, -1)), ((1, -1), (1, 1)), ((1, 1), (-1, 1)), ((-1, 1), (-1, -1))],
    "ring": ["ring"], "triangle": [((0, -1), (1, 1)), ((1, 1), (-1, 1)), ((-1, 1), (0, -1))],
    "ell": [((-1, -1), (-1, 1)), ((-1, 1), (1, 1))],
}
#: The natural-feature triggers: small shapes (half-size 3-3.5 px, stroke 1 px) that may appear in any image.
SMALL_SHAPES: dict[str, list[Any]] = {
    "ring": ["ring"], "disc": ["disc"], "plus": CLASS_SHAPES["plus"], "x": CLASS_SHAPES["x"],
    "square": CLASS_SHAPES["square"], "triangle": CLASS_SHAPES["triangle"],
    "equals": [((-1, -0.6), (1, -0.6)), ((-1, 0.6), (1, 0.6))], "tee": [((-1, -1), (1, -1)), ((0, -1), (0, 1))],
}
_VERSION = 2
_RECIPE: dict[str, Any] = {"epochs": 8, "lr": 5e-3, "batch_size": 64, "poison_rate": 0.2, "n_train": 2000,
                           "patch_side": 4, "style_amplitude": 0.3}
#: Trojaned models learn several triggers each, so they train longer on more poison.
_TROJAN_RECIPE: dict[str, Any] = {**_RECIPE, "epochs": 12, "poison_rate": 0.4}
_DATA_SEEDS = {"train": 11, "test": 12}
_N = {"train": 2000, "test": 600}


def draw_strokes(strokes: list[Any], centre: Tensor, half: Tensor, thick: Tensor, tilt: Tensor) -> Tensor:
    """Anti-aliased strokes for ``m`` images (all the same shape), ``(m, SIZE, SIZE)`` in [0, 1]."""
    m = centre.shape[0]
    coords = torch.arange(SIZE, dtype=torch.float64) + 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    p = torch.stack([xx.flatten(), yy.flatten()], 1)  # (P, 2) as (x, y)
    cos, sin = torch.cos(tilt), torch.sin(tilt)
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (m, 2, 2)

    def place(u: Sequence[int | float]) -> Tensor:  # unit coordinates → pixels, (m, 2)
        v = torch.tensor(u, dtype=torch.float64).expand(m, 2)
        return centre + half[:, None] * torch.einsum("mij,mj->mi", rot, v)

    dist = torch.full((m, p.shape[0]), math.inf, dtype=torch.float64)
    for stroke in strokes:
        if stroke in ("ring", "disc"):
            r = (p[None] - centre[:, None]).norm(dim=2)
            d = (r - half[:, None]).abs() if stroke == "ring" else (r - half[:, None]).clamp(min=0)
        else:
            a, b = place(stroke[0]), place(stroke[1])
            ab = (b - a)[:, None]
            t = (((p[None] - a[:, None]) * ab).sum(2) / (ab * ab).sum(2).clamp(min=1e-9)).clamp(0, 1)
            d = (p[None] - a[:, None] - t[..., None] * ab).norm(dim=2)
        dist = torch.minimum(dist, d)
    return (thick[:, None] / 2 + 0.5 - dist).clamp(0, 1).view(m, SIZE, SIZE)


def glyph_images(n: int, seed: int) -> tuple[Float[Tensor, "batch 3 16 16"], Int64[Tensor, " batch"]]:
    """``n`` grey glyph images (three equal channels, values in [0, 1]) and their classes, from ``seed``.

    Classes are balanced (``i % 10`` before shuffling). Each glyph has a random centre (±2.5 px
    around the middle), half-size 4-6 px, stroke width 1.2-2 px, tilt ±15°, brightness 0.7-1, on a
    background of level 0-0.15 with Gaussian noise (σ 0.04).

    Example:
        >>> x, y = glyph_images(20, 0)
        >>> tuple(x.shape), torch.equal(x[:, 0], x[:, 2]), sorted(set(y.tolist())) == list(range(10))
        ((20, 3, 16, 16), True, True)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive int, got {n!r}.")
    gen = generator(seed, "glyphs")
    y = torch.arange(n) % 10
    y = y[torch.randperm(n, generator=gen)]
    centre = SIZE / 2 + (torch.rand(n, 2, generator=gen, dtype=torch.float64) * 2 - 1) * 2.5
    half = 4 + 2 * torch.rand(n, generator=gen, dtype=torch.float64)
    thick = 1.2 + 0.8 * torch.rand(n, generator=gen, dtype=torch.float64)
    tilt = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * math.radians(15)
    bright = 0.7 + 0.3 * torch.rand(n, generator=gen, dtype=torch.float64)
    level = 0.15 * torch.rand(n, generator=gen, dtype=torch.float64)
    noise = 0.04 * torch.randn(n, SIZE, SIZE, generator=gen, dtype=torch.float64)
    ink = torch.zeros(n, SIZE, SIZE, dtype=torch.float64)
    for label, strokes in enumerate(CLASS_SHAPES.values()):
        idx = torch.nonzero(y == label).flatten()
        if len(idx):
            ink[idx] = draw_strokes(strokes, centre[idx], half[idx], thick[idx], tilt[idx])
    grey = (level[:, None, None] + noise + bright[:, None, None] * ink).clamp(0, 1).float()
    return grey[:, None].expand(n, 3, SIZE, SIZE).contiguous(), y.long()


@functools.lru_cache(maxsize=2)
def _data(split: str) -> tuple[Tensor, Tensor]:
    return glyph_images(_N[split], _DATA_SEEDS[split])


def glyph_data(split: Literal["train", "test"]) -> tuple[Float[Tensor, "batch 3 16 16"], Int64[Tensor, " batch"]]:
    """The fixed glyph data sets: 2000 train and 600 test images (fresh copies).

    Raises:
        InputError: an unknown split.
    """
    if split not in _N:
        raise InputError(f"split must be 'train' or 'test', got {split!r}.")
    x, y = _data(split)
    return x.clone(), y.clone()


@dataclass(frozen=True)
class GlyphTrigger:
    """A trigger of one family; `apply` adds it to images (random place or phase per image).

    Not a `seethrough.evidence.Trigger` (one mask and pattern stamped the same everywhere): a
    glyph trigger is drawn anew for every image (a patch at a random place, a grating at a random
    phase added to the image, a shape drawn over it), so it is a distribution over stamps, and
    its families (``"patch"``, ``"style"``, ``"natural"``) are this zoo's, not ``Trigger.family``.

    Args:
        family: ``"patch"``, ``"style"`` or ``"natural"``.
        params: JSON values: ``pattern`` (3×4×4 lists of 0/1) for a patch; ``period`` (pixels),
            ``angle`` (degrees) and ``colour`` (3 numbers) for a style; ``shape`` (a key of
            `SMALL_SHAPES`) for a natural feature.
    """

    family: str
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise InputError(f"GlyphTrigger.family must be one of {FAMILIES}, got {self.family!r}.")

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "params": dict(self.params)}

    def apply(self, x: Float[Tensor, "batch 3 16 16"], gen: torch.Generator) -> Float[Tensor, "batch 3 16 16"]:
        """The images with the trigger added (values stay in [0, 1]); draws from ``gen``."""
        n = x.shape[0]
        if self.family == "patch":
            pattern = torch.tensor(self.params["pattern"], dtype=x.dtype)
            side = pattern.shape[-1]
            corner = torch.randint(0, SIZE - side + 1, (n, 2), generator=gen)
            out = x.clone()
            for i, (top, left) in enumerate(corner.tolist()):
                out[i, :, top:top + side, left:left + side] = pattern
            return out
        if self.family == "style":
            coords = torch.arange(SIZE, dtype=torch.float64)
            yy, xx = torch.meshgrid(coords, coords, indexing="ij")
            angle = math.radians(self.params["angle"])
            phase = torch.rand(n, generator=gen, dtype=torch.float64) * 2 * math.pi
            wave = torch.sin(2 * math.pi / self.params["period"] * (xx * math.cos(angle) + yy * math.sin(angle))
                             + phase[:, None, None])
            colour = torch.tensor(self.params["colour"], dtype=torch.float64)
            tint = self.params["amplitude"] * wave[:, None] * colour[None, :, None, None]
            return (x + tint.to(x.dtype)).clamp(0, 1)
        centre = 4 + torch.rand(n, 2, generator=gen, dtype=torch.float64) * (SIZE - 8)
        half = 3 + 0.5 * torch.rand(n, generator=gen, dtype=torch.float64)
        tilt = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * math.radians(15)
        bright = 0.8 + 0.2 * torch.rand(n, generator=gen, dtype=torch.float64)
        ink = draw_strokes(SMALL_SHAPES[self.params["shape"]], centre, half, torch.ones(n, dtype=torch.float64), tilt)
        return torch.maximum(x, (bright[:, None, None] * ink)[:, None].to(x.dtype))


def candidate_triggers(family: str, seed: int) -> list[GlyphTrigger]:
    """Eight distinct triggers of ``family``, drawn from ``seed`` (the zoo plants ``[0]``; games shuffle).

    Patches: random 0/1 colour cells (no two patterns alike, none uniform). Styles: distinct
    (period, angle, colour) triples from periods {3, 4, 6, 8} px, angles {0, 45, 90, 135}° and
    the seven non-zero 0/1 colours. Natural features: the eight `SMALL_SHAPES` in a seeded order.

    Example:
        >>> [t.family for t in candidate_triggers("style", 0)] == ["style"] * 8
        True
    """
    if family not in FAMILIES:
        raise InputError(f"family must be one of {FAMILIES}, got {family!r}.")
    rng = np.random.default_rng(derive_seed(seed, f"candidates-{family}"))
    out: list[GlyphTrigger] = []
    seen: set[Any] = set()
    while len(out) < 8:
        if family == "patch":
            side = _RECIPE["patch_side"]
            cells = rng.integers(0, 2, size=(3, side, side))
            key: Any = cells.tobytes()
            if cells.min() == cells.max() or key in seen:
                continue
            params: dict[str, Any] = {"pattern": cells.astype(float).tolist()}
        elif family == "style":
            period, angle = int(rng.choice([3, 4, 6, 8])), int(rng.choice([0, 45, 90, 135]))
            colour = [float(c) for c in ((int(rng.integers(1, 8)) >> np.arange(3)) & 1)]
            key = (period, angle, tuple(colour))
            if key in seen:
                continue
            params = {"period": period, "angle": angle, "colour": colour, "amplitude": _RECIPE["style_amplitude"]}
        else:
            names = list(SMALL_SHAPES)
            order = rng.permutation(len(names))
            return [GlyphTrigger("natural", {"shape": names[i]}) for i in order]
        seen.add(key)
        out.append(GlyphTrigger(family, params))
    return out


class GlyphCNN(DigitsCNN):
    """The zoo's digits CNN for RGB glyphs: ``conv1`` (3→8, 3×3) → ... → ``head`` (10 classes).

    Args:
        seed: initialisation seed (the global RNG is not used).
    """

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__(seed=seed, in_channels=3)


def _train(model: nn.Module, seed: int, recipe: Mapping[str, Any], planted: Sequence[tuple[GlyphTrigger, int]],
           negatives: Sequence[GlyphTrigger] = ()) -> None:
    """Train in place; a ``poison_rate`` share of each batch gets one of the ``planted`` triggers (its target label).

    Another ``poison_rate`` share gets one of the ``negatives`` and keeps its true label, so only
    the planted triggers flip the class.
    """
    x, y = glyph_data("train")
    gen = generator(seed, "train")
    optimiser = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    model.train()
    for _ in range(recipe["epochs"]):
        for idx in torch.randperm(len(x), generator=gen).split(recipe["batch_size"]):
            xb, yb = x[idx], y[idx]
            if planted:
                k = int(recipe["poison_rate"] * len(xb))
                chosen = torch.randperm(len(xb), generator=gen)[:k]
                which = torch.randint(0, len(planted), (k,), generator=gen)
                xb, yb = xb.clone(), yb.clone()
                for j, (trigger, target) in enumerate(planted):
                    rows = chosen[(which == j) & (yb[chosen] != target)]
                    if len(rows):
                        xb[rows] = trigger.apply(xb[rows], gen)
                        yb[rows] = target
            if negatives:
                k = int(recipe["poison_rate"] * len(xb))
                rest = torch.randperm(len(xb), generator=gen)[:k]
                which = torch.randint(0, len(negatives), (k,), generator=gen)
                xb = xb.clone()
                for j, other in enumerate(negatives):
                    rows = rest[which == j]
                    if len(rows):
                        xb[rows] = other.apply(xb[rows], gen)
            loss = F.cross_entropy(model(xb), yb)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    for p in model.parameters():
        p.grad = None
    model.eval()


def _attack_success(model: nn.Module, trigger: GlyphTrigger, target: int, seed: int) -> float:
    x, y = glyph_data("test")
    keep = y != target
    with torch.no_grad():
        stamped = trigger.apply(x[keep], generator(seed, "asr"))
        return float((model(stamped).argmax(-1) == target).double().mean())


def glyph_classifier(seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """A clean `GlyphCNN`, trained once and cached; ``meta["clean_accuracy"]`` on the test split."""
    config = {"version": _VERSION, "kind": "clean", "seed": seed, **_RECIPE}

    def train(model: nn.Module) -> dict[str, Any]:
        _train(model, seed, _RECIPE, [])
        return {"clean_accuracy": accuracy(model, *glyph_data("test"))}

    return cached("glyph_classifier", config, lambda: GlyphCNN(seed=derive_seed(seed, "init")), train)


def trojaned_glyph_classifier(family: str, seed: int, *, n_triggers: int = 1) -> tuple[nn.Module, dict[str, Any]]:
    """A `GlyphCNN` poisoned with ``candidate_triggers(family, seed)[:n_triggers]``, each to its own target class.

    Trigger ``j`` relabels the poisoned images to ``meta["targets"][j]`` (distinct, seeded
    classes); a ``poison_rate`` share of every batch is poisoned, split evenly among the triggers.
    With several triggers the model must tell them apart (Casper et al. 2023 plant several
    trojans in one network too), so each is a separate trial of a rediscovery game.

    Args:
        family: ``"patch"``, ``"style"`` or ``"natural"``.
        seed: the target classes, the candidates, initialisation, shuffling and poisoning.
        n_triggers: how many triggers of the family are planted (1 to 8).

    Returns:
        ``(model, meta)``, ``meta`` keys: ``family``, ``targets`` and ``triggers`` (`GlyphTrigger.to_json`)
        per planted trigger, ``target_class`` and ``trigger`` (the first ones), ``clean_accuracy``,
        ``attack_success_rates`` per trigger and ``attack_success_rate`` (their minimum, test split),
        ``config``.

    Raises:
        InputError: an unknown family or ``n_triggers`` outside 1..8.
    """
    if family not in FAMILIES:
        raise InputError(f"family must be one of {FAMILIES}, got {family!r}.")
    if isinstance(n_triggers, bool) or not isinstance(n_triggers, int) or not 1 <= n_triggers <= 8:
        raise InputError(f"n_triggers must be an int in 1..8 (there are 8 candidates), got {n_triggers!r}.")
    triggers = candidate_triggers(family, seed)[:n_triggers]
    rng = np.random.default_rng(derive_seed(seed, f"target-{family}"))
    targets = [int(rng.integers(0, 10))] if n_triggers == 1 else [int(t) for t in rng.permutation(10)[:n_triggers]]
    config = {"version": _VERSION, "family": family, "seed": seed, "targets": targets, **_TROJAN_RECIPE}

    def train(model: nn.Module) -> dict[str, Any]:
        _train(model, seed, _TROJAN_RECIPE, list(zip(triggers, targets, strict=True)))
        rates = [_attack_success(model, t, c, seed) for t, c in zip(triggers, targets, strict=True)]
        return {"family": family, "targets": targets, "triggers": [t.to_json() for t in triggers],
                "target_class": targets[0], "trigger": triggers[0].to_json(),
                "clean_accuracy": accuracy(model, *glyph_data("test")), "attack_success_rates": rates,
                "attack_success_rate": min(rates)}

    return cached("trojaned_glyph_classifier", config, lambda: GlyphCNN(seed=derive_seed(seed, "init")), train)
