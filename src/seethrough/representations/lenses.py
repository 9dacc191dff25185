"""Logit lens and tuned lens: what would the model output if it stopped at this layer?

Representations / tokens and attention (survey §5.4). The logit lens (nostalgebraist 2020) decodes
each layer's residual stream with the model's own readout (its final norm and unembedding, built by
`module_readout`) or with any readout the user gives (e.g. a linear probe fitted on the last layer of
an encoder, whose masked-language-model head is not bundled). The tuned lens (Belrose et al. 2023)
first maps each layer's residual through a learned affine translator, trained to minimise the KL
divergence from the final output and evaluated on held-out inputs. Both report, per layer and
position, the readout's logits and the KL divergence from the final output (the last site's readout).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..core.batching import batches, stream
from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError, NotFittedError
from ..core.inputs import validate_inputs
from ..core.results import Result, new_figure
from ..core.sites import Site, as_sites, resolve_site
from ..core.types import Inputs
from ..evidence.finding import Finding

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["LensResult", "logit_lens", "TunedLens", "module_readout", "lens_findings"]

Readout = Callable[[Tensor], Tensor]


def module_readout(model: nn.Module, paths: Sequence[str]) -> Readout:
    """The model's own modules at ``paths``, applied in order: e.g. ``["ln_final", "unembed"]``.

    Raises:
        SiteNotFoundError: a path names no module.

    Example:
        >>> model = nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 3))
        >>> readout = module_readout(model, ["0", "1"])
        >>> torch.equal(readout(torch.ones(2, 4)), model(torch.ones(2, 4)))
        True
    """
    if isinstance(paths, str) or not isinstance(paths, Sequence) or not paths:
        raise InputTypeError(f"paths must be a non-empty list of module paths, e.g. ['ln_final', 'unembed'], got "
                             f"{paths!r}.")
    modules = [resolve_site(model, p)[1] for p in paths]

    def readout(hidden: Tensor) -> Tensor:
        for module in modules:
            hidden = module(hidden)
        return hidden

    return readout


@dataclass(frozen=True)
class LensResult(Result):
    """A lens's readout of every layer: logits per example, layer and position, and the KL from the final output.

    Attributes:
        sites: the residual sites read, first layer first (the last is the final residual).
        method: ``"logit lens"`` or ``"tuned lens"``.
        logits: ``(batch, layers, seq, n_classes)`` the readout of each layer (a ``(batch, d)`` site
            has ``seq`` 1).
        kl: ``(batch, layers, seq)`` KL(final ‖ layer) in nats, the final output being the last
            site's readout; 0 on padding.
        mask: ``(batch, seq)`` bool, True on real tokens.
        tokens: each example's token strings, or ``None``.
        classes: names of the readout's outputs (e.g. vocabulary tokens), or ``None``.
    """

    sites: tuple[Site, ...]
    method: str
    logits: Tensor
    kl: Tensor
    mask: Tensor
    tokens: tuple[tuple[str, ...], ...] | None = None
    classes: tuple[str, ...] | None = None

    def mean_kl(self) -> Tensor:
        """``(layers,)``: the KL from the final output averaged over every real position."""
        m = self.mask[:, None, :].to(self.kl.dtype)
        return (self.kl * m).sum((0, 2)) / m.sum((0, 2)).clamp_min(1)

    def top(self) -> Tensor:
        """``(batch, layers, seq)``: the readout's most likely output at each layer and position."""
        return self.logits.argmax(-1)

    def _label(self, example: int, position: int) -> str:
        return str(position) if self.tokens is None else self.tokens[example][position]

    def _class(self, index: int) -> str:
        return str(index) if self.classes is None else self.classes[index]

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        probs = self.logits.double().softmax(-1)
        top = probs.argmax(-1)
        rows = []
        for e, layer, pos in self.mask[:, None, :].expand(self.kl.shape).nonzero().tolist():
            t = int(top[e, layer, pos])
            rows.append({"example": e, "layer": layer, "site": self.sites[layer].path, "position": pos,
                         "token": self._label(e, pos), "top": self._class(t),
                         "top_prob": float(probs[e, layer, pos, t]), "kl": float(self.kl[e, layer, pos])})
        return pd.DataFrame(rows, columns=["example", "layer", "site", "position", "token", "top", "top_prob", "kl"])

    def plot(self, example: int = 0) -> Figure:
        """KL from the final output per layer (rows) and position (columns) of ``example``, top outputs written in."""
        real = self.mask[example].nonzero().squeeze(1).tolist()
        grid = self.kl[example][:, real].double().numpy()
        top = self.top()[example][:, real]
        n_layers = grid.shape[0]
        fig = new_figure(1.0 + 0.7 * len(real), 0.9 + 0.45 * n_layers)
        ax = fig.add_subplot()
        image = ax.imshow(grid, cmap="magma_r", aspect="auto", vmin=0.0)
        for layer in range(n_layers):
            for k in range(len(real)):
                ax.text(k, layer, self._class(int(top[layer, k]))[:8], ha="center", va="center", fontsize=6,
                        color="C0")
        ax.set_xticks(range(len(real)), [self._label(example, p) for p in real], rotation=90, fontsize=7)
        ax.set_yticks(range(n_layers), [s.path for s in self.sites], fontsize=7)
        ax.set_title(f"{self.method}: KL to the final output (nats), top output written in", fontsize=8)
        fig.colorbar(image, ax=ax, shrink=0.8)
        return fig


