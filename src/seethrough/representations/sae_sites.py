"""Sparse autoencoders at a model's site: stream its activations in, splice the SAE back in.

Representations / dictionary learning (survey §5.3). `site_activations` is a re-iterable of
``(rows, d)`` batches captured chunk by chunk (memory bounded by one chunk; every epoch of
`SparseAutoencoder.fit` re-runs the model), and `loss_recovered` replaces the site's value by
``decode(encode(value))`` through `core.patch` and measures how much of the loss an ablation of
the site costs is recovered (`SpliceResult`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..core.batching import batches, stream
from ..core.checks import check_int
from ..core.errors import InputError, InputTypeError
from ..core.hooks import patch
from ..core.inputs import batch_size_of
from ..core.interventions import check_ablation, mean_ablation, zero_ablation
from ..core.results import Result, new_figure
from ..core.sites import Site, as_sites, resolve_site
from ..core.types import Inputs
from .sae import SparseAutoencoder
from .transcoder import Transcoder

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["site_activations", "loss_recovered", "SpliceResult"]


def _rows(value: Tensor, site: Site) -> Tensor:
    """A site's value as ``(rows, units)``: the unit axis last, every other axis flattened into rows."""
    return value.movedim(site.unit_axis(value), -1).reshape(-1, value.shape[site.unit_axis(value)])


def _one_site(site: Site | str) -> Site:
    sites = as_sites(site)
    if len(sites) != 1:
        raise InputTypeError(f"give one site, got {len(sites)}.")
    return sites[0] if isinstance(sites[0], Site) else Site(sites[0])


class _SiteActivations:
    """A re-iterable over one site's activations: each iteration streams ``inputs`` through ``model`` again."""

    def __init__(self, model: nn.Module, inputs: Inputs, site: Site, batch_size: int) -> None:
        self.model, self.inputs, self.site, self.batch_size = model, inputs, site, batch_size

    def __iter__(self) -> Iterator[Tensor]:
        for _, values in stream(self.model, batches(self.inputs, self.batch_size), [self.site]):
            yield _rows(values[self.site], self.site).detach().float()


def site_activations(model: nn.Module, inputs: Inputs, site: Site | str, *, batch_size: int = 256) -> _SiteActivations:
    """A re-iterable of ``(rows, d)`` activation batches of ``site`` for `SparseAutoencoder.fit`.

    Each iteration runs ``model`` on ``inputs`` chunk by chunk (``batch_size`` examples; under
    ``torch.no_grad`` through `core.batching.stream`), so memory holds one chunk's activations, and
    every training epoch reads the model afresh. The site's unit axis becomes the last axis and
    every other axis (positions, pixels) becomes rows.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 5), nn.ReLU())
        >>> [tuple(b.shape) for b in site_activations(model, torch.ones(5, 3), "0", batch_size=2)]
        [(2, 5), (2, 5), (1, 5)]
    """
    check_int("batch_size", batch_size, at_least=1)
    key = _one_site(site)
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be an nn.Module, got {type(model).__name__}.")
    resolve_site(model, key)
    return _SiteActivations(model, inputs, key, batch_size)


def _kl_to_clean(clean: Tensor) -> Callable[[Any], Tensor]:
    """A per-row loss: KL(softmax(clean logits) ‖ softmax(patched logits)) over the last axis."""
    reference = torch.log_softmax(clean.detach().float(), dim=-1)

    def loss(output: Any) -> Tensor:
        logits = output if isinstance(output, Tensor) else output[0]
        log_q = torch.log_softmax(logits.float(), dim=-1)
        kl = (reference.exp() * (reference - log_q)).sum(-1)
        return kl.reshape(kl.shape[0], -1).mean(1)

    return loss


@dataclass(frozen=True)
class SpliceResult(Result):
    """The model's loss with a site's value replaced by the SAE's reconstruction, against an ablation.

    ``loss_recovered = (ablated_loss − spliced_loss) / (ablated_loss − clean_loss)``: 1 when the
    splice costs nothing, 0 when it is as bad as ablating the site. ``explained_variance`` is
    ``1 − Σ‖x − x̂‖² / Σ‖x − mean‖²`` of the site's values; ``mean_l0`` the mean active latents per row.
    """

    site: Site
    ablation: str
    clean_loss: float
    spliced_loss: float
    ablated_loss: float
    loss_recovered: float
    explained_variance: float
    mean_l0: float

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame({"site": [self.site.path], "ablation": [self.ablation], "clean_loss": [self.clean_loss],
                             "spliced_loss": [self.spliced_loss], "ablated_loss": [self.ablated_loss],
                             "loss_recovered": [self.loss_recovered],
                             "explained_variance": [self.explained_variance], "mean_l0": [self.mean_l0]})

    def plot(self) -> Figure:
        fig = new_figure(4, 2.5)
        ax = fig.add_subplot()
        ax.bar(["clean", "SAE spliced", f"{self.ablation}-ablated"],
               [self.clean_loss, self.spliced_loss, self.ablated_loss], color=["grey", "tab:blue", "tab:red"])
        ax.set_ylabel("loss")
        ax.set_title(f"loss recovered {self.loss_recovered:.3f}", fontsize=9)
        return fig


