"""Sparse autoencoders: a dictionary of sparse latents learned from a site's activations.

Representations / dictionary learning (survey §5.3). `SparseAutoencoder` is a scikit-learn style
estimator over ``(n, d)`` activations (an array, a tensor, or an iterable of batches) with four
sparsity mechanisms: TopK, BatchTopK, JumpReLU and ReLU with an L1 penalty; decoder rows are kept
at unit norm and dead latents are revived by the AuxK auxiliary loss. Feeding it a model's site and
splicing it back into the model live in `seethrough.representations.sae_sites`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from os import PathLike
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError, LoadError, NotFittedError
from ..core.io import load_tensors, save_tensors

__all__ = ["SparseAutoencoder", "SAE_KINDS"]

#: The sparsity mechanisms `SparseAutoencoder` knows.
SAE_KINDS = ("topk", "batchtopk", "jumprelu", "relu")
#: The default penalty per kind (on the loss in units of the fraction of variance unexplained):
#: an L0 penalty for JumpReLU, an L1 penalty for ReLU; TopK and BatchTopK need none.
_DEFAULT_PENALTY = {"jumprelu": 0.02, "relu": 0.01}
_BANDWIDTH = 0.05  # JumpReLU's straight-through kernel width, in the normalised units of training
_MAX_EPOCHS = 1000  # the safety cap when max_epochs=None ("train to convergence")


class _Jump(torch.autograd.Function):
    """``H(pre − θ)`` with Rajamanoharan et al.'s rectangle pseudo-derivative with respect to ``θ``."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor) -> Tensor:  # type: ignore[override]  # autograd API
        ctx.save_for_backward(pre, threshold)
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:  # type: ignore[override]  # autograd API
        pre, threshold = ctx.saved_tensors
        kernel = ((pre - threshold).abs() < _BANDWIDTH / 2).to(pre.dtype) / _BANDWIDTH
        return None, (-kernel * grad).sum(0)


def _as_rows(batch: Any, what: str) -> Tensor:
    """One batch as a float32 ``(rows, d)`` tensor, refused in one line when it is not one."""
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch)
    if not isinstance(batch, Tensor):
        raise InputTypeError(f"{what} must be an (n, d) array or tensor (or an iterable of them), got "
                             f"{type(batch).__name__}; capture activations first (see sae_sites.site_activations).")
    if batch.ndim != 2 or batch.shape[0] == 0 or batch.shape[1] == 0:
        raise InputError(f"{what} must have shape (n, d) with n, d ≥ 1, got {tuple(batch.shape)}; "
                         "flatten positions into rows with x.reshape(-1, d).")
    if not batch.is_floating_point():
        batch = batch.float()
    batch = batch.detach().to(torch.float32)
    if not bool(torch.isfinite(batch).all()):
        raise InputError(f"{what} contains NaN or inf; drop or fix those rows before fitting.")
    return batch


def _epochs(activations: Any, batch_size: int, generator: torch.Generator) -> tuple[Iterator[Iterator[Tensor]], bool]:
    """Batches per epoch and whether the source is one-shot (then there is exactly one epoch)."""
    if isinstance(activations, (Tensor, np.ndarray)):
        rows = _as_rows(activations, "activations")

        def shuffled() -> Iterator[Iterator[Tensor]]:
            while True:
                order = torch.randperm(rows.shape[0], generator=generator)
                yield (rows[order[i:i + batch_size]] for i in range(0, rows.shape[0], batch_size))
        return shuffled(), False
    if not isinstance(activations, Iterable) or isinstance(activations, (str, bytes, dict)):
        raise InputTypeError(f"activations must be an (n, d) array/tensor or an iterable of (rows, d) batches, "
                             f"got {type(activations).__name__}.")
    one_shot = isinstance(activations, Iterator)  # a generator or iterator: it can be read only once

    def passes() -> Iterator[Iterator[Tensor]]:
        while True:
            yield (_as_rows(b, "each batch of activations") for b in activations)
            if one_shot:
                return
    return passes(), one_shot