# -- shared plumbing ---------------------------------------------------------------------------


def _check_readout(readout: object) -> Readout:
    if not callable(readout):
        raise InputTypeError(f"readout must be callable (residual (..., d) -> logits (..., n_classes)), e.g. "
                             f"module_readout(model, ['ln_final', 'unembed']); got {type(readout).__name__}.")
    return readout  # type: ignore[return-value]  # callable checked above


def _residuals(model: nn.Module, inputs: Inputs, sites: Site | str | Sequence[Site | str],
               batch_size: int) -> tuple[tuple[Site, ...], Tensor, Tensor]:
    """``(sites, hidden (layers, batch, seq, d), mask (batch, seq))`` for every site."""
    check_int("batch_size", batch_size, at_least=1)
    keys = as_sites(sites)
    resolved = tuple(resolve_site(model, s)[0] for s in keys)
    if len(keys) < 2:
        raise InputError("a lens needs at least two sites: the layers to read and, last, the final residual.")
    validate_inputs(model, inputs)
    parts: list[Tensor] = []
    for _, values in stream(model, batches(inputs, batch_size), keys):
        layer = []
        for key, site in zip(keys, resolved, strict=True):
            v = values[key].detach()
            if v.ndim == 2:
                v = v[:, None]
            if v.ndim != 3 or not v.is_floating_point():
                raise InputError(f"{site!r} gives a value of shape {tuple(v.shape)}; a residual site is (batch, d) "
                                 "or (batch, seq, d).")
            layer.append(v)
        shapes = {tuple(t.shape) for t in layer}
        if len(shapes) != 1:
            raise InputError(f"the sites' values differ in shape ({sorted(shapes)}); a lens reads one residual "
                             "stream, so every site must have the same shape.")
        parts.append(torch.stack(layer))
    hidden = torch.cat(parts, 1)
    b, seq = hidden.shape[1], hidden.shape[2]
    mask = torch.ones(b, seq, dtype=torch.bool)
    if isinstance(inputs, dict) and isinstance(inputs.get("attention_mask"), Tensor) and seq > 1:
        mask = inputs["attention_mask"].detach().cpu().bool()
        if tuple(mask.shape) != (b, seq):
            raise InputError(f"inputs['attention_mask'] is {tuple(mask.shape)} but the sites' values are (batch, seq) "
                             f"= {(b, seq)}.")
    return resolved, hidden, mask


