"""Conductance: how much of a score's change from a baseline input flows through each unit of a site.

Neurons / gradient attribution in the survey's taxonomy. The input moves along the straight path
from the baseline to the input; at every node the site's value ``y(α)`` and the gradient of the
score with respect to it are read in one forward and one backward (all nodes batched), and the
conductance of unit j is the path integral ``∫ ∂F/∂y_j dy_j``, taken as a Riemann–Stieltjes sum
over consecutive nodes as Captum's ``LayerConductance`` does. Over all units of a layer that
everything flows through, conductances sum to ``F(x) - F(baseline)`` (completeness).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..core.checks import check_int
from ..core.errors import InputError
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from ._gradients import (
    broadcast_baseline,
    check_baseline,
    check_internal_batch_size,
    endpoints,
    gradients,
    gradients_enabled,
    input_scores,
    prepare,
    quadrature,
    steps_per_pass,
)
from .attribution import AttributionResult

__all__ = ["conductance"]


def conductance(
    model: nn.Module,
    inputs: Inputs,
    target: Tensor | int | None,
    *,
    site: Site | str,
    path_site: Site | str | None = None,
    baseline: Tensor | None = None,
    n_steps: int = 50,
    method: str = "riemann_trapezoid",
    internal_batch_size: int | None = None,
    metric: Callable[[Any], Tensor] | None = None,
    direction: Tensor | None = None,
) -> AttributionResult:
    """Conductance of every unit at ``site`` (or of its selected units, or of a direction in it).

    Unlike `integrated_gradients` at a site, whose path runs through the site's own values, the
    path here runs through the inputs, and ``baseline`` is an input; or, with ``path_site``,
    through the value at that earlier site (for token models: the token embeddings), and
    ``baseline`` is a value there, as in Captum's ``LayerConductance`` on a model that takes
    embeddings.

    ``values_j = Σ_k ∂F/∂y_j(x(α_k)) · (y_j(x(α_{k+1})) - y_j(x(α_k)))`` over the ``n_steps + 1``
    nodes ``α_0 < … < α_n`` of the chosen rule (Captum's ``LayerConductance`` convention), on the
    input path ``x(α) = baseline + α (inputs - baseline)``. With ``Site(path, units=...)`` only
    the selected units are attributed; with ``direction`` the coordinate of the site's value
    along it (the conductance of a direction). ``delta = values.sum() - (F(x) - F(baseline))``:
    small when the site is a layer everything flows through and all its units are attributed.

    Args:
        model: any ``nn.Module``.
        inputs: a ``(batch, ...)`` floating tensor (the path runs in input space); with
            ``path_site``, anything the model takes (a tensor of token ids, a tuple, a dict).
        target: as in `integrated_gradients`.
        site: the layer (or units) whose conductance is measured.
        path_site: run the path through this site's value instead of the inputs, e.g.
            ``"embeddings"`` of a HuggingFace model or ``"embed"``; it must run before ``site``.
        baseline: the path's start *in input space* (or at ``path_site``), broadcastable to the
            inputs (or to that site's value); zeros by default.
        n_steps: path intervals (``n_steps + 1`` nodes, all in one pass unless chunked).
        method: the rule whose ``n_steps + 1`` nodes are used. ``"riemann_trapezoid"`` (default):
            evenly spaced from 0 to 1, so the whole path is covered and a network linear in its
            input is attributed exactly. Captum's default ``"gausslegendre"`` (also accepted, as
            are the other rules of `integrated_gradients`) has no node at 0 or 1: its sum skips
            both ends of the path, so its conductances miss part of ``F(x) - F(baseline)``
            even for a linear network.
        internal_batch_size: rows per forward pass, to bound memory; ``None`` runs all nodes at once.
        metric, direction: as in `integrated_gradients`.

    Returns:
        `AttributionResult` shaped like the site's (selected) value, or without its unit axis
        for a direction, with the per-example completeness error ``delta``.

    Raises:
        InputError: as `integrated_gradients`; also when ``inputs`` are not one floating tensor
            and no ``path_site`` is given.
        SiteNotFoundError: unknown site path (before any forward pass).

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
        >>> result = conductance(model, torch.ones(2, 3), 1, site="0")
        >>> tuple(result.values.shape), bool(result.delta.abs().max() < 1e-5)  # linear: exact
        ((2, 4), True)

    References:
        Dhamdhere, Sundararajan and Yan, "How Important Is a Neuron?", ICLR 2019 (arXiv 2018).
        Kokhlikyan et al., "Captum", 2020 (``LayerConductance``).
    """
    check_int("n_steps (path intervals)", n_steps, at_least=1)
    alphas, _ = quadrature(method, n_steps + 1)
    check_internal_batch_size(internal_batch_size)
    check_baseline(baseline)
    path = None if path_site is None else resolve_site(model, path_site)[0]
    with gradients_enabled():
        problem = prepare(model, inputs, target, site, metric, direction, need_input_tensor=path is None)
        if path is None:
            x = problem.inputs
            assert isinstance(x, Tensor)  # prepare checked it
            base = broadcast_baseline(baseline, x, "the inputs")
            ends = input_scores(problem, torch.cat([x, base]), 2)
        else:
            _check_path_site(path, problem.site)
            # x, the baseline and F at both ends, read at the path's site in one no-grad forward
            x, base, f_x, f_base = endpoints(dataclasses.replace(problem, site=path, direction=None), baseline)
            ends = torch.cat([f_x, f_base])
        diff = x - base
        n_nodes = n_steps + 1
        alpha = torch.tensor(alphas, dtype=x.dtype, device=x.device).view(-1, *[1] * x.ndim)
        per_pass = steps_per_pass(internal_batch_size, problem.n, n_nodes)
        total: Tensor | None = None
        carry: tuple[Tensor, Tensor] | None = None  # the last node's value and gradient of the previous pass
        for start in range(0, n_nodes, per_pass):
            stop = min(start + per_pass, n_nodes)
            points = torch.addcmul(base, alpha[start:stop], diff).reshape(-1, *x.shape[1:])
            if path is None:
                value, grads = gradients(problem, points, stop - start)
            elif path == problem.site:  # the path's own site: the points are the attributed values
                value, grads = gradients(problem, None, stop - start, lambda _, points=points: points)
            else:
                value, grads = gradients(problem, None, stop - start, feed=(path, points))
            value = value.reshape(stop - start, problem.n, *value.shape[1:])
            grads = grads.reshape(value.shape)
            if carry is not None:
                value, grads = torch.cat([carry[0], value]), torch.cat([carry[1], grads])
            part = (grads[:-1] * (value[1:] - value[:-1])).sum(0)
            total = part if total is None else total.add_(part)
            carry = value[-1:], grads[-1:]
    assert total is not None
    delta = total.reshape(problem.n, -1).sum(1, dtype=torch.float64) - (ends[:problem.n] - ends[problem.n:]).double()
    return AttributionResult(total, delta.to(total.dtype), f"conductance ({method}, {n_steps} steps)", problem.site)


def _check_path_site(path: Site, site: Site | None) -> None:
    if path.selects:
        raise InputError(f"path_site {path!r} selects units or positions; the path runs through the whole value "
                         "there: give the plain site.")
    if site is not None and site != path and (site.path, site.point) == (path.path, path.point):
        raise InputError(f"site {site!r} selects part of the path's own site; measure conductance at a later "
                         f"site, or call integrated_gradients(..., site={site!r}) for the path's own values.")
