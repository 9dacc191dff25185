"""Small CNNs with distinct stages, trained from many seeds, and their functionally identical twins.

The answer key of the *layer correspondence* game: networks of one architecture trained from
different seeds compute different functions of the same kind, stage by stage, so the ``k``-th
stage of one network should be most similar to the ``k``-th stage of another. Each stage changes
the width, the spatial size or the kind of layer (conv at 8×8, conv + pool to 4×4, conv + pool to
2×2, a dense layer, the logits), because adjacent layers of a uniform stack are nearly identical
and make "same depth" ill-posed (5-layer digits MLPs gave linear CKA 42%). `permuted_twin`
permutes every hidden stage's units and compensates the next layer's weights: the same function,
each stage's activations permuted, which every permutation-invariant index must not notice.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from seethrough.core import InputError

from ._seeding import generator, materialise
from .cache import cached
from .classifiers import train_classifier
from .data import digits16

__all__ = ["StagedCNN", "STAGES", "WIDTHS", "digits8", "staged_cnn", "permuted_twin"]

#: The sites compared, in depth order.
STAGES = ("stage1", "stage2", "stage3", "stage4", "stage5")
_VERSION = 1
_RECIPE = {"epochs": 30, "lr": 3e-3, "batch_size": 64}
#: Channels of stages 1-3 and units of stage 4 (calibrated on zoo seeds 0-5: widths 4-8-16-32 and
#: 8-16-32-64 found the same depth for 56% and 80% of layers, 16-32-64-128 for 88%).
WIDTHS = (16, 32, 64, 128)


class StagedCNN(nn.Module):
    """Five stages of different shapes: 16×8×8 → 32×4×4 → 64×2×2 → 128 → 10 logits (default widths).

    ``stage1`` conv 1→c1 (3×3) + ReLU; ``stage2`` conv c1→c2 + ReLU + 2×2 max pool; ``stage3`` conv
    c2→c3 + ReLU + max pool; ``stage4`` flatten + linear 4·c3→hidden + ReLU; ``stage5`` linear → 10.
    """

    def __init__(self, *, seed: int = 0, widths: tuple[int, int, int, int] = WIDTHS) -> None:
        super().__init__()
        c1, c2, c3, hidden = widths
        with torch.device("meta"):
            self.stage1 = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.ReLU())
            self.stage2 = nn.Sequential(nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.stage3 = nn.Sequential(nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.stage4 = nn.Sequential(nn.Flatten(), nn.Linear(4 * c3, hidden), nn.ReLU())
            self.stage5 = nn.Linear(hidden, 10)
        materialise(self, seed)

    def forward(self, x: Float[Tensor, "batch 1 8 8"]) -> Float[Tensor, "batch 10"]:
        """Class logits."""
        return self.stage5(self.stage4(self.stage3(self.stage2(self.stage1(x)))))


def digits8(split: str) -> tuple[Tensor, Tensor]:
    """scikit-learn's original 8×8 digits in [0, 1] (the zoo's 16×16 digits pooled back), same split."""
    x, y = digits16(split)  # type: ignore[arg-type]  # digits16 validates the split name
    return F.avg_pool2d(x, 2), y


def staged_cnn(seed: int, *, widths: tuple[int, int, int, int] = WIDTHS,
               epochs: int = _RECIPE["epochs"]) -> tuple[nn.Module, dict[str, Any]]:
    """A `StagedCNN` trained on the 8×8 digits from ``seed`` (initialisation and shuffling); cached.

    Returns:
        ``(model, meta)``: ``meta["accuracy"]`` on the 450 held-out digits and ``meta["stages"]``.
    """
    recipe = {**_RECIPE, "epochs": epochs}
    config = {"version": _VERSION, "seed": seed, "widths": list(widths), **recipe}

    def train(model: nn.Module) -> dict[str, Any]:
        x, y = digits8("train")
        train_classifier(model, x, y, seed=seed, **recipe)
        xt, yt = digits8("test")
        with torch.no_grad():
            accuracy = float((model(xt).argmax(-1) == yt).double().mean())
        return {"accuracy": accuracy, "stages": list(STAGES)}

    return cached("staged_cnn", config, lambda: StagedCNN(seed=seed, widths=widths), train)


def _permute_out(layer: nn.Conv2d | nn.Linear, perm: Tensor) -> None:
    layer.weight.copy_(layer.weight[perm])
    if layer.bias is not None:
        layer.bias.copy_(layer.bias[perm])


def permuted_twin(model: StagedCNN, seed: int) -> tuple[StagedCNN, dict[str, Tensor]]:
    """A copy of ``model`` with every hidden stage's units permuted and the next layer compensated.

    Conv channels (and the dense units) are permuted by seeded permutations; the next layer's
    input weights are permuted alike (for the dense layer, each channel's 2×2 block of flattened
    inputs moves with its channel), so the twin computes the same function up to float rounding,
    and each stage's activations are the original's with their units permuted.

    Args:
        model: the network to copy (not modified).
        seed: seeds the permutations.

    Returns:
        ``(twin, perms)``: ``perms[stage]`` is the permutation of that stage's channels or units
        (``twin_stage[:, k] = model_stage[:, perms[stage][k]]``); ``stage5`` (logits) is not permuted.

    Raises:
        InputError: ``model`` is not a `StagedCNN`.
    """
    if not isinstance(model, StagedCNN):
        raise InputError(f"permuted_twin needs a StagedCNN, got {type(model).__name__}.")
    widths = (model.stage1[0].out_channels, model.stage2[0].out_channels, model.stage3[0].out_channels,
              model.stage4[1].out_features)
    twin = StagedCNN(seed=0, widths=widths)
    twin.load_state_dict(model.state_dict())
    twin.eval()
    gen = generator(seed, "twin")
    layers = [twin.stage1[0], twin.stage2[0], twin.stage3[0], twin.stage4[1]]
    perms: dict[str, Tensor] = {}
    with torch.no_grad():
        for k, layer in enumerate(layers):
            perm = torch.randperm(layer.weight.shape[0], generator=gen)
            perms[STAGES[k]] = perm
            _permute_out(layer, perm)
            if k < 2:  # the next conv reads the permuted channels
                nxt = layers[k + 1]
                nxt.weight.copy_(nxt.weight[:, perm])
            elif k == 2:  # the dense layer reads 16 channels × 2×2 positions, flattened channel-major
                cols = (perm[:, None] * 4 + torch.arange(4)).flatten()
                twin.stage4[1].weight.copy_(twin.stage4[1].weight[:, cols])
            else:
                twin.stage5.weight.copy_(twin.stage5.weight[:, perm])
    return twin, perms