def loss_recovered(model: nn.Module, inputs: Inputs, site: Site | str, sae: SparseAutoencoder, *,
                   loss: Callable[[Any], Tensor] | None = None, ablation: str = "zero",
                   batch_size: int = 256) -> SpliceResult:
    """Splice ``sae`` into ``model`` at ``site`` (through `core.patch`) and measure the loss recovered.

    A `Transcoder` is spliced in place of a module: ``site`` is the module's output, whose value is
    replaced by ``decode(encode(the module's input))`` (read at the same path with point
    ``"input"`` in the same forward pass); the explained variance is then that of the output.

    Args:
        model: any ``nn.Module``; left as found.
        inputs: the evaluation inputs.
        site: where the SAE was trained (its unit axis is the SAE's input width); for a
            transcoder, the output of the module it replaces.
        sae: a fitted `SparseAutoencoder` or `Transcoder`.
        loss: output → one loss per row (lower is better), e.g. a cross-entropy on labels. None:
            the KL divergence of the patched output's softmax (last axis) from the clean one's, so
            the clean loss is 0.
        ablation: ``"zero"`` or ``"mean"`` (the site's mean over ``inputs``): the reference point 0.
        batch_size: examples per forward pass.

    Raises:
        NotFittedError: ``sae`` is not fitted. InputError: the SAE's width is not the site's.

    Example:
        >>> torch.manual_seed(0) and None  # the model's initial weights
        >>> model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
        >>> x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
        >>> sae = SparseAutoencoder(12, k=6, max_epochs=200).fit(site_activations(model, x, "1"))
        >>> 0.5 < loss_recovered(model, x, "1", sae).loss_recovered <= 1.0
        True
    """
    check_int("batch_size", batch_size, at_least=1)
    check_ablation(ablation, ("zero", "mean"))
    key = _one_site(site)
    sae._check_fitted()
    width = sae.decoder_.shape[1]
    paired = isinstance(sae, Transcoder)
    read = Site(key.path, point="input", unit_dim=key.unit_dim) if paired else key
    if paired:
        if key.point != "output":
            raise InputError(f"a Transcoder replaces a module's output; give the module's output site, not {key!r}.")
        resolve_site(model, read)
    # pass 1: the site's mean and spread, streamed (memory: one chunk)
    first, second, rows = torch.zeros(width, dtype=torch.float64), 0.0, 0
    for _, values in stream(model, batches(inputs, batch_size), [key]):
        flat = _rows(values[key], key).double()
        if flat.shape[1] != width:
            raise InputError(f"the SAE reads {width} units but {key!r} has {flat.shape[1]}; fit it at this site.")
        first += flat.sum(0)
        second += float((flat ** 2).sum())
        rows += flat.shape[0]
    mean = (first / rows).float()
    seen: dict[str, Tensor] = {}

    def record(value: Tensor, s: Site) -> None:  # the clean run: read the value, change nothing
        seen["input" if paired and s.point == "input" else "value"] = value.detach()

    def remember(value: Tensor, s: Site) -> None:  # a transcoder's run: keep the module's input
        seen["input"] = value

    def splice(value: Tensor, s: Site) -> Tensor:
        axis = s.unit_axis(value)
        source = seen.pop("input") if paired else value
        in_axis = read.unit_axis(source)
        if paired and source.shape[in_axis] != sae.encoder_.shape[1]:
            raise InputError(f"the transcoder reads {sae.encoder_.shape[1]} units but the input of {key.path!r} has "
                             f"{source.shape[in_axis]}; fit it on this module.")
        codes = sae.encode(source.movedim(in_axis, -1))
        return sae.decode(codes).to(value.dtype).movedim(-1, axis)

    def spliced(chunk: Inputs) -> Any:
        return patch(model, chunk, {read: remember, key: splice} if paired else {key: splice})

    ablate = zero_ablation() if ablation == "zero" else mean_ablation(mean)
    totals = {"clean": 0.0, "spliced": 0.0, "ablated": 0.0, "err": 0.0, "l0": 0.0}
    n = 0
    with torch.no_grad():  # pass 2: clean, spliced and ablated runs of each chunk
        for chunk in batches(inputs, batch_size):
            clean = patch(model, chunk, {read: record, key: record} if paired else {key: record})
            flat = _rows(seen.pop("value"), key).float()
            codes = sae.encode(_rows(seen.pop("input"), read).float() if paired else flat)
            totals["err"] += float(((sae.decode(codes) - flat).double() ** 2).sum())
            totals["l0"] += float((codes != 0).sum())
            per_row = loss if loss is not None else _kl_to_clean(clean if isinstance(clean, Tensor) else clean[0])
            totals["clean"] += float(per_row(clean).double().sum())
            totals["spliced"] += float(per_row(spliced(chunk)).double().sum())
            totals["ablated"] += float(per_row(patch(model, chunk, {key: ablate})).double().sum())
            n += batch_size_of(chunk)
    spread = second - rows * float((mean.double() ** 2).sum())
    gap = totals["ablated"] - totals["clean"]
    return SpliceResult(
        site=key, ablation=ablation, clean_loss=totals["clean"] / n, spliced_loss=totals["spliced"] / n,
        ablated_loss=totals["ablated"] / n,
        loss_recovered=(totals["ablated"] - totals["spliced"]) / gap if gap != 0 else float("nan"),
        explained_variance=1.0 - totals["err"] / spread if spread > 0 else float("nan"),
        mean_l0=totals["l0"] / rows)