class SparseAutoencoder:
    """A sparse autoencoder ``x → codes → codes @ decoder_ + decoder_bias_`` (an estimator).

    ``encode(x) = σ((x − decoder_bias_) @ encoder_.T + encoder_bias_)`` where σ keeps the ``k``
    largest pre-activations of each row (``"topk"``, then ReLU), the largest ``k·rows`` of a batch
    during training and a learned threshold afterwards (``"batchtopk"``), the pre-activations above a
    learned per-latent threshold (``"jumprelu"``, trained with a straight-through L0 penalty), or a
    ReLU with an L1 penalty (``"relu"``). Decoder rows have unit norm (renormalised after each step).
    Training runs on activations rescaled so that ``E‖x − mean‖² = d`` (the loss is then the
    fraction of variance unexplained, so defaults work at any scale); the fitted weights are given
    back in the caller's units. A latent that has not fired for ``dead_after`` rows is dead, and the
    AuxK loss (Gao et al.) trains the ``aux_k`` largest dead latents to explain what the live ones
    leave unexplained (weight ``aux_coefficient``).

    Stopping rule: with ``max_epochs=None`` training runs epoch after epoch until the epoch's mean
    loss has failed ``patience`` times in a row to improve the best earlier epoch by more than the
    fraction ``tol`` (``converged_`` is then True), with a cap of 1,000 epochs (a warning says when
    it is hit). A one-shot iterable (a generator) is read exactly once: one epoch, ``converged_`` is
    False and a warning says so; pass a re-iterable (a list of batches, a DataLoader, an array) to
    train to convergence.

    Args:
        n_latents: dictionary size.
        kind: ``"topk"``, ``"batchtopk"``, ``"jumprelu"`` or ``"relu"``.
        k: active latents per row (``"topk"``), on average per row (``"batchtopk"``); unused by
            ``"jumprelu"`` and ``"relu"``, whose sparsity comes from ``sparsity_coefficient``.
        sparsity_coefficient: the L0 (JumpReLU) or L1 (ReLU) penalty; None: 0.02 and 0.01.
        learning_rate: Adam's step size.
        batch_size: rows per step when ``fit`` gets an array (batches of an iterable are used as given).
        max_epochs: a fixed number of epochs, or None to train to convergence (above).
        tol, patience: the convergence rule.
        dead_after: rows without firing after which a latent counts as dead (AuxK).
        aux_k: dead latents used by AuxK per row (None: ``d // 2``); ``aux_coefficient``: its weight.
        train_decoder: False freezes the decoder at its random unit-norm initialisation (the
            random-direction baseline: only the encoder learns).
        seed: initialisation and shuffling; the same seed gives bit-identical weights.

    Attributes:
        encoder_, encoder_bias_, decoder_, decoder_bias_, threshold_: the learned weights
            (``threshold_`` is the per-latent threshold of ``"jumprelu"`` and ``"batchtopk"``, zeros otherwise).
        history_: the mean loss of each epoch. n_epochs_, converged_, n_rows_seen_.
        dead_: bool ``(n_latents,)``, latents that never fired during the last epoch.

    Example:
        >>> x = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
        >>> sae = SparseAutoencoder(16, kind="topk", k=2, max_epochs=3).fit(x)
        >>> codes = sae.encode(x)
        >>> int((codes != 0).sum(1).max()), tuple(sae.decode(codes).shape), tuple(sae.decoder_.shape)
        (2, (256, 8), (16, 8))

    References:
        Gao et al. 2024, "Scaling and evaluating sparse autoencoders" (TopK, AuxK); Bussmann et al.
        2024, "BatchTopK sparse autoencoders"; Rajamanoharan et al. 2024, "Jumping ahead: improving
        reconstruction fidelity with JumpReLU sparse autoencoders"; Bricken et al. 2023, "Towards
        monosemanticity" (ReLU + L1).
    """

    def __init__(self, n_latents: int, *, kind: str = "topk", k: int = 32, sparsity_coefficient: float | None = None,
                 learning_rate: float = 3e-3, batch_size: int = 256, max_epochs: int | None = None,
                 tol: float = 1e-3, patience: int = 3, dead_after: int = 10_000, aux_k: int | None = None,
                 aux_coefficient: float = 1 / 32, train_decoder: bool = True, seed: int = 0) -> None:
        self.n_latents = n_latents
        self.kind = kind
        self.k = k
        self.sparsity_coefficient = sparsity_coefficient
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.tol = tol
        self.patience = patience
        self.dead_after = dead_after
        self.aux_k = aux_k
        self.aux_coefficient = aux_coefficient
        self.train_decoder = train_decoder
        self.seed = seed

    _PARAMS = ("n_latents", "kind", "k", "sparsity_coefficient", "learning_rate", "batch_size", "max_epochs", "tol",
               "patience", "dead_after", "aux_k", "aux_coefficient", "train_decoder", "seed")
    _WEIGHTS = ("encoder_", "encoder_bias_", "decoder_", "decoder_bias_", "threshold_")

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters as given to ``__init__``."""
        return {name: getattr(self, name) for name in self._PARAMS}

    def __repr__(self) -> str:
        return f"SparseAutoencoder({self.n_latents!r}, kind={self.kind!r}, k={self.k!r}, seed={self.seed!r})"

    def _check_params(self) -> None:
        check_int("n_latents", self.n_latents, at_least=1)
        if self.kind not in SAE_KINDS:
            raise InputError(f"kind must be one of {SAE_KINDS}, got {self.kind!r}.")
        check_int("k", self.k, at_least=1, at_most=self.n_latents)
        if self.sparsity_coefficient is not None:
            check_float("sparsity_coefficient", self.sparsity_coefficient, at_least=0.0)
        check_float("learning_rate", self.learning_rate, at_least=1e-12)
        check_int("batch_size", self.batch_size, at_least=1)
        if self.max_epochs is not None:
            check_int("max_epochs", self.max_epochs, at_least=1)
        check_float("tol", self.tol, at_least=0.0)
        check_int("patience", self.patience, at_least=1)
        check_int("dead_after", self.dead_after, at_least=1)
        if self.aux_k is not None:
            check_int("aux_k", self.aux_k, at_least=1)
        check_float("aux_coefficient", self.aux_coefficient, at_least=0.0)
        if not isinstance(self.train_decoder, bool):
            raise InputTypeError(f"train_decoder must be a bool, got {self.train_decoder!r}.")
        check_int("seed", self.seed, at_least=0)

    # -- training ---------------------------------------------------------------------------------------

    def fit(self, activations: Any) -> SparseAutoencoder:
        """Learn the dictionary from ``activations``; returns ``self`` (earlier fits are forgotten).

        Args:
            activations: an ``(n, d)`` array or tensor, or an iterable of ``(rows, d)`` batches
                (a re-iterable is read once per epoch, a one-shot iterator once).

        Raises:
            InputError: bad hyper-parameters, an empty or non-finite batch, batches of unequal ``d``.
            InputTypeError: activations of another type.
        """
        self._check_params()
        for name in (*self._WEIGHTS, "history_", "n_epochs_", "converged_", "n_rows_seen_", "dead_"):
            self.__dict__.pop(name, None)
        generator = torch.Generator().manual_seed(self.seed)
        epochs, one_shot = _epochs(activations, self.batch_size, generator)
        cap = 1 if one_shot else (self.max_epochs or _MAX_EPOCHS)
        state: dict[str, Any] = {}
        history: list[float] = []
        best, stale, converged = math.inf, 0, False
        for _, batches in zip(range(cap), epochs, strict=False):
            total, rows, fired = 0.0, 0, None
            for batch in batches:
                if not state:
                    state = self._init_state(batch, generator)
                elif batch.shape[1] != state["d"]:
                    raise InputError(f"batches of activations have d = {state['d']} and then {batch.shape[1]}; "
                                     "every batch must have the same width.")
                loss, active = self._step(state, batch)
                total += loss * batch.shape[0]
                rows += batch.shape[0]
                fired = active if fired is None else fired | active
            if rows == 0:
                raise InputError("activations yielded no batch; pass at least one (rows, d) batch.")
            history.append(total / rows)
            state["dead"] = ~fired
            if self.max_epochs is None and not one_shot:
                if history[-1] < best * (1 - self.tol):
                    best, stale = history[-1], 0
                else:
                    stale += 1
                if stale >= self.patience:
                    converged = True
                    break
        if one_shot and self.max_epochs is None:
            warnings.warn("a one-shot iterable of activations is read once: the SAE trained for one epoch and did "
                          "not test convergence; pass a re-iterable (a list of batches, a DataLoader, an array) "
                          "to train to convergence.", stacklevel=2)
        elif self.max_epochs is None and not converged:
            warnings.warn(f"the SAE did not converge within {_MAX_EPOCHS} epochs (tol={self.tol}); pass max_epochs "
                          "or a larger tol.", stacklevel=2)
        self._export(state)
        self.history_ = history
        self.n_epochs_ = len(history)
        self.converged_ = converged
        self.n_rows_seen_ = int(state["rows_seen"])
        self.dead_ = state["dead"].clone()
        return self

    def _init_state(self, batch: Tensor, generator: torch.Generator) -> dict[str, Any]:
        d = batch.shape[1]
        mean = batch.mean(0)
        spread = float(((batch - mean) ** 2).sum(1).mean())
        scale = math.sqrt(d / spread) if spread > 0 else 1.0
        decoder = torch.randn(self.n_latents, d, generator=generator)
        decoder /= decoder.norm(dim=1, keepdim=True)
        params = {"encoder": decoder.clone(), "encoder_bias": torch.zeros(self.n_latents),
                  "decoder": decoder, "decoder_bias": mean * scale,
                  "log_threshold": torch.full((self.n_latents,), math.log(0.1))}
        for name, p in params.items():
            p.requires_grad_(name != "decoder" or self.train_decoder)
        trained = [p for p in params.values() if p.requires_grad]
        return {"d": d, "scale": scale, "params": params, "optimizer": torch.optim.Adam(trained, lr=self.learning_rate, fused=True),
                "since": torch.zeros(self.n_latents, dtype=torch.long), "rows_seen": 0,
                "batch_threshold": None, "dead": torch.zeros(self.n_latents, dtype=torch.bool)}

    def _activate(self, pre: Tensor, params: dict[str, Tensor], training: bool,
                  batch_threshold: Tensor | None = None) -> Tensor:
        if self.kind == "topk":
            top = pre.topk(self.k, dim=1)
            return torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))
        if self.kind == "batchtopk":
            positive = torch.relu(pre)
            if training:
                flat = positive.flatten()
                keep = flat.topk(min(self.k * pre.shape[0], flat.numel())).indices
                return torch.zeros_like(flat).scatter(0, keep, flat[keep]).view_as(pre)
            assert batch_threshold is not None
            return positive * (pre > batch_threshold)
        if self.kind == "jumprelu":
            threshold = params["log_threshold"].exp()
            if training:
                return pre * _Jump.apply(pre, threshold)
            return pre * (pre > threshold)
        return torch.relu(pre)

    def _step(self, state: dict[str, Any], batch: Tensor) -> tuple[float, Tensor]:
        p = state["params"]
        x = batch * state["scale"]
        pre = (x - p["decoder_bias"]) @ p["encoder"].T + p["encoder_bias"]
        codes = self._activate(pre, p, training=True)
        recon = codes @ p["decoder"] + p["decoder_bias"]
        loss = ((recon - x) ** 2).sum(1).mean() / state["d"]  # the fraction of variance unexplained
        penalty = self.sparsity_coefficient if self.sparsity_coefficient is not None else _DEFAULT_PENALTY.get(self.kind)
        if self.kind == "jumprelu":
            loss = loss + penalty * _Jump.apply(pre, p["log_threshold"].exp()).sum(1).mean()
        elif self.kind == "relu":
            loss = loss + penalty * codes.sum(1).mean()  # the decoder rows have unit norm
        if self.aux_coefficient > 0 and int(state["since"].max()) >= self.dead_after:
            dead = state["since"] >= self.dead_after
            residual = (x - recon).detach()
            aux_k = min(self.aux_k if self.aux_k is not None else max(1, state["d"] // 2), int(dead.sum()))
            top = pre.masked_fill(~dead, -math.inf).topk(aux_k, dim=1)
            aux_codes = torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))
            aux = ((aux_codes @ p["decoder"] - residual) ** 2).sum(1).mean()
            loss = loss + self.aux_coefficient * aux / (residual ** 2).sum(1).mean().clamp_min(1e-12)
        state["optimizer"].zero_grad(set_to_none=True)
        loss.backward()
        state["optimizer"].step()
        with torch.no_grad():
            p["decoder"] /= p["decoder"].norm(dim=1, keepdim=True).clamp_min(1e-12)
        active = codes.detach().amax(0) > 0  # codes are ≥ 0
        state["since"] = torch.where(active, 0, state["since"] + batch.shape[0])
        state["rows_seen"] += batch.shape[0]
        if self.kind == "batchtopk":  # the inference threshold: a running mean of the smallest kept value
            kept = codes.detach()[codes.detach() > 0]
            if kept.numel():
                low = kept.min()
                old = state["batch_threshold"]
                state["batch_threshold"] = low if old is None else 0.99 * old + 0.01 * low
        return float(loss.detach()), active

    def _export(self, state: dict[str, Any]) -> None:
        p, scale = state["params"], state["scale"]
        with torch.no_grad():
            self.encoder_ = p["encoder"].detach().clone()
            self.encoder_bias_ = p["encoder_bias"].detach() / scale
            self.decoder_ = p["decoder"].detach().clone()
            self.decoder_bias_ = p["decoder_bias"].detach() / scale
            if self.kind == "jumprelu":
                self.threshold_ = p["log_threshold"].detach().exp() / scale
            elif self.kind == "batchtopk":
                low = state["batch_threshold"]
                self.threshold_ = torch.full((self.n_latents,), 0.0 if low is None else float(low) / scale)
            else:
                self.threshold_ = torch.zeros(self.n_latents)

    # -- use ----------------------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if "decoder_" not in self.__dict__:
            raise NotFittedError("this SparseAutoencoder is not fitted yet; call fit(activations) first "
                                 "(or SparseAutoencoder.load(path)).")

    def encode(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_sae"]:
        """The sparse codes of ``x`` (any leading shape; the last axis is the site's width)."""
        self._check_fitted()
        if not isinstance(x, Tensor) or x.shape[-1:] != self.decoder_.shape[1:]:
            raise InputError(f"encode expects a tensor whose last axis is {self.decoder_.shape[1]}, got "
                             f"{getattr(x, 'shape', type(x).__name__)}.")
        rows = x.reshape(-1, x.shape[-1]).to(self.decoder_.dtype)
        weights = {"log_threshold": self.threshold_.clamp_min(1e-30).log()}
        with torch.no_grad():
            pre = (rows - self.decoder_bias_.to(rows.device)) @ self.encoder_.T.to(rows.device) + \
                self.encoder_bias_.to(rows.device)
            codes = self._activate(pre, weights, training=False, batch_threshold=self.threshold_.to(rows.device))
        return codes.reshape(*x.shape[:-1], self.n_latents).to(x.dtype)

    def decode(self, codes: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_model"]:
        """The reconstruction ``codes @ decoder_ + decoder_bias_``."""
        self._check_fitted()
        if not isinstance(codes, Tensor) or codes.shape[-1:] != (self.n_latents,):
            raise InputError(f"decode expects codes whose last axis is n_latents = {self.n_latents}, got "
                             f"{getattr(codes, 'shape', type(codes).__name__)}.")
        weight = self.decoder_.to(device=codes.device, dtype=codes.dtype)
        return codes @ weight + self.decoder_bias_.to(device=codes.device, dtype=codes.dtype)

    def save(self, path: str | PathLike[str]) -> None:
        """Write the weights (safetensors) and the hyper-parameters and fit record (``path + '.json'``)."""
        self._check_fitted()
        meta = {"class": "SparseAutoencoder", "params": self.get_params(), "history": self.history_,
                "n_epochs": self.n_epochs_, "converged": self.converged_, "n_rows_seen": self.n_rows_seen_}
        tensors = {name: getattr(self, name) for name in self._WEIGHTS}
        tensors["dead_"] = self.dead_.to(torch.uint8)
        save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | PathLike[str]) -> SparseAutoencoder:
        """A fitted `SparseAutoencoder` read back from what `save` wrote (no code is executed)."""
        tensors, meta = load_tensors(path)
        if meta.get("class") != "SparseAutoencoder" or not isinstance(meta.get("params"), dict):
            raise LoadError(f"{path} has no SparseAutoencoder sidecar ({path}.json); save it with sae.save(path).")
        missing = [n for n in (*cls._WEIGHTS, "dead_") if n not in tensors]
        if missing:
            raise LoadError(f"{path} lacks the tensors {missing}; it was not written by SparseAutoencoder.save.")
        params = dict(meta["params"])
        sae = cls(params.pop("n_latents"), **params)
        for name in cls._WEIGHTS:
            setattr(sae, name, tensors[name].to(torch.float32))
        sae.dead_ = tensors["dead_"].bool()
        sae.history_, sae.n_epochs_ = list(meta["history"]), int(meta["n_epochs"])
        sae.converged_, sae.n_rows_seen_ = bool(meta["converged"]), int(meta["n_rows_seen"])
        return sae
