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

__all__ = ["SparseAutoencoder", "SAE_KINDS", "DEAD_LATENTS"]

#: The sparsity mechanisms `SparseAutoencoder` knows.
SAE_KINDS = ("topk", "batchtopk", "jumprelu", "relu")
#: What `SparseAutoencoder` can do with dead latents: an auxiliary loss, or re-initialisation.
DEAD_LATENTS = ("auxk", "resample")
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


def _epochs(activations: Any, batch_size: int, generator: torch.Generator,
            targets: Any = None) -> tuple[Iterator[Iterator[tuple[Tensor, Tensor | None]]], bool]:
    """``(x, target)`` batches per epoch (target None for an SAE) and whether the source is one-shot."""
    if isinstance(activations, (Tensor, np.ndarray)):
        rows = _as_rows(activations, "activations")
        paired = None
        if targets is not None:
            if not isinstance(targets, (Tensor, np.ndarray)):
                raise InputTypeError(f"activations are an array, so targets must be one too, got {type(targets).__name__}.")
            paired = _as_rows(targets, "targets")
            if paired.shape[0] != rows.shape[0]:
                raise InputError(f"activations have {rows.shape[0]} rows but targets {paired.shape[0]}; pass one "
                                 "target row per activation row.")

        def shuffled() -> Iterator[Iterator[tuple[Tensor, Tensor | None]]]:
            while True:
                order = torch.randperm(rows.shape[0], generator=generator)
                yield ((rows[idx], None if paired is None else paired[idx])
                       for idx in (order[i:i + batch_size] for i in range(0, rows.shape[0], batch_size)))
        return shuffled(), False
    for name, source in (("activations", activations), ("targets", targets)):
        if source is None and name == "targets":
            continue
        if not isinstance(source, Iterable) or isinstance(source, (str, bytes, dict, Tensor, np.ndarray)):
            raise InputTypeError(f"{name} must be an (n, d) array/tensor or an iterable of (rows, d) batches "
                                 f"(both of the same form), got {type(source).__name__}.")
    one_shot = isinstance(activations, Iterator) or isinstance(targets, Iterator)  # a generator can be read once

    def pair(batch: Any, target: Any) -> tuple[Tensor, Tensor | None]:
        x = _as_rows(batch, "each batch of activations")
        if target is None:
            return x, None
        y = _as_rows(target, "each batch of targets")
        if y.shape[0] != x.shape[0]:
            raise InputError(f"a batch of activations has {x.shape[0]} rows but its batch of targets {y.shape[0]}; "
                             "the two iterables must yield aligned batches.")
        return x, y

    def passes() -> Iterator[Iterator[tuple[Tensor, Tensor | None]]]:
        while True:
            if targets is None:
                yield (pair(b, None) for b in activations)
            else:
                yield (pair(b, t) for b, t in _aligned(activations, targets))
            if one_shot:
                return
    return passes(), one_shot


