"""Gradient attribution at any site: integrated gradients, saliency and gradient × input.

Neurons / gradient attribution in the survey's taxonomy. One private engine (``_gradients``)
computes the gradient of a per-example target score with respect to the attributed tensor: the
model's input (``site=None``), the value at a `Site` (layer, units or positions), which `patch`
replaces by a leaf tensor so `torch.autograd.grad` reads the gradient without any backward hook,
or the coordinate of that value along a ``direction``. Integrated gradients evaluate every point
of the path for the whole batch in one forward and one backward. SmoothGrad/VarGrad
(``smoothing``), conductance (``conductance``) and guided backpropagation (``guided``) share the
engine. A large attribution is a hypothesis about what the model uses, to be tested by intervention.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..core.errors import InputError
from ..core.results import Result, new_figure
from ..core.sites import Site
from ..core.types import Inputs
from ._gradients import (
    check_baseline,
    check_internal_batch_size,
    endpoints,
    gradients,
    gradients_enabled,
    prepare,
    quadrature,
    steps_per_pass,
)
from .tokens import TokenAttribution, check_mask, check_tokens

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["AttributionResult", "integrated_gradients", "saliency", "gradient_x_input"]

@dataclass(frozen=True)
class AttributionResult(Result):
    """Attributions of a per-example score to each element of the attributed tensor.

    Attributes:
        values: shaped like the attributed tensor (the input, or the site's value).
        delta: per-example completeness error of integrated gradients,
            ``values[i].sum() - (F(x_i) - F(baseline_i))``; ``None`` for methods without an axiom.
        method: how the values were computed, e.g. ``"integrated_gradients (gausslegendre, 50 steps)"``.
        site: the attributed site, or ``None`` for the model's input.
    """

    values: Float[Tensor, " batch *rest"]
    delta: Float[Tensor, " batch"] | None
    method: str
    site: Site | None = None

    def to_frame(self) -> pandas.DataFrame:
        """Long table: one row per example and feature (flat index into ``values[i]``, C order)."""
        import pandas as pd

        flat = self.values.detach().reshape(len(self.values), -1).cpu()
        n, d = flat.shape
        delta = np.repeat(self.delta.detach().cpu().double().numpy(), d) if self.delta is not None \
            else np.full(n * d, np.nan)
        return pd.DataFrame({"example": np.repeat(np.arange(n), d), "feature": np.tile(np.arange(d), n),
                             "attribution": flat.double().numpy().ravel(), "delta": delta})

    def plot(self) -> Figure:
        """The first example's attributions: a heatmap for 2-D/3-D values (channels summed), else bars."""
        first = self.values[0].detach().double().cpu() if self.values.ndim > 1 else self.values.detach().double().cpu()
        where = "input" if self.site is None else self.site.path
        fig = new_figure(5, 3)
        ax = fig.add_subplot()
        if first.ndim == 3:  # (channels, height, width): one map per image
            first = first.sum(0)
            where += " (summed over channels)"
        if first.ndim >= 2:
            grid = first.reshape(first.shape[0], -1).numpy()
            limit = float(np.abs(grid).max()) or 1.0
            image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
            fig.colorbar(image, ax=ax)
        else:
            ax.bar(range(first.numel()), first.reshape(-1).tolist())
            ax.set_xlabel("example" if self.values.ndim == 1 else "feature")
        ax.set_title(f"{self.method} at {where}", fontsize=8)
        return fig

    def token_scores(self, tokens: Sequence[Sequence[str]], *,
                     attention_mask: Tensor | None = None) -> TokenAttribution:
        """Per-token scores: the values summed over every axis after the position axis (the embedding axis).

        For attributions to token embeddings, ``values`` is ``(batch, seq, d_model)``; its sum over
        ``d_model`` is each token's share of the score (completeness still holds: the scores of an
        example sum to its values' sum, so ``delta`` carries over). ``(batch, seq)`` values (e.g. a
        direction's coordinate per position) are kept as they are.

        Args:
            tokens: one list of token strings per example, ``seq`` each (padding included), e.g.
                ``seethrough.hf.token_strings(tokenizer, inputs)``.
            attention_mask: ``(batch, seq)``, nonzero at real tokens: padding is left out of the
                table and the figure. ``None`` shows every position.

        Returns:
            `TokenAttribution` with ``scores`` ``(batch, seq)`` and the tokens.

        Raises:
            InputTypeError: ``tokens`` given as a raw string or a flat list of strings.
            InputError: values without a position axis, or tokens/mask that do not match ``(batch, seq)``.

        Example:
            >>> values = torch.tensor([[[1.0, 2.0], [3.0, -4.0], [0.0, 0.0]]])  # (batch, seq, d_model)
            >>> result = AttributionResult(values, torch.zeros(1), "toy")
            >>> scores = result.token_scores([["[CLS]", "hi", "[PAD]"]], attention_mask=torch.tensor([[1, 1, 0]]))
            >>> scores.to_frame()[["token", "attribution"]].values.tolist()
            [['[CLS]', 3.0], ['hi', -1.0]]
        """
        if self.values.ndim < 2:
            raise InputError(f"values of shape {tuple(self.values.shape)} have no position axis; per-token scores "
                             "need attributions to a (batch, seq, ...) site such as the token embeddings.")
        scores = self.values.detach().reshape(*self.values.shape[:2], -1).sum(2)
        shape = (int(scores.shape[0]), int(scores.shape[1]))
        return TokenAttribution(scores, check_tokens(tokens, shape), check_mask(attention_mask, shape),
                                self.delta, self.method, self.site)

    def _repr_html_(self) -> str:
        """A summary table (method, site, shape, largest completeness error), not the long frame."""
        delta = "—" if self.delta is None else f"{float(self.delta.abs().max()):.3g}"
        rows = [("method", self.method), ("site", "input" if self.site is None else repr(self.site)),
                ("values shape", str(tuple(self.values.shape))), ("max |delta|", delta)]
        body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        return f"<table><caption>{html.escape(type(self).__name__)}</caption>{body}</table>"


def integrated_gradients(
    model: nn.Module,
    inputs: Inputs,
    target: Tensor | int | None,
    *,
    baseline: Tensor | None = None,
    n_steps: int = 50,
    site: Site | str | None = None,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
    metric: Callable[[Any], Tensor] | None = None,
    direction: Tensor | None = None,
) -> AttributionResult:
    """Integrated gradients of a per-example score, at the input or at any site.

    ``values = (x - baseline) * ∫₀¹ ∂F/∂x (baseline + α (x - baseline)) dα``, the integral taken by
    quadrature (Captum's conventions: Gauss–Legendre nodes mapped to [0, 1] by default). With a
    ``site``, x is the site's value and the rest of the model is F: the value is replaced during
    the forward pass by points on the path (layer integrated gradients). All ``n_steps × batch``
    points go through one forward and one backward unless ``internal_batch_size`` splits them.
    The model is left as found: no ``.grad`` is written, no mode or flag is changed.

    Args:
        model: any ``nn.Module``; run it in eval mode unless batch statistics or dropout are meant
            to vary along the path.
        inputs: a ``(batch, ...)`` floating tensor; with ``site``, also a tuple or dict of inputs.
        target: the class whose score is attributed for ``(batch, n_classes)`` outputs: an int64
            tensor ``(batch,)``, or one int (or 0-dim tensor) for every example. ``None`` for
            ``(batch,)`` outputs or when ``metric`` is given.
        baseline: the path's start, broadcastable to the attributed tensor; zeros by default (at
            the site when ``site`` is given).
        n_steps: quadrature nodes on the path (at least 2 for ``"riemann_trapezoid"``).
        site: attribute to this site's value instead of the input (a `Site` or a module path).
        method: ``"gausslegendre"`` (default, exact for polynomials of degree < 2 n_steps),
            ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"`` or ``"riemann_trapezoid"``.
            The trapezoid rule uses the textbook weights ``1/(n_steps - 1)`` (ends halved), whose
            sum is 1; Captum uses ``1/n_steps`` there, so its values are ``(n_steps - 1)/n_steps``
            times ours for that rule only.
        internal_batch_size: rows per forward pass (``max(1, internal_batch_size // batch)``
            steps at a time), to bound memory; ``None`` runs all steps at once.
        metric: maps the model output to one score per row, shape ``(rows,)``, for outputs that
            are not ``(batch, n_classes)``/``(batch,)`` tensors (e.g. ``lambda out: out[:, -1, 3]``);
            it must treat rows independently. Give ``target=None`` with it.
        direction: with ``site``, attribute to the coordinate ``c = <value, u>`` of the site's
            value along this direction (``(n_units,)``, normalised to unit length ``u``; the unit
            axis is the site's): the value becomes ``value - c u + c' u`` along the path, the rest
            of it held fixed, so ``values`` lose the unit axis and the default baseline ``c' = 0``
            projects the direction out (as `seethrough.evidence.validate` does for directions).

    Returns:
        `AttributionResult` with ``values`` shaped like the attributed tensor and the per-example
        completeness error ``delta = values.sum() - (F(x) - F(baseline))``.

    Raises:
        InputError: NaN/inf inputs or baseline, a baseline that does not broadcast, a target out
            of range, n_steps too small, an unknown method, non-floating inputs without a site, or
            an output that is neither ``(batch, n_classes)`` nor ``(batch,)`` without a metric.
        InputTypeError: arguments of the wrong type (e.g. a float target, dict inputs without a site).
        SiteNotFoundError: unknown site path (before any forward pass).
        ForwardError: the model itself failed; the original error is chained.

    Example:
        >>> model = nn.Linear(3, 2)
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])
        >>> result = integrated_gradients(model, x, 1)
        >>> torch.allclose(result.values, model.weight[1] * x)  # a linear map: w * (x - 0)
        True
        >>> bool(result.delta.abs().max() < 1e-5)
        True

    References:
        Sundararajan, Taly and Yan, "Axiomatic Attribution for Deep Networks", ICML 2017.
        Kokhlikyan et al., "Captum: A unified and generic model interpretability library for
        PyTorch", 2020 (quadrature conventions).
    """
    alphas, weights = quadrature(method, n_steps)
    check_internal_batch_size(internal_batch_size)
    check_baseline(baseline)
    with gradients_enabled():
        problem = prepare(model, inputs, target, site, metric, direction)
        # F(x) and F(baseline) in a separate no-grad pass: measured no slower than riding along in the
        # gradient pass (which would also backpropagate through those rows)
        x, base, f_x, f_base = endpoints(problem, baseline)
        diff = x - base
        per_pass = steps_per_pass(internal_batch_size, problem.n, n_steps)
        alpha = torch.tensor(alphas, dtype=x.dtype, device=x.device).view(-1, *[1] * x.ndim)
        weight = torch.tensor(weights, dtype=x.dtype, device=x.device)
        total: Tensor | None = None
        for start in range(0, n_steps, per_pass):
            stop = min(start + per_pass, n_steps)
            points = torch.addcmul(base, alpha[start:stop], diff).reshape(-1, *x.shape[1:])
            if problem.site is None:
                _, grads = gradients(problem, points, stop - start)
            else:
                _, grads = gradients(problem, None, stop - start, lambda _, points=points: points)
            # Σ_k w_k ∂F/∂x(point_k): one (steps,) x (steps, batch·features) product.
            part = torch.tensordot(weight[start:stop], grads.reshape(stop - start, -1), dims=1).view_as(x)
            total = part if total is None else total.add_(part)
        values = cast(Tensor, total).mul_(diff)
        delta = values.reshape(problem.n, -1).sum(1, dtype=torch.float64) - (f_x - f_base).double()
    return AttributionResult(values, delta.to(values.dtype), f"integrated_gradients ({method}, {n_steps} steps)",
                             problem.site)


def saliency(model: nn.Module, inputs: Inputs, target: Tensor | int | None, *, site: Site | str | None = None,
             absolute: bool = True, metric: Callable[[Any], Tensor] | None = None,
             direction: Tensor | None = None) -> AttributionResult:
    """The gradient of the score with respect to the input or the site's value (one forward + backward).

    Args:
        model, inputs, target, site, metric, direction: as in `integrated_gradients`.
        absolute: return ``|gradient|`` (the saliency map of Simonyan et al.); ``False`` keeps the sign.

    Returns:
        `AttributionResult` with ``delta=None``.

    Example:
        >>> model = nn.Linear(3, 2)
        >>> torch.equal(saliency(model, torch.ones(4, 3), 0).values, model.weight[0].abs().expand(4, 3))
        True

    References:
        Simonyan, Vedaldi and Zisserman, "Deep Inside Convolutional Networks: Visualising Image
        Classification Models and Saliency Maps", 2014.
    """
    with gradients_enabled():
        problem = prepare(model, inputs, target, site, metric, direction)
        _, grads = gradients(problem)
    return AttributionResult(grads.abs() if absolute else grads, None, "saliency" + (" (absolute)" * absolute),
                             problem.site)


def gradient_x_input(model: nn.Module, inputs: Inputs, target: Tensor | int | None, *,
                     site: Site | str | None = None,
                     metric: Callable[[Any], Tensor] | None = None,
                     direction: Tensor | None = None) -> AttributionResult:
    """Gradient times the attributed tensor (input or site value), element-wise.

    Args:
        model, inputs, target, site, metric, direction: as in `integrated_gradients`.

    Returns:
        `AttributionResult` with ``delta=None`` (exact for linear models with zero bias).

    Example:
        >>> model = nn.Linear(3, 2)
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])
        >>> torch.allclose(gradient_x_input(model, x, 1).values, model.weight[1] * x)
        True

    References:
        Shrikumar et al., "Not Just a Black Box: Learning Important Features Through Propagating
        Activation Differences", 2016.
    """
    with gradients_enabled():
        problem = prepare(model, inputs, target, site, metric, direction)
        value, grads = gradients(problem)
    return AttributionResult(grads * value, None, "gradient_x_input", problem.site)