def _apply(readout: Readout, hidden: Tensor) -> Tensor:
    out = readout(hidden)
    if not isinstance(out, Tensor) or out.shape[:-1] != hidden.shape[:-1] or not out.is_floating_point():
        raise InputError(f"the readout must map (..., d) residuals to (..., n_classes) float logits; it returned "
                         f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))} for {tuple(hidden.shape)}.")
    return out


def _kl(final_logits: Tensor, logits: Tensor) -> Tensor:
    """KL(final ‖ lens) over the last dim, in nats."""
    p = final_logits.double().log_softmax(-1)
    q = logits.double().log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1).clamp_min(0.0)


def _tokens(tokens: Sequence[Sequence[str]] | None, b: int, seq: int) -> tuple[tuple[str, ...], ...] | None:
    if tokens is None:
        return None
    if isinstance(tokens, str) or not isinstance(tokens, Sequence) or len(tokens) != b or any(
            len(row) != seq for row in tokens):
        raise InputError(f"tokens must be one list of {seq} strings per example ({b} examples).")
    return tuple(tuple(str(t) for t in row) for row in tokens)


def _classes(classes: Sequence[str] | None) -> tuple[str, ...] | None:
    if classes is None:
        return None
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise InputTypeError(f"classes must be a list of names, got {type(classes).__name__}.")
    return tuple(str(c) for c in classes)


def _result(method: str, sites: tuple[Site, ...], logits: Tensor, mask: Tensor, tokens: Sequence[Sequence[str]] | None,
            classes: Sequence[str] | None) -> LensResult:
    kl = _kl(logits[:, -1:].expand_as(logits), logits) * mask[:, None, :]
    names = _classes(classes)
    if names is not None and len(names) != logits.shape[-1]:
        raise InputError(f"classes names {len(names)} outputs but the readout gives {logits.shape[-1]}.")
    return LensResult(sites, method, logits.float(), kl.float(), mask, _tokens(tokens, logits.shape[0], logits.shape[2]),
                      names)


# -- the lenses ------------------------------------------------------------------------------------


def logit_lens(model: nn.Module, inputs: Inputs, sites: Site | str | Sequence[Site | str], readout: Readout, *,
               tokens: Sequence[Sequence[str]] | None = None, classes: Sequence[str] | None = None,
               batch_size: int = 64) -> LensResult:
    """Decode each site's residual with ``readout``: what the model would say if it stopped there.

    Args:
        model: any ``nn.Module`` (left as found).
        inputs: as for `capture`; a dict's ``attention_mask`` marks the real tokens.
        sites: residual-stream sites, first layer first; the last is the final residual (its readout
            is the final output the KL is measured from).
        readout: residual ``(..., d)`` → logits ``(..., n_classes)``: the model's final norm and
            unembedding (`module_readout`), or any readout the user gives.
        tokens: each example's token strings (labels).
        classes: names of the readout's outputs.
        batch_size: rows per forward pass.

    Returns:
        A `LensResult` (``method="logit lens"``).

    Example:
        >>> from seethrough.bench.zoo import TinyTransformer
        >>> model = TinyTransformer(10, 5, n_layers=2)
        >>> x = torch.arange(5)[None]
        >>> lens = logit_lens(model, x, ["blocks.0", "blocks.1"], module_readout(model, ["ln_final", "unembed"]))
        >>> torch.allclose(lens.logits[:, -1], model(x)), float(lens.kl[:, -1].abs().max())
        (True, 0.0)

    References:
        nostalgebraist, "interpreting GPT: the logit lens", 2020.
    """
    fn = _check_readout(readout)
    resolved, hidden, mask = _residuals(model, inputs, sites, batch_size)
    with torch.no_grad():
        logits = _apply(fn, hidden).transpose(0, 1)  # (batch, layers, seq, n_classes)
    return _result("logit lens", resolved, logits.detach(), mask, tokens, classes)


