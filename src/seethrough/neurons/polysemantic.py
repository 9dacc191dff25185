"""Polysemanticity: how many distinct features does each unit respond to? (a neuron hazard)

Neurons / hazards in the survey's taxonomy. `polysemanticity` fits each unit's response to a
set of features, either known (a ``(batch, n_features)`` matrix of ground-truth feature values,
as in the toy model of superposition, or one-hot labels) or discovered (k-means clusters of the
site's activations), and summarises the response profile by an effective number of features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError
from ..core.hooks import capture
from ..core.inputs import validate_inputs
from ..core.interventions import check_position_mask, position_mask
from ..core.results import Result, new_figure
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from ..evidence.finding import Finding
from ..evidence.fingerprint import Fingerprint, fingerprint

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["Polysemanticity", "polysemanticity"]


@dataclass(frozen=True)
class Polysemanticity(Result):
    """Each unit's response to each feature and two summaries of it.

    ``responses[u, f]`` is unit ``u``'s response to feature ``f`` (see `polysemanticity`), and
    ``shares[u, f]`` the share of the unit's feature-driven variance that feature ``f`` explains:
    ``(responses[u, f] * std_f)²`` normalised over ``f``. ``effective`` is the participation ratio
    ``1 / Σ_f shares[u, f]²``: 1 for a unit driven by one feature, ``k`` for one driven equally by
    ``k`` features (0 for a unit that responds to nothing). ``count`` is the number of features
    whose ``|response| * std_f`` is at least ``threshold`` times the unit's largest.
    ``data_fingerprint`` identifies the inputs the responses were fitted on.
    """

    site: Site
    responses: Float[Tensor, "n_units n_features"]
    shares: Float[Tensor, "n_units n_features"]
    effective: Float[Tensor, " n_units"]
    count: Int[Tensor, " n_units"]
    threshold: float
    discovered: bool
    data_fingerprint: Fingerprint | None = None

    def top(self, k: int) -> list[int]:
        """The ``k`` most polysemantic units (largest effective number; ties: lower index first)."""
        return torch.sort(-self.effective, stable=True).indices[:k].tolist()

    def to_findings(self, *, k: int, target: int | None = None) -> list[Finding]:
        """One ``"units"`` finding naming the ``k`` most polysemantic units (`validate` ablates them).

        A ranking, not a per-unit test: the finding names the top ``k`` of ``evidence["n_tested"]``
        units, chosen on the inputs of `polysemanticity` (validate on held-out inputs).
        """
        units = self.top(check_int("k", k, at_least=1, at_most=len(self.effective)))
        return [Finding("units", f"units {units} at {self.site.path!r} respond to the most distinct features",
                       site=self.site, units=units, target=target, score=float(self.effective[units].mean()),
                       evidence={"method": "polysemanticity", "effective": self.effective[units],
                                 "count": self.count[units], "discovered_features": self.discovered,
                                 "n_tested": len(self.effective)},
                       data_fingerprint=self.data_fingerprint)]

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame({"unit": range(len(self.effective)), "effective": self.effective.tolist(),
                             "count": self.count.tolist()})

    def plot(self) -> Figure:
        """Heat map of ``|responses|`` (units × features) beside each unit's effective number."""
        fig = new_figure(7, 3)
        ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
        ax.imshow(self.responses.abs().numpy(), aspect="auto", cmap="viridis")
        ax.set_xlabel("discovered feature" if self.discovered else "feature")
        ax.set_ylabel(f"unit at {self.site.path}")
        bx.barh(range(len(self.effective)), self.effective.tolist())
        bx.invert_yaxis()
        bx.set_xlabel("effective # features")
        return fig


