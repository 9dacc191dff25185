"""A prototype network in the style of ProtoPNet (Representations / self-explaining models, survey §5.1).

`PrototypeNetwork` classifies an image by how closely its patches resemble learned prototypes:
a small convolutional trunk gives a feature map; each prototype's similarity is
``log((d² + 1) / (d² + 1e-4))`` for the closest patch (``d`` its L2 distance); a fixed class
connection (1 to the prototype's class, −0.5 to the others) turns similarities into logits.
`train_prototype_network` trains one (cross-entropy + a cluster term pulling each image's nearest
own-class prototype close + a separation term pushing other classes' prototypes away), then
*projects* every prototype onto its nearest training patch of its own class, so each prototype is
literally a patch of a training image (``sources``): "this looks like that". `similarity_maps`
gives the per-patch similarity of each prototype, the explanation a user reads.

References:
    Chen et al. 2019, "This looks like that: deep learning for interpretable image recognition".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError
from ..core.modes import eval_mode

__all__ = ["PrototypeNetwork", "train_prototype_network", "similarity_maps", "PrototypeSource", "receptive_box"]

EPS = 1e-4


@dataclass(frozen=True)
class PrototypeSource:
    """Where a projected prototype came from: a training image and a feature-map cell."""

    image: int
    row: int
    col: int


class PrototypeNetwork(nn.Module):
    """Trunk ``conv3x3 → ReLU → maxpool 2 → conv3x3 → ReLU`` (``channels`` → ``width``), then prototypes.

    ``prototypes`` is ``(n_classes · per_class, width)``; prototype ``j`` belongs to class ``j // per_class``.
    ``sources`` is filled by projection (None before).
    """

    def __init__(self, channels: int, n_classes: int, *, per_class: int = 2, width: int = 32) -> None:
        super().__init__()
        self.n_classes, self.per_class = int(n_classes), int(per_class)
        self.trunk = nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                   nn.Conv2d(16, width, 3, padding=1), nn.ReLU())
        self.prototypes = nn.Parameter(torch.rand(n_classes * per_class, width))
        identity = torch.eye(n_classes).repeat_interleave(per_class, dim=0)  # (m, n_classes)
        self.register_buffer("connection", identity - 0.5 * (1 - identity))
        self.sources: list[PrototypeSource] | None = None

    def distances(self, x: Tensor) -> Tensor:
        """Squared L2 distances ``(n, m, h, w)`` between each patch of the feature map and each prototype."""
        z = self.trunk(x)  # (n, width, h, w)
        z2 = (z ** 2).sum(1, keepdim=True)
        p2 = (self.prototypes ** 2).sum(1)[None, :, None, None]
        cross = torch.einsum("nchw,mc->nmhw", z, self.prototypes)
        return (z2 - 2 * cross + p2).clamp(min=0)

    def forward(self, x: Tensor) -> Tensor:
        d = self.distances(x).flatten(2).min(2).values
        return torch.log((d + 1) / (d + EPS)) @ self.connection


def receptive_box(row: int, col: int) -> tuple[int, int, int, int]:
    """The input pixels ``(top, left, bottom, right)`` (inclusive) that feature cell ``(row, col)`` sees.

    The trunk's receptive field: 3×3 conv, 2×2 pool, 3×3 conv: 8×8 pixels, stride 2 (before clipping).
    """
    return 2 * row - 3, 2 * col - 3, 2 * row + 4, 2 * col + 4


def _check(images: Any, labels: Any) -> tuple[Tensor, Tensor]:
    if not isinstance(images, Tensor) or not isinstance(labels, Tensor):
        raise InputTypeError("images and labels must be torch tensors.")
    if images.ndim != 4 or not images.is_floating_point() or len(images) < 2:
        raise InputError(f"images must be a float (n, channels, height, width) tensor, got {tuple(images.shape)}.")
    if labels.dtype != torch.int64 or labels.shape != (len(images),):
        raise InputError(f"labels must be an int64 tensor of shape ({len(images)},).")
    return images.detach(), labels.detach()


def train_prototype_network(images: Tensor, labels: Tensor, *, per_class: int = 2, width: int = 32,
                            epochs: int = 30, batch_size: int = 64, lr: float = 3e-3, cluster: float = 0.8,
                            separation: float = 0.08, seed: int = 0) -> PrototypeNetwork:
    """A new `PrototypeNetwork` trained on ``images``, its prototypes projected onto training patches.

    Each prototype starts at the feature of a random patch of a random image of its class. Loss per
    batch: cross-entropy + ``cluster`` · mean over images of the smallest distance to an own-class
    prototype − ``separation`` · mean of the smallest distance to another class's prototype (Chen et
    al.'s terms). After training, each prototype is replaced by the feature of the own-class training
    patch nearest to it (``sources`` records which), and the model is returned in eval mode.
    """
    x, y = _check(images, labels)
    for name, value in (("per_class", per_class), ("width", width), ("batch_size", batch_size)):
        check_int(name, value, at_least=1)
    check_int("epochs", epochs, at_least=0)
    check_float("lr", lr, at_least=0.0)
    check_float("cluster", cluster, at_least=0.0)
    check_float("separation", separation, at_least=0.0)
    check_int("seed", seed, at_least=0)
    n_classes = int(y.max()) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PrototypeNetwork(x.shape[1], n_classes, per_class=per_class, width=width)
    generator = torch.Generator().manual_seed(seed)
    owner = torch.arange(n_classes).repeat_interleave(per_class)
    with torch.no_grad():  # start each prototype at a random patch of a random image of its class
        for j, k in enumerate(owner.tolist()):
            pool = torch.nonzero(y == k).flatten()
            if len(pool) == 0:
                raise InputError(f"class {k} has no images; labels must cover 0..{n_classes - 1}.")
            image = pool[int(torch.randint(0, len(pool), (1,), generator=generator))]
            z = model.trunk(x[image:image + 1])[0]
            r, c = (int(torch.randint(0, n, (1,), generator=generator)) for n in z.shape[1:])
            model.prototypes[j] = z[:, r, c]
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(batch_size):
            d = model.distances(x[idx]).flatten(2).min(2).values  # (b, m)
            own = owner[None, :] == y[idx][:, None]
            nearest_own = d.masked_fill(~own, float("inf")).min(1).values
            nearest_other = d.masked_fill(own, float("inf")).min(1).values
            logits = torch.log((d + 1) / (d + EPS)) @ model.connection
            loss = (F.cross_entropy(logits, y[idx]) + cluster * nearest_own.mean()
                    - separation * nearest_other.mean())
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    model.eval()
    _project(model, x, y, owner)
    for p in model.parameters():
        p.grad = None
    return model


@torch.no_grad()
def _project(model: PrototypeNetwork, x: Tensor, y: Tensor, owner: Tensor) -> None:
    """Replace every prototype by its nearest own-class training patch feature; record the sources."""
    sources: list[PrototypeSource] = []
    features = torch.cat([model.trunk(x[i:i + 256]) for i in range(0, len(x), 256)])  # (n, c, h, w)
    h, w = features.shape[-2:]
    flat = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])  # (n·h·w, c)
    image_of = torch.arange(len(x)).repeat_interleave(h * w)
    for j in range(len(model.prototypes)):
        d = ((flat - model.prototypes[j]) ** 2).sum(1)
        d[y[image_of] != owner[j]] = float("inf")
        best = int(d.argmin())
        model.prototypes[j] = flat[best]
        cell = best % (h * w)
        sources.append(PrototypeSource(int(image_of[best]), cell // w, cell % w))
    model.sources = sources


@torch.no_grad()
def similarity_maps(model: PrototypeNetwork, images: Tensor) -> Tensor:
    """``(n, m, h, w)``: each prototype's similarity ``log((d² + 1) / (d² + 1e-4))`` at every feature cell."""
    if not isinstance(model, PrototypeNetwork):
        raise InputTypeError(f"model must be a PrototypeNetwork, got {type(model).__name__}.")
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise InputError("images must be a (n, channels, height, width) tensor.")
    with eval_mode(model):
        d = model.distances(images.detach())
    return torch.log((d + 1) / (d + EPS))