class TunedLens:
    """The tuned lens: an affine translator per layer, trained so that its readout matches the final output.

    Each site but the last gets ``h ↦ h Wᵀ + b`` (initialised to the identity, so an untrained tuned
    lens is the logit lens), trained with Adam on full batches to minimise the mean KL(final ‖
    readout(translated)) over real positions. The readout and the model are never changed (gradients
    are taken with respect to the translators only).

    Args:
        readout: residual → logits (as for `logit_lens`).
        n_steps: Adam steps (0 leaves the identity).
        lr: Adam's step size.
        weight_decay: L2 penalty on ``W - I`` and ``b``.
        seed: kept for the estimator contract (training is deterministic from the identity).

    Attributes:
        weight_: ``(layers, d, d)`` translators (the last is the identity).
        bias_: ``(layers, d)``.
        sites_: the sites it was fitted on.
        train_kl_: ``(layers,)`` mean KL on the training inputs after fitting.

    Example:
        >>> from seethrough.bench.zoo import TinyTransformer
        >>> model = TinyTransformer(10, 5, n_layers=2)
        >>> readout = module_readout(model, ["ln_final", "unembed"])
        >>> x = torch.randint(0, 10, (16, 5), generator=torch.Generator().manual_seed(0))
        >>> tuned = TunedLens(readout, n_steps=50).fit(model, x, ["blocks.0", "blocks.1"])
        >>> bool(tuned.lens(model, x).mean_kl()[0] < logit_lens(model, x, ["blocks.0", "blocks.1"], readout).mean_kl()[0])
        True

    References:
        Belrose et al., "Eliciting Latent Predictions from Transformers with the Tuned Lens", 2023.
    """

    def __init__(self, readout: Readout, *, n_steps: int = 500, lr: float = 1e-2, weight_decay: float = 0.0,
                 seed: int = 0) -> None:
        self.readout = readout
        self.n_steps = n_steps
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed

    def fit(self, model: nn.Module, inputs: Inputs, sites: Site | str | Sequence[Site | str], *,
            batch_size: int = 64) -> TunedLens:
        """Train the translators on ``inputs``' residuals at ``sites`` (the last is the final residual); returns self."""
        fn = _check_readout(self.readout)
        steps = check_int("n_steps", self.n_steps, at_least=0)
        lr = check_float("lr", self.lr, at_least=1e-12)
        decay = check_float("weight_decay", self.weight_decay, at_least=0.0)
        check_int("seed", self.seed)
        resolved, hidden, mask = _residuals(model, inputs, sites, batch_size)
        n_layers, d = hidden.shape[0], hidden.shape[-1]
        h = hidden[:, mask].float()  # (layers, n_real, d)
        with torch.no_grad():
            target = _apply(fn, h[-1]).double().log_softmax(-1)
        eye = torch.eye(d).expand(n_layers - 1, d, d).clone()
        weight = eye.clone().requires_grad_(True)
        bias = torch.zeros(n_layers - 1, d, requires_grad=True)
        optimiser = torch.optim.Adam([weight, bias], lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                translated = torch.baddbmm(bias[:, None, :], h[:-1], weight.transpose(1, 2))
                q = _apply(fn, translated).double().log_softmax(-1)
                loss = (target.exp() * (target - q)).sum(-1).mean()
                if decay:
                    loss = loss + decay * (((weight - eye) ** 2).sum() + (bias ** 2).sum())
                grads = torch.autograd.grad(loss, [weight, bias])  # never into the model's parameters
                weight.grad, bias.grad = grads
                optimiser.step()
        self.weight_ = torch.cat([weight.detach(), torch.eye(d)[None]])
        self.bias_ = torch.cat([bias.detach(), torch.zeros(1, d)])
        self.sites_ = resolved
        with torch.no_grad():
            logits = _apply(fn, self._translate(h))
            self.train_kl_ = _kl(logits[-1:].expand_as(logits), logits).mean(-1).float()
        return self

    def _translate(self, hidden: Tensor) -> Tensor:
        """``hidden`` (layers, ..., d) through each layer's translator."""
        shape = hidden.shape
        flat = hidden.reshape(shape[0], -1, shape[-1]).float()
        return torch.baddbmm(self.bias_[:, None, :], flat, self.weight_.transpose(1, 2)).reshape(shape)

    def lens(self, model: nn.Module, inputs: Inputs, *, tokens: Sequence[Sequence[str]] | None = None,
             classes: Sequence[str] | None = None, batch_size: int = 64) -> LensResult:
        """The tuned lens on ``inputs`` (held-out ones, to evaluate it): a `LensResult` at the fitted sites."""
        if not hasattr(self, "weight_"):
            raise NotFittedError("this TunedLens is not fitted yet; call fit(model, inputs, sites) first.")
        fn = _check_readout(self.readout)
        resolved, hidden, mask = _residuals(model, inputs, list(self.sites_), batch_size)
        if hidden.shape[-1] != self.weight_.shape[-1]:
            raise InputError(f"the sites' values have {hidden.shape[-1]} dims but the lens was fitted on "
                             f"{self.weight_.shape[-1]}.")
        with torch.no_grad():
            logits = _apply(fn, self._translate(hidden)).transpose(0, 1)
        return _result("tuned lens", resolved, logits, mask, tokens, classes)


# -- findings --------------------------------------------------------------------------------------


def lens_findings(model: nn.Module, inputs: Inputs, sites: Site | str | Sequence[Site | str], readout: Readout,
                  target: int, *, tuned: TunedLens | None = None, batch_size: int = 64) -> list[Finding]:
    """What a lens claims, as ``"direction"`` findings: "layer ``l`` carries class ``target`` along this direction".

    For every site but the last, the direction is the gradient of the lens's log-probability of
    ``target`` with respect to that site's residual (through the tuned lens's translator when
    ``tuned`` is given), averaged over the real positions and scaled to unit length: the direction
    the lens reads ``target`` from (for a linear readout, exactly ``W[target] − Σ p_c W[c]``
    averaged). A lens only *reads*; `seethrough.evidence.validate` tests whether the model *uses*
    the direction by projecting it out at the site (or steering along it) against random
    directions, with ``target``'s log-probability as the metric by default. The evidence holds the
    lens's mean probability of ``target`` and its mean KL to the final output at that layer.

    Raises:
        InputError: fewer than two sites, a target outside the readout's classes, or a tuned lens
            fitted on other sites.
    """
    fn = _check_readout(readout)
    resolved, hidden, mask = _residuals(model, inputs, sites, batch_size)
    h = hidden[:, mask].float()  # (layers, n_real, d)
    with torch.no_grad():
        final = _apply(fn, h[-1])
    n_classes = final.shape[-1]
    check_int("target", target, at_least=0, at_most=n_classes - 1)
    if tuned is not None:
        if not hasattr(tuned, "weight_"):
            raise NotFittedError("this TunedLens is not fitted yet; call fit(model, inputs, sites) first.")
        if tuple(s.path for s in tuned.sites_) != tuple(s.path for s in resolved):
            raise InputError("the tuned lens was fitted on other sites; pass the sites it was fitted on.")
    method = "logit lens" if tuned is None else "tuned lens"
    findings = []
    for layer, site in enumerate(resolved[:-1]):
        point = h[layer].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            translated = point if tuned is None else point @ tuned.weight_[layer].T + tuned.bias_[layer]
            log_p = _apply(fn, translated).double().log_softmax(-1)
            (grad,) = torch.autograd.grad(log_p[:, target].sum(), point)  # never into the model's parameters
        direction, log_p = grad.double().mean(0), log_p.detach()
        norm = float(direction.norm())
        if norm == 0.0:
            continue  # the lens does not read the target from this layer at all
        with torch.no_grad():
            kl = float(_kl(final, _apply(fn, translated.detach())).mean())
        findings.append(Finding(
            "direction", f"the {method} reads class {target} at {site.path} along this direction, and the model uses it",
            site=site, direction=(direction / norm), target=target, score=float(log_p[:, target].exp().mean()),
            evidence={"lens": method, "layer": layer, "mean_probability": float(log_p[:, target].exp().mean()),
                      "mean_kl_to_final": kl}))
    return findings
