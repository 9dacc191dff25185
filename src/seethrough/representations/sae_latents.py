"""SAE latents as units: read them with the neuron tools, state them as findings, test them by steering.

Representations / dictionary learning (survey §5.3). `LatentModel` wraps a model and a fitted
`SparseAutoencoder` into a module whose site ``"latents"`` holds the SAE's codes of the model's
site, so every unit tool works on latents unchanged: ``neurons.top_exemplars(LatentModel(model,
site, sae), data, "latents")`` gives a latent's top exemplars through the neuron exemplar machinery
(streaming, sharding, padding masks), and its ``to_findings(labels)`` the latents whose exemplars
agree on a class. `latent_findings` turns those (or `latent_finding`, a claim stated by hand) into
``"direction"`` `Finding`s at the model's site (the latent's decoder row), which
``evidence.validate(..., steer=alpha)`` tests by adding the direction and comparing the change of
behaviour with random directions of the same norm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from ..core.errors import InputError, InputTypeError
from ..core.hooks import capture
from ..core.sites import Site, as_sites, resolve_site
from ..evidence.finding import Finding
from ..evidence.fingerprint import Fingerprint
from .sae import SparseAutoencoder

__all__ = ["LatentModel", "latent_finding", "latent_findings"]


class LatentModel(nn.Module):
    """``inputs → the SAE's codes of model's site``, exposed at the site ``"latents"`` (an identity module).

    The forward pass runs ``model`` (`core.capture`; the whole pass, so the model's own hooks
    fire as usual) and encodes the value with the unit axis moved last and back, so the codes have the site's layout
    with ``n_latents`` units (``(batch, n_latents)``, ``(batch, seq, n_latents)``, ``(batch,
    n_latents, H, W)``). The model is held, never changed; the SAE's weights are not parameters.

    Args:
        model: any ``nn.Module``. site: where the SAE was trained. sae: a fitted `SparseAutoencoder`.

    Raises:
        SiteNotFoundError: unknown site. NotFittedError: the SAE is not fitted.

    Example:
        >>> import torch
        >>> model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))
        >>> x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
        >>> sae = SparseAutoencoder(8, k=2, max_epochs=2).fit(model[:2](x).detach())
        >>> tuple(LatentModel(model, "1", sae)(x).shape)
        (64, 8)
    """

    def __init__(self, model: nn.Module, site: Site | str, sae: SparseAutoencoder) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InputTypeError(f"model must be an nn.Module, got {type(model).__name__}.")
        if not isinstance(sae, SparseAutoencoder):
            raise InputTypeError(f"sae must be a fitted SparseAutoencoder, got {type(sae).__name__}.")
        sae._check_fitted()
        keys = as_sites(site)
        if len(keys) != 1:
            raise InputTypeError(f"give one site, got {len(keys)}.")
        self.site, _ = resolve_site(model, keys[0])
        self.model = model
        self.sae = sae
        self.latents = nn.Identity()

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """The SAE's codes of the wrapped model's site on these inputs (one tensor, tuple or keyword dict)."""
        if kwargs and args:
            raise InputTypeError("call LatentModel with one input (a tensor, tuple or dict) or keyword inputs only.")
        inputs = kwargs if kwargs else (args[0] if len(args) == 1 else tuple(args))
        value = capture(self.model, inputs, [self.site])[self.site]  # a full pass: the model's own hooks all fire
        axis = self.site.unit_axis(value)
        codes = self.sae.encode(value.movedim(axis, -1)).movedim(-1, axis)
        return self.latents(codes)


def latent_finding(sae: SparseAutoencoder, site: Site | str, latent: int, *, target: int | None = None,
                   claim: str | None = None, evidence: Mapping[str, Any] | None = None, score: float | None = None,
                   data_fingerprint: Fingerprint | None = None) -> Finding:
    """The claim "latent ``latent`` of ``sae`` at ``site`` is a feature for ``target``" as a ``"direction"`` `Finding`.

    The direction is the latent's decoder row (unit norm), along the site's unit axis: validate it
    with ``validate(finding, model, held_out, steer=alpha)`` (adding it should raise the target's
    log-probability more than random directions of the same norm) or without ``steer`` (projecting
    it out should lower it).

    Raises:
        NotFittedError: the SAE is not fitted. InputError: a latent out of range.
    """
    sae._check_fitted()
    if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent < sae.n_latents:
        raise InputError(f"latent must be an int in [0, {sae.n_latents}), got {latent!r}.")
    where = as_sites(site)[0]
    key = where if isinstance(where, Site) else Site(where)
    text = claim or f"SAE latent {latent} at {key.path!r} is a feature" + (f" for class {target}" if target is not None
                                                                           else "")
    return Finding("direction", text, site=key, direction=sae.decoder_[latent].clone(), target=target, score=score,
                   evidence={"method": "sparse autoencoder latent", "latent": latent, **dict(evidence or {})},
                   data_fingerprint=data_fingerprint)


def latent_findings(latents: LatentModel, findings: Sequence[Finding]) -> list[Finding]:
    """``"units"`` findings about the ``"latents"`` site of ``latents`` as ``"direction"`` findings at the model's site.

    E.g. ``latent_findings(lm, top_exemplars(lm, data, "latents").to_findings(labels))``: each
    finding's single unit is a latent; its claim, target, score, evidence and data fingerprint are
    kept, and the direction is that latent's decoder row at the SAE's site.

    Raises:
        InputError: a finding that is not a one-unit ``"units"`` finding at ``"latents"``.
    """
    if not isinstance(latents, LatentModel):
        raise InputTypeError(f"latents must be a LatentModel, got {type(latents).__name__}.")
    out = []
    for f in findings:
        if not isinstance(f, Finding) or f.kind != "units" or f.site is None or f.site.path != "latents" or \
                len(f.units or ()) != 1:
            raise InputError("latent_findings takes one-unit 'units' findings at the site 'latents' of the LatentModel "
                             f"(e.g. from top_exemplars(...).to_findings), got {getattr(f, 'kind', type(f).__name__)!r}.")
        (u,) = f.units or ()
        out.append(latent_finding(latents.sae, latents.site, u, target=f.target, score=f.score,
                                  claim=f"SAE latent {u} at {latents.site.path!r}: {f.claim}",
                                  evidence=dict(f.evidence), data_fingerprint=f.data_fingerprint))
    return out