def _aligned(first: Iterable[Any], second: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
    """``zip`` that refuses iterables of different lengths in one line."""
    a, b = iter(first), iter(second)
    for x in a:
        try:
            yield x, next(b)
        except StopIteration:
            raise InputError("targets yielded fewer batches than activations; pass aligned iterables.") from None
    if next(b, None) is not None:
        raise InputError("targets yielded more batches than activations; pass aligned iterables.")


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
    leave unexplained (weight ``aux_coefficient``); with ``dead_latents="resample"`` they are
    instead re-initialised (Bricken et al.): each dead latent's decoder row becomes the centred
    direction of a row of the current batch drawn with probability ∝ its squared reconstruction
    error, its encoder row the same input direction at 0.2× the live encoder rows' mean norm, its
    bias 0 and its Adam moments 0; a resampled latent gets another ``dead_after`` rows to fire.

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
        dead_after: rows without firing after which a latent counts as dead (AuxK or resampling).
        aux_k: dead latents used by AuxK per row (None: ``d // 2``); ``aux_coefficient``: its weight.
        dead_latents: ``"auxk"`` (the auxiliary loss above) or ``"resample"`` (re-initialise them
            towards badly reconstructed rows; no auxiliary loss).
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
                 aux_coefficient: float = 1 / 32, dead_latents: str = "auxk", train_decoder: bool = True,
                 seed: int = 0) -> None:
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
        self.dead_latents = dead_latents
        self.train_decoder = train_decoder
        self.seed = seed

    _PARAMS = ("n_latents", "kind", "k", "sparsity_coefficient", "learning_rate", "batch_size", "max_epochs", "tol",
               "patience", "dead_after", "aux_k", "aux_coefficient", "dead_latents", "train_decoder", "seed")
    _WEIGHTS: tuple[str, ...] = ("encoder_", "encoder_bias_", "decoder_", "decoder_bias_", "threshold_")
    _CENTRE = "decoder_bias_"  # what encode subtracts first (a transcoder: its input's mean, input_bias_)

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters as given to ``__init__``."""
        return {name: getattr(self, name) for name in self._PARAMS}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.n_latents!r}, kind={self.kind!r}, k={self.k!r}, seed={self.seed!r})"

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
        if self.dead_latents not in DEAD_LATENTS:
            raise InputError(f"dead_latents must be one of {DEAD_LATENTS}, got {self.dead_latents!r}.")
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
        return self._train(activations, None)

    def _train(self, activations: Any, targets: Any) -> SparseAutoencoder:
        """The training loop shared by `SparseAutoencoder.fit` (targets None) and `Transcoder.fit`."""
        self._check_params()
        for name in (*self._WEIGHTS, "history_", "n_epochs_", "converged_", "n_rows_seen_", "dead_", "n_resampled_"):
            self.__dict__.pop(name, None)
        generator = torch.Generator().manual_seed(self.seed)
        epochs, one_shot = _epochs(activations, self.batch_size, generator, targets)
        cap = 1 if one_shot else (self.max_epochs or _MAX_EPOCHS)
        state: dict[str, Any] = {}
        history: list[float] = []
        best, stale, converged = math.inf, 0, False
        for _, batches in zip(range(cap), epochs, strict=False):
            total, rows, fired = 0.0, 0, None
            for batch, target in batches:
                if not state:
                    state = self._init_state(batch, target, generator)
                elif batch.shape[1] != state["d"] or (target is not None and target.shape[1] != state["d_out"]):
                    raise InputError(f"batches have widths {state['d']} and then {batch.shape[1]} (targets: "
                                     f"{state['d_out']} and then {None if target is None else target.shape[1]}); "
                                     "every batch must have the same width.")
                loss, active = self._step(state, batch, target)
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
                          "to train to convergence.", stacklevel=3)
        elif self.max_epochs is None and not converged:
            warnings.warn(f"the SAE did not converge within {_MAX_EPOCHS} epochs (tol={self.tol}); pass max_epochs "
                          "or a larger tol.", stacklevel=3)
        self._export(state)
        self.history_ = history
        self.n_epochs_ = len(history)
        self.converged_ = converged
        self.n_rows_seen_ = int(state["rows_seen"])
        self.dead_ = state["dead"].clone()
        return self

    def _init_state(self, batch: Tensor, target: Tensor | None, generator: torch.Generator) -> dict[str, Any]:
        d = batch.shape[1]
        mean = batch.mean(0)
        spread = float(((batch - mean) ** 2).sum(1).mean())
        scale = math.sqrt(d / spread) if spread > 0 else 1.0
        out, out_mean, out_scale = d, mean, scale
        if target is not None:  # a transcoder: the target's own width, mean and scale
            out, out_mean = target.shape[1], target.mean(0)
            out_spread = float(((target - out_mean) ** 2).sum(1).mean())
            out_scale = math.sqrt(out / out_spread) if out_spread > 0 else 1.0
        decoder = torch.randn(self.n_latents, out, generator=generator)
        decoder /= decoder.norm(dim=1, keepdim=True)
        if target is None:
            encoder = decoder.clone()  # tied at initialisation
        else:
            encoder = torch.randn(self.n_latents, d, generator=generator)
            encoder /= encoder.norm(dim=1, keepdim=True)
        params = {"encoder": encoder, "encoder_bias": torch.zeros(self.n_latents),
                  "decoder": decoder, "decoder_bias": out_mean * out_scale,
                  "log_threshold": torch.full((self.n_latents,), math.log(0.1))}
        for name, p in params.items():
            p.requires_grad_(name != "decoder" or self.train_decoder)
        trained = [p for p in params.values() if p.requires_grad]
        return {"d": d, "d_out": out, "scale": scale, "out_scale": out_scale, "paired": target is not None,
                "input_bias": mean * scale, "params": params, "generator": generator,
                "optimizer": torch.optim.Adam(trained, lr=self.learning_rate, fused=True),
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

    def _step(self, state: dict[str, Any], batch: Tensor, target: Tensor | None) -> tuple[float, Tensor]:
        p = state["params"]
        x = batch * state["scale"]
        if state["paired"]:
            assert target is not None
            goal, centre = target * state["out_scale"], state["input_bias"]
        else:
            goal, centre = x, p["decoder_bias"]
        pre = (x - centre) @ p["encoder"].T + p["encoder_bias"]
        codes = self._activate(pre, p, training=True)
        recon = codes @ p["decoder"] + p["decoder_bias"]
        loss = ((recon - goal) ** 2).sum(1).mean() / state["d_out"]  # the fraction of variance unexplained
        penalty = self.sparsity_coefficient if self.sparsity_coefficient is not None else _DEFAULT_PENALTY.get(self.kind)
        if self.kind == "jumprelu":
            loss = loss + penalty * _Jump.apply(pre, p["log_threshold"].exp()).sum(1).mean()
        elif self.kind == "relu":
            loss = loss + penalty * codes.sum(1).mean()  # the decoder rows have unit norm
        stale = int(state["since"].max()) >= self.dead_after
        if self.dead_latents == "auxk" and self.aux_coefficient > 0 and stale:
            dead = state["since"] >= self.dead_after
            residual = (goal - recon).detach()
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
        if self.dead_latents == "resample" and stale:
            self._resample(state, (x - centre).detach(), (goal - p["decoder_bias"]).detach(),
                           ((goal - recon) ** 2).sum(1).detach())
        if self.kind == "batchtopk":  # the inference threshold: a running mean of the smallest kept value
            kept = codes.detach()[codes.detach() > 0]
            if kept.numel():
                low = kept.min()
                old = state["batch_threshold"]
                state["batch_threshold"] = low if old is None else 0.99 * old + 0.01 * low
        return float(loss.detach()), active

    def _resample(self, state: dict[str, Any], inputs: Tensor, goals: Tensor, errors: Tensor) -> None:
        """Re-initialise the dead latents towards rows of this batch drawn ∝ their squared error (Bricken et al.)."""
        dead = state["since"] >= self.dead_after
        n_dead = int(dead.sum())
        if n_dead == 0 or not float(errors.sum()) > 0:
            return
        p = state["params"]
        pick = torch.multinomial(errors.double(), n_dead, replacement=True, generator=state["generator"])
        alive = ~dead
        with torch.no_grad():
            size = float(p["encoder"][alive].norm(dim=1).mean()) if bool(alive.any()) else 1.0
            direction = inputs[pick] / inputs[pick].norm(dim=1, keepdim=True).clamp_min(1e-12)
            p["encoder"][dead] = 0.2 * size * direction
            p["encoder_bias"][dead] = 0.0
            if self.train_decoder:
                p["decoder"][dead] = goals[pick] / goals[pick].norm(dim=1, keepdim=True).clamp_min(1e-12)
            for param in (p["encoder"], p["encoder_bias"], p["decoder"], p["log_threshold"]):
                moments = state["optimizer"].state.get(param, {})
                for name in ("exp_avg", "exp_avg_sq"):
                    if name in moments:
                        moments[name][dead] = 0.0
        state["since"][dead] = 0
        state["n_resampled"] = state.get("n_resampled", 0) + n_dead

    def _export(self, state: dict[str, Any]) -> None:
        # codes in the caller's units are the training codes / out_scale (for an SAE out_scale = scale):
        # pre = (x − input_bias_) @ encoder_.T + encoder_bias_ with encoder_ = E · scale / out_scale
        p, scale = state["params"], state["out_scale"]
        with torch.no_grad():
            self.encoder_ = p["encoder"].detach().clone()
            if state["paired"]:
                self.encoder_ = self.encoder_ * (state["scale"] / scale)
                self.input_bias_ = state["input_bias"] / state["scale"]
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
        self.n_resampled_ = int(state.get("n_resampled", 0))

    # -- use ----------------------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if "decoder_" not in self.__dict__:
            raise NotFittedError("this SparseAutoencoder is not fitted yet; call fit(activations) first "
                                 "(or SparseAutoencoder.load(path)).")

    def encode(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_sae"]:
        """The sparse codes of ``x`` (any leading shape; the last axis is the site's width)."""
        self._check_fitted()
        if not isinstance(x, Tensor) or x.shape[-1:] != self.encoder_.shape[1:]:
            raise InputError(f"encode expects a tensor whose last axis is {self.encoder_.shape[1]}, got "
                             f"{getattr(x, 'shape', type(x).__name__)}.")
        rows = x.reshape(-1, x.shape[-1]).to(self.decoder_.dtype)
        weights = {"log_threshold": self.threshold_.clamp_min(1e-30).log()}
        centre = getattr(self, self._CENTRE)
        with torch.no_grad():
            pre = (rows - centre.to(rows.device)) @ self.encoder_.T.to(rows.device) + \
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
        meta = {"class": type(self).__name__, "params": self.get_params(), "history": self.history_,
                "n_epochs": self.n_epochs_, "converged": self.converged_, "n_rows_seen": self.n_rows_seen_,
                "n_resampled": self.n_resampled_}
        tensors = {name: getattr(self, name) for name in self._WEIGHTS}
        tensors["dead_"] = self.dead_.to(torch.uint8)
        save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | PathLike[str]) -> SparseAutoencoder:
        """A fitted estimator read back from what `save` wrote (no code is executed)."""
        tensors, meta = load_tensors(path)
        name = cls.__name__
        if meta.get("class") != name or not isinstance(meta.get("params"), dict):
            raise LoadError(f"{path} has no {name} sidecar ({path}.json); save it with .save(path).")
        missing = [n for n in (*cls._WEIGHTS, "dead_") if n not in tensors]
        if missing:
            raise LoadError(f"{path} lacks the tensors {missing}; it was not written by {name}.save.")
        params = dict(meta["params"])
        sae = cls(params.pop("n_latents"), **params)
        for name in cls._WEIGHTS:
            setattr(sae, name, tensors[name].to(torch.float32))
        sae.dead_ = tensors["dead_"].bool()
        sae.history_, sae.n_epochs_ = list(meta["history"]), int(meta["n_epochs"])
        sae.converged_, sae.n_rows_seen_ = bool(meta["converged"]), int(meta["n_rows_seen"])
        sae.n_resampled_ = int(meta.get("n_resampled", 0))
        return sae
