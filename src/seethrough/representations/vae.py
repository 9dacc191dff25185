"""A small beta-VAE for disentanglement studies (Representations / disentanglement, survey §5).

`BetaVAE` is a fully connected variational autoencoder for small images or vectors (Bernoulli
pixels: a sigmoid decoder), and `train_beta_vae` trains a new one with Higgins et al.'s objective,
reconstruction + ``beta`` · KL(q(z|x) ‖ N(0, I)). ``beta`` > 1 presses the latents towards
independence, which often (not always: Locatello et al. 2019) aligns them with the data's factors;
score the result with `dci`, `mig` and `sap` against known factors (the ``known-factors-images``
game). Its codes are the posterior means, `BetaVAE.encode`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError

__all__ = ["BetaVAE", "train_beta_vae"]


class BetaVAE(nn.Module):
    """Encoder ``d → hidden → hidden → 2·n_latents`` (means, log-variances), decoder back to ``d`` logits.

    Inputs of any shape ``(n, *shape)`` are flattened; `decode` returns logits in the input's shape.
    """

    def __init__(self, shape: tuple[int, ...], n_latents: int = 6, hidden: int = 256) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.n_latents = int(n_latents)
        d = math.prod(self.shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                     nn.ReLU(), nn.Linear(hidden, 2 * n_latents))
        self.decoder = nn.Sequential(nn.Linear(n_latents, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, d))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior's means and log-variances, ``(n, n_latents)`` each."""
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        return mean, log_var

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The codes: posterior means ``(n, n_latents)`` (no sampling)."""
        return self.posterior(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits ``(n, *shape)``."""
        return self.decoder(z).reshape(len(z), *self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction logits from the posterior means (differentiable, unlike `encode`)."""
        return self.decode(self.posterior(x)[0])


def _loss(vae: BetaVAE, x: torch.Tensor, beta: float, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    mean, log_var = vae.posterior(x)
    noise = torch.randn(mean.shape, generator=generator)
    logits = vae.decode(mean + noise * (0.5 * log_var).exp())
    reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
    kl = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum() / len(x)
    return reconstruction + beta * kl, reconstruction, kl


def train_beta_vae(inputs: Any, *, vae: BetaVAE | None = None, n_latents: int = 6, beta: float = 4.0,
                   n_steps: int = 3000, batch_size: int = 128, lr: float = 1e-3, hidden: int = 256,
                   seed: int = 0) -> BetaVAE:
    """Train a `BetaVAE` on ``inputs`` (values in [0, 1]) with Adam; returns it in eval mode.

    A new one (``n_latents``, ``hidden``; initialised from ``seed``) unless ``vae`` is given, which is
    then trained in place (its shape must match the inputs').

    Per step, a minibatch drawn with replacement; the loss is the Bernoulli negative log-likelihood
    summed over pixels plus ``beta`` times the KL to the standard normal prior, both averaged over
    the batch (``beta=1`` is a plain VAE). The trained model's ``history`` attribute (set on the
    given ``vae`` too) holds the reconstruction and KL terms every 100 steps.

    Raises:
        InputError: inputs outside [0, 1], fewer than 2 rows, or a bad setting.

    References:
        Higgins et al. 2017, "beta-VAE: learning basic visual concepts with a constrained variational
        framework"; Kingma & Welling 2014.
    """
    if not isinstance(inputs, torch.Tensor):
        if hasattr(inputs, "__array__"):
            inputs = torch.as_tensor(inputs)
        else:
            raise InputTypeError(f"inputs must be a tensor or array of shape (n, ...), got {type(inputs).__name__}.")
    x = inputs.detach().to(torch.float32)
    if x.ndim < 2 or len(x) < 2:
        raise InputError(f"inputs must have shape (n, ...) with n ≥ 2, got {tuple(x.shape)}.")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise InputError("inputs must lie in [0, 1] (Bernoulli pixels); rescale them first.")
    check_int("n_latents", n_latents, at_least=1)
    check_float("beta", beta, at_least=0.0)
    check_int("n_steps", n_steps, at_least=1)
    check_int("batch_size", batch_size, at_least=1)
    check_float("lr", lr, at_least=0.0)
    check_int("hidden", hidden, at_least=1)
    check_int("seed", seed, at_least=0)
    if vae is None:
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, the caller's global RNG untouched
            torch.manual_seed(seed)
            vae = BetaVAE(tuple(x.shape[1:]), n_latents, hidden)
    elif not isinstance(vae, BetaVAE) or vae.shape != tuple(x.shape[1:]):
        raise InputError(f"vae must be a BetaVAE for inputs of shape {tuple(x.shape[1:])}; build one with "
                         "BetaVAE(shape, n_latents) or leave vae out.")
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(vae.parameters(), lr=lr)
    history: list[dict[str, float]] = []
    vae.train()
    for step in range(n_steps):
        batch = x[torch.randint(0, len(x), (batch_size,), generator=generator)]
        loss, reconstruction, kl = _loss(vae, batch, float(beta), generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 100 == 0 or step == n_steps - 1:
            history.append({"step": step, "reconstruction": float(reconstruction.detach()), "kl": float(kl.detach())})
    vae.eval()
    vae.history = history
    return vae