def polysemanticity(model: nn.Module, inputs: Inputs, site: Site | str,
                    features: Float[Tensor, "batch n_features"] | None = None, *, threshold: float = 0.5,
                    n_clusters: int = 10, seed: int = 0, mask: Tensor | bool | None = None) -> Polysemanticity:
    """Score how many distinct features each unit of ``site`` responds to.

    A unit's activation per example is its value (averaged over positions for conv channels and
    sequence units; on padded sequence inputs over the real positions only, see ``mask``). Its response to the features is then:

    - known features that can co-occur (e.g. sparse toy-model features): the coefficients of a
      least-squares fit ``activation ≈ b + Σ_f r_f · feature_f``, so ``r_f`` is the change of the
      activation per unit of feature ``f`` with the others held fixed;
    - mutually exclusive features (every row of ``features`` sums to the same value, e.g. one-hot
      labels), where the intercept is not identifiable: the mean activation per feature minus the
      smallest such mean (a tuning curve).
    - ``features=None`` (discovered): the examples are clustered by k-means on their standardised
      site activations (``n_clusters`` clusters, seeded) and the clusters are used as one-hot
      features as above.

    Limits: a linear fit reads how a unit responds to each feature alone; features that only
    act together (an AND), or that a unit responds to at a different scale than others, can be
    over- or under-counted. Discovered clusters are only as distinct as k-means makes them, and
    ``n_clusters`` caps the count.

    Args:
        model: any ``nn.Module`` (left unchanged).
        inputs: the data.
        site: where the units live (no unit or position selection).
        features: ``(batch, n_features)`` feature values per example, or None to discover them.
        threshold: for `Polysemanticity.count`, the fraction of the largest response that counts.
        n_clusters: discovered features only: how many clusters.
        seed: discovered features only: seeds k-means.
        mask: which positions count for a ``(batch, seq, d)`` site value (padding does not):
            ``None`` (default) uses the inputs' ``attention_mask`` when they are a dict holding one
            of that sequence length (ignored for images and vectors); ``False`` counts every
            position; a ``(batch, seq)`` bool or 0/1 tensor is used as given. A unit's activation
            per example is then its mean over the counted positions, so a padded batch gives what
            each sentence gives alone; an example with no counted position is left out (with its
            row of ``features``). Unpadded inputs give exactly the unmasked results.

    Returns:
        A `Polysemanticity` with each unit's responses, variance shares, effective number and count.

    Raises:
        InputError: features with another number of rows than the batch, NaN/inf, a bad
            ``threshold`` or ``n_clusters``, a bad mask or one that leaves too few examples, or a
            site that selects units.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 2, bias=False))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
        >>> import itertools
        >>> x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))  # 8 examples, 3 balanced features
        >>> poly = polysemanticity(model, x, "0", x)  # the inputs are the features
        >>> [round(v, 3) for v in poly.effective.tolist()], poly.count.tolist()
        ([1.0, 3.0], [1, 3])

    References:
        Elhage et al., "Toy models of superposition", 2022; Olah et al., "Zoom in", 2020.
    """
    resolved, _ = resolve_site(model, site)
    if resolved.selects:
        raise InputError(f"{resolved!r} selects units or positions; polysemanticity scores every unit of a "
                         "whole site.")
    threshold = check_float("threshold", threshold, at_most=1.0)
    if not threshold > 0:
        raise InputError(f"threshold must be in (0, 1], got {threshold!r}; pass a positive fraction.")
    check_position_mask(mask)
    n = validate_inputs(model, inputs)
    if features is not None:
        if not isinstance(features, Tensor):
            raise InputTypeError("features must be a (batch, n_features) Tensor or None, got "
                                 f"{type(features).__name__}.")
        if features.ndim != 2 or features.shape[0] != n or features.shape[1] < 1:
            raise InputError(f"features must have shape ({n}, n_features), one row per example; got "
                             f"{tuple(features.shape)}.")
        if not bool(torch.isfinite(features).all()):
            raise InputError("features contain NaN/inf; clean them first.")
    else:
        check_int("n_clusters", n_clusters, at_least=2, at_most=n)
    with torch.no_grad():
        value = capture(model, inputs, [resolved])[resolved]
    axis = resolved.unit_axis(value)
    keep = position_mask(inputs, value, resolved, mask)  # None: every position counts
    per_position = value.detach().movedim(axis, -1).reshape(n, -1, value.shape[axis])
    if keep is None:
        acts = per_position.mean(1).double().cpu()
    else:  # (batch, seq, n_units): the mean over each example's counted positions
        counted = keep[:, :, None]
        acts = (per_position.masked_fill(~counted, 0.0).sum(1) / counted.sum(1).clamp_min(1)).double().cpu()
        present = keep.any(1).cpu()
        acts = acts[present]
        if features is not None:
            features = features[present.to(features.device)]
        if len(acts) < (2 if features is not None else n_clusters):
            raise InputError(f"the mask leaves {len(acts)} examples with a counted position at {resolved!r}; "
                             f"too few to fit (need {2 if features is not None else n_clusters}).")
    discovered = features is None
    f = _cluster_one_hot(acts, n_clusters, seed) if features is None else features.detach().double().cpu()
    responses = _responses(acts, f)
    mags = responses.abs() * f.std(0)  # the activation change for a one-standard-deviation change of a feature
    energy = mags.pow(2)
    total = energy.sum(1, keepdim=True)
    shares = energy / total.clamp(min=1e-300)
    alive = total.squeeze(1) > 0
    ratio = 1.0 / shares.pow(2).sum(1).clamp(min=1e-300)
    effective = torch.where(alive, ratio, torch.zeros_like(ratio))
    peak = mags.amax(1, keepdim=True)
    count = ((mags >= threshold * peak) & (peak > 0)).sum(1)
    return Polysemanticity(resolved, responses.float(), shares.float(), effective.float(), count, float(threshold),
                           discovered, fingerprint(inputs))


def _responses(acts: Tensor, features: Tensor) -> Tensor:
    """``(n_units, n_features)`` responses: regression coefficients, or a tuning curve for exclusive features."""
    row_sums = features.sum(1)
    exclusive = bool((row_sums - row_sums[0]).abs().max() <= 1e-9 * (1 + abs(float(row_sums[0]))))
    if exclusive:
        solution = torch.linalg.pinv(features) @ acts  # (n_features, n_units), no intercept
        solution = solution - solution.amin(0, keepdim=True)
    else:
        fc = features - features.mean(0)
        solution = torch.linalg.pinv(fc) @ (acts - acts.mean(0))
    return solution.T.contiguous()


def _cluster_one_hot(acts: Tensor, n_clusters: int, seed: int) -> Tensor:
    """One-hot k-means cluster memberships of the standardised activations."""
    from sklearn.cluster import KMeans

    std = acts.std(0)
    z = (acts - acts.mean(0)) / torch.where(std > 0, std, torch.ones_like(std))
    labels = KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit_predict(z.numpy())
    one_hot = torch.zeros(acts.shape[0], n_clusters, dtype=torch.float64)
    one_hot[torch.arange(acts.shape[0]), torch.as_tensor(labels, dtype=torch.long)] = 1.0
    return one_hot[:, one_hot.sum(0) > 0]
