"""Seeding for the zoo: derived seeds and initialisation that never touches the global RNG.

PyTorch layers initialise themselves from the global generator. Zoo models are built on the
``meta`` device (no numbers, no RNG), moved to the CPU uninitialised, then filled here from an
explicit `torch.Generator`, so building a model leaves ``torch.get_rng_state()`` as it was and
the same seed gives bit-identical weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__: list[str] = []  # private helpers of seethrough.bench.zoo


def derive_seed(seed: int, stream: str) -> int:
    """An independent 63-bit seed for one named random stream (``"init"``, ``"data"``, ...) of ``seed``."""
    words = [int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF, *stream.encode()]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0]) >> 1


def generator(seed: int, stream: str) -> torch.Generator:
    """A CPU `torch.Generator` for one named stream of ``seed``."""
    return torch.Generator().manual_seed(derive_seed(seed, stream))


def materialise(module: nn.Module, seed: int) -> nn.Module:
    """Move a module built on the ``meta`` device to the CPU and initialise it from ``seed``.

    Linear and convolution layers get PyTorch's default distribution (uniform in
    ``±1/sqrt(fan_in)`` for weights and biases), embeddings ``N(0, 1)``, layer norms ones and
    zeros; a buffer named ``mask`` is set to ones. Modules are visited in ``named_modules()``
    order, so the result depends on the seed and the architecture only.

    Raises:
        TypeError: a parameter or buffer this function does not know how to initialise (a new
            layer type needs a rule here, rather than silently keeping uninitialised memory).
    """
    module.to_empty(device="cpu")
    gen = generator(seed, "init")
    with torch.no_grad():
        for name, sub in module.named_modules():
            own = dict(sub.named_parameters(recurse=False))
            if isinstance(sub, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                bound = 1.0 / math.sqrt(sub.weight[0].numel())
                for p in own.values():
                    p.uniform_(-bound, bound, generator=gen)
            elif isinstance(sub, nn.Embedding):
                sub.weight.normal_(0.0, 1.0, generator=gen)
            elif isinstance(sub, nn.LayerNorm):
                for pname, p in own.items():
                    p.fill_(1.0 if pname == "weight" else 0.0)
            elif own:
                raise TypeError(f"materialise: no initialisation rule for {type(sub).__name__} at {name!r}; "
                                "initialise its parameters in its own constructor after materialising.")
            for bname, buf in sub.named_buffers(recurse=False):
                if bname != "mask":
                    raise TypeError(f"materialise: no initialisation rule for buffer {name}.{bname}.")
                buf.fill_(1.0)
    return module
