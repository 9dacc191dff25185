"""Glyph CNNs with planted "fooling" units (Geirhos et al. 2023), built on the glyph zoo (`glyphs`).

`fooling_units_cnn`: a clean glyph CNN with a read-out layer of units that copy a conv channel on
natural data; some are manipulated (Geirhos et al. 2023, "Don't trust your eyes: on the
(un)reliability of feature visualizations") to respond, far more strongly, to a coloured glyph
that grey natural images never contain. The answer key of the visualisation-faithfulness game.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from seethrough.core import InputError

from ._seeding import derive_seed
from .glyphs import SMALL_SHAPES, draw_strokes, glyph_classifier

__all__ = ["FoolingUnits", "FoolingCNN", "fooling_units_cnn"]


class FoolingUnits(nn.Module):
    """Read-out units over ``conv2``'s channels; some carry a hidden path from a coloured glyph detector.

    Unit ``j`` outputs ``h[:, source[j]] + gain * relu(detect_j(x))`` (8×8 maps), where ``h`` is
    the post-ReLU ``conv2`` output and ``detect_j`` correlates the input's chroma (each channel
    minus the first, exactly zero on grey images) with unit ``j``'s colour glyph template,
    average-pooled to 8×8. Units without a template (``fooling[j] = 0``) copy their source only.
    On grey (natural) images every unit equals its source channel exactly.
    """

    def __init__(self, source: list[int], templates: Tensor, fooling: list[int], gain: float) -> None:
        super().__init__()
        self.register_buffer("source", torch.tensor(source, dtype=torch.long))
        self.register_buffer("templates", templates.clone())  # (units, 3, k, k)
        self.register_buffer("fooling", torch.tensor(fooling, dtype=torch.float32))
        self.gain = gain

    def forward(self, h: Float[Tensor, "batch channels 8 8"], x: Float[Tensor, "batch 3 16 16"]) -> Tensor:
        """``(batch, units, 8, 8)``."""
        chroma = x - x[:, :1]  # exactly zero where the channels are equal
        k = self.templates.shape[-1]
        detect = F.avg_pool2d(F.conv2d(chroma, self.templates, padding=k // 2), 2)
        return h[:, self.source] + self.gain * self.fooling[None, :, None, None] * F.relu(detect)


class FoolingCNN(nn.Module):
    """A trained `GlyphCNN` (``base``) plus a `FoolingUnits` read-out ``units`` on its ``conv2`` activations.

    The output is the base model's logits, unchanged; the units are a side branch (site ``"units"``).
    """

    def __init__(self, base: nn.Module, units: FoolingUnits) -> None:
        super().__init__()
        self.base = base
        self.units = units

    def forward(self, x: Float[Tensor, "batch 3 16 16"]) -> Float[Tensor, "batch 10"]:
        """Class logits (the units run on the side)."""
        b = self.base
        h = b.act2(b.conv2(b.pool1(b.act1(b.conv1(x)))))
        self.units(h, x)
        return b.head(b.flatten(b.pool2(h)))


def fooling_units_cnn(seed: int, *, n_units: int = 12, n_fooling: int = 6,
                      gain: float = 20.0) -> tuple[nn.Module, dict[str, Any]]:
    """A clean glyph CNN with ``n_units`` read-out units, ``n_fooling`` of them manipulated.

    Each unit copies a distinct seeded ``conv2`` channel; the manipulated ones also respond,
    with ``gain``, to a coloured 5×5 template (a seeded small shape in a seeded colour) that is
    zero on every grey natural image. No training beyond the cached `glyph_classifier(seed)`.

    Returns:
        ``(model, meta)`` with ``meta`` keys ``site`` (``"units"``), ``fooling`` (0/1 per unit),
        ``source`` (channel per unit), ``clean_accuracy``.

    Raises:
        InputError: ``n_fooling`` not in 0..n_units or ``n_units`` not in 1..16.
    """
    if not 1 <= n_units <= 16 or not 0 <= n_fooling <= n_units:
        raise InputError(f"need 1 ≤ n_units ≤ 16 and 0 ≤ n_fooling ≤ n_units; got {n_units}, {n_fooling}.")
    base, meta = glyph_classifier(seed)
    rng = np.random.default_rng(derive_seed(seed, "fooling"))
    source = [int(c) for c in rng.choice(16, size=n_units, replace=False)]
    fooling = [0] * n_units
    for j in rng.choice(n_units, size=n_fooling, replace=False):
        fooling[int(j)] = 1
    names = list(SMALL_SHAPES)
    templates = torch.zeros(n_units, 3, 5, 5)
    for j in range(n_units):
        shape = draw_strokes(SMALL_SHAPES[names[int(rng.integers(len(names)))]], torch.tensor([[2.5, 2.5]]),
                      torch.tensor([2.0], dtype=torch.float64), torch.ones(1, dtype=torch.float64),
                      torch.zeros(1, dtype=torch.float64))[0, :5, :5].float()
        colour = torch.tensor(rng.normal(size=3), dtype=torch.float32)
        colour = colour - colour.mean()
        templates[j] = (colour / colour.norm())[:, None, None] * (shape - shape.mean())
    model = FoolingCNN(base, FoolingUnits(source, templates, fooling, gain)).eval()
    return model, {"site": "units", "fooling": fooling, "source": source,
                   "clean_accuracy": meta["clean_accuracy"]}
