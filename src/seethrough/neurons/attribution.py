"""Gradient attribution at any site: integrated gradients, saliency and gradient × input.

Neurons / gradient attribution in the survey's taxonomy. One private engine computes the
gradient of a per-example target score with respect to the attributed tensor: the model's input
(``site=None``) or the value at a `Site` (layer, units or positions), which `patch` replaces by
a leaf tensor so `torch.autograd.grad` reads the gradient without any backward hook. Integrated
gradients evaluate every point of the path for the whole batch in one forward and one backward.
A large attribution is a hypothesis about what the model uses, to be tested by intervention.
"""

from __future__ import annotations

import contextlib
import functools
import html
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..core.errors import InputError, InputTypeError, SeethroughError
from ..core.hooks import patch
from ..core.inputs import call_model, repeat_inputs, validate_inputs, wrap_forward_error
from ..core.sites import Site, resolve_site
from ..core.types import Inputs

__all__ = ["AttributionResult", "integrated_gradients", "saliency", "gradient_x_input"]

#: Quadrature rules for the path integral (the names Captum uses).
_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


@dataclass(frozen=True)
class AttributionResult:
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

    def to_frame(self) -> Any:
        """Long table: one row per example and feature (flat index into ``values[i]``, C order)."""
        import pandas as pd

        flat = self.values.detach().reshape(len(self.values), -1).cpu()
        n, d = flat.shape
        delta = np.repeat(self.delta.detach().cpu().double().numpy(), d) if self.delta is not None \
            else np.full(n * d, np.nan)
        return pd.DataFrame({"example": np.repeat(np.arange(n), d), "feature": np.tile(np.arange(d), n),
                             "attribution": flat.double().numpy().ravel(), "delta": delta})

    def plot(self) -> Any:
        """The first example's attributions: a heatmap for 2-D/3-D values (channels summed), else bars."""
        from matplotlib.figure import Figure

        first = self.values[0].detach().double().cpu() if self.values.ndim > 1 else self.values.detach().double().cpu()
        where = "input" if self.site is None else self.site.path
        fig = Figure(figsize=(5, 3))
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

    def _repr_html_(self) -> str:
        delta = "—" if self.delta is None else f"{float(self.delta.abs().max()):.3g}"
        rows = [("method", self.method), ("site", "input" if self.site is None else repr(self.site)),
                ("values shape", str(tuple(self.values.shape))), ("max |delta|", delta)]
        body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        return f"<table>{body}</table>"


@dataclass(frozen=True)
class _Problem:
    """Validated arguments: what is attributed, and the per-example score it is attributed to."""

    model: nn.Module
    inputs: Inputs
    site: Site | None
    target: Tensor | None
    max_target: int
    metric: Callable[[Any], Tensor] | None
    n: int


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
    alphas, weights = _quadrature(method, n_steps)
    if internal_batch_size is not None and (isinstance(internal_batch_size, bool)
                                            or not isinstance(internal_batch_size, int) or internal_batch_size < 1):
        raise InputError(f"internal_batch_size must be a positive int or None, got {internal_batch_size!r}.")
    _check_baseline(baseline)
    with _gradients_enabled():
        problem = _prepare(model, inputs, target, site, metric)
        x, base, f_x, f_base = _endpoints(problem, baseline)
        diff = x - base
        per_pass = n_steps if internal_batch_size is None else max(1, internal_batch_size // problem.n)
        alpha = torch.tensor(alphas, dtype=x.dtype, device=x.device).view(-1, *[1] * x.ndim)
        weight = torch.tensor(weights, dtype=x.dtype, device=x.device)
        total: Tensor | None = None
        for start in range(0, n_steps, per_pass):
            stop = min(start + per_pass, n_steps)
            points = torch.addcmul(base, alpha[start:stop], diff).reshape(-1, *x.shape[1:])
            _, grads = _target_gradients(problem, points, copies=stop - start)
            # Σ_k w_k ∂F/∂x(point_k): one (steps,) x (steps, batch·features) product.
            part = torch.tensordot(weight[start:stop], grads.reshape(stop - start, -1), dims=1).view_as(x)
            total = part if total is None else total.add_(part)
        values = cast(Tensor, total).mul_(diff)
        delta = values.reshape(problem.n, -1).sum(1, dtype=torch.float64) - (f_x - f_base).double()
    return AttributionResult(values, delta.to(values.dtype), f"integrated_gradients ({method}, {n_steps} steps)",
                             problem.site)


def saliency(model: nn.Module, inputs: Inputs, target: Tensor | int | None, *, site: Site | str | None = None,
             absolute: bool = True, metric: Callable[[Any], Tensor] | None = None) -> AttributionResult:
    """The gradient of the score with respect to the input or the site's value (one forward + backward).

    Args:
        model, inputs, target, site, metric: as in `integrated_gradients`.
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
    with _gradients_enabled():
        problem = _prepare(model, inputs, target, site, metric)
        _, grads = _target_gradients(problem, None)
    return AttributionResult(grads.abs() if absolute else grads, None, "saliency" + (" (absolute)" * absolute),
                             problem.site)


def gradient_x_input(model: nn.Module, inputs: Inputs, target: Tensor | int | None, *,
                     site: Site | str | None = None,
                     metric: Callable[[Any], Tensor] | None = None) -> AttributionResult:
    """Gradient times the attributed tensor (input or site value), element-wise.

    Args:
        model, inputs, target, site, metric: as in `integrated_gradients`.

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
    with _gradients_enabled():
        problem = _prepare(model, inputs, target, site, metric)
        value, grads = _target_gradients(problem, None)
    return AttributionResult(grads * value, None, "gradient_x_input", problem.site)


# -- validation --------------------------------------------------------------------------------


def _quadrature(method: str, n_steps: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Nodes α in [0, 1] and weights for ∫₀¹ g(α) dα ≈ Σ w_k g(α_k), after checking the arguments."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int):
        raise InputTypeError(f"n_steps must be an int, got {type(n_steps).__name__}.")
    if method not in _METHODS:
        raise InputError(f"method must be one of {', '.join(map(repr, _METHODS))}; got {method!r}.")
    least = 2 if method == "riemann_trapezoid" else 1
    if n_steps < least:
        raise InputError(f"n_steps must be at least {least} for method {method!r}, got {n_steps}.")
    return _nodes_and_weights(method, n_steps)


# numpy's leggauss costs about 1 ms for 50 nodes (a fifth of a small model's whole IG), and the
# rule is a pure function of its two arguments: a small memo of immutable tuples.
@functools.lru_cache(maxsize=16)
def _nodes_and_weights(method: str, n_steps: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    k = np.arange(n_steps, dtype=np.float64)
    if method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n_steps)
        return tuple((0.5 * (nodes + 1.0)).tolist()), tuple((0.5 * w).tolist())
    if method == "riemann_trapezoid":
        w = np.full(n_steps, 1.0 / (n_steps - 1))
        w[[0, -1]] /= 2
        return tuple((k / (n_steps - 1)).tolist()), tuple(w.tolist())
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    return tuple(((k + offset) / n_steps).tolist()), (1.0 / n_steps,) * n_steps


def _check_baseline(baseline: Tensor | None) -> None:
    if baseline is None:
        return
    if not isinstance(baseline, Tensor):
        raise InputTypeError(f"baseline must be a Tensor or None, got {type(baseline).__name__}; "
                             "wrap a number as torch.tensor(value).")
    if not baseline.is_floating_point():
        raise InputError(f"baseline is {baseline.dtype}; give a floating tensor like the attributed one.")
    if not bool(torch.isfinite(baseline).all()):
        raise InputError(f"baseline contains NaN/inf (shape {tuple(baseline.shape)}); give finite values.")


def _broadcast_baseline(baseline: Tensor | None, like: Tensor, where: str) -> Tensor:
    """The baseline expanded to ``like``'s shape (zeros by default), checked against its dtype."""
    if baseline is None:
        return torch.zeros_like(like)
    if baseline.dtype != like.dtype:
        raise InputError(f"baseline is {baseline.dtype} but {where} is {like.dtype}; convert with .to({like.dtype}).")
    try:
        return baseline.to(like.device).broadcast_to(like.shape)
    except RuntimeError:
        raise InputError(f"baseline of shape {tuple(baseline.shape)} does not broadcast to {where}'s shape "
                         f"{tuple(like.shape)}; give one baseline per example or one for all.") from None


def _check_target(target: Tensor | int | None, n: int) -> tuple[Tensor | None, int]:
    """``target`` as an int64 ``(n,)`` tensor (and its largest value), checked without a forward pass."""
    if target is None:
        return None, -1
    if isinstance(target, bool) or not isinstance(target, (int, Tensor)):
        raise InputTypeError(f"target must be an int64 tensor of shape (batch,), an int or None; "
                             f"got {type(target).__name__}.")
    if isinstance(target, int):
        target = torch.tensor(target)
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise InputTypeError(f"target must hold class indices (int64), got {target.dtype}; use .long().")
    if target.ndim == 0:
        target = target.expand(n)
    if target.shape != (n,):
        raise InputError(f"target has shape {tuple(target.shape)} but the batch has {n} examples; "
                         f"give one class per example, shape ({n},), or one int for all.")
    target = target.long()
    lo, hi = (int(v) for v in torch.aminmax(target))
    if lo < 0:
        raise InputError(f"target holds negative class index {lo}; class indices start at 0.")
    return target, hi


def _prepare(model: nn.Module, inputs: Inputs, target: Tensor | int | None, site: Site | str | None,
             metric: Callable[[Any], Tensor] | None) -> _Problem:
    """Check every argument before any forward pass."""
    resolved = None if site is None else resolve_site(model, site)[0]
    if resolved is None:
        if not isinstance(inputs, Tensor):
            kind = "a dict of keyword arguments" if isinstance(inputs, Mapping) else \
                "a tuple of positional arguments" if isinstance(inputs, tuple) else type(inputs).__name__
            raise InputTypeError(f"inputs are {kind}; without a site, attribution needs one input tensor. "
                                 "Pass the tensor itself, or name a site whose value to attribute to "
                                 "(e.g. site='embed' for token models).")
        if not inputs.is_floating_point():
            raise InputError(f"inputs are {inputs.dtype}, which has no gradient; attribute at a site with "
                             "floating values instead (e.g. the embedding's output).")
    if metric is not None:
        if target is not None:
            raise InputError("give either target (a class per example) or metric (a score per row), not both.")
        if not callable(metric):
            raise InputTypeError(f"metric must be callable (output -> (rows,) scores), got {type(metric).__name__}.")
    n = validate_inputs(model, inputs)
    checked, max_target = _check_target(target, n)
    if any(t.is_inference() for t in _tensors(inputs)):  # made under torch.inference_mode: no autograd
        inputs = _map_tensors(inputs, lambda t: t.clone() if t.is_inference() else t)
    if isinstance(inputs, Tensor):
        inputs = inputs.detach()
    return _Problem(model, inputs, resolved, checked, max_target, metric, n)


def _tensors(inputs: Inputs) -> list[Tensor]:
    values = [inputs] if isinstance(inputs, Tensor) else inputs.values() if isinstance(inputs, Mapping) else inputs
    return [v for v in values if isinstance(v, Tensor)]


def _map_tensors(inputs: Inputs, fn: Callable[[Tensor], Tensor]) -> Inputs:
    if isinstance(inputs, Tensor):
        return fn(inputs)
    if isinstance(inputs, Mapping):
        return {k: fn(v) if isinstance(v, Tensor) else v for k, v in inputs.items()}
    return tuple(fn(v) if isinstance(v, Tensor) else v for v in inputs)


# -- the engine --------------------------------------------------------------------------------


@contextlib.contextmanager
def _gradients_enabled() -> Iterator[None]:
    """Autograd on, whatever the caller's mode (``no_grad`` or ``inference_mode``)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _scores(problem: _Problem, output: Any, copies: int) -> Tensor:
    """One score per row of the ``copies × batch`` rows: ``output[i, target[i]]``, ``output[i]`` or the metric."""
    rows = problem.n * copies
    if problem.metric is not None:
        scores = problem.metric(output)
        if not isinstance(scores, Tensor) or scores.shape != (rows,):
            got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise InputError(f"metric must return one score per row, shape ({rows},); got {got}.")
        return scores
    if not isinstance(output, Tensor):
        raise InputError(f"the model returned {type(output).__name__}; pass metric= to map it to one score per "
                         "row (e.g. metric=lambda out: out.logits[:, 0]).")
    if output.ndim == 1 and output.shape[0] == rows:
        if problem.target is not None:
            raise InputError(f"the model returns one score per example, shape {tuple(output.shape)}; "
                             "pass target=None.")
        return output
    if output.ndim == 2 and output.shape[0] == rows:
        if problem.target is None:
            raise InputError(f"the model returns {tuple(output.shape)} scores; pass target (a class index per "
                             "example, or one int) to say which is attributed.")
        if problem.max_target >= output.shape[1]:
            raise InputError(f"target holds class {problem.max_target} but the model has {output.shape[1]} "
                             f"outputs; give indices in [0, {output.shape[1] - 1}].")
        target = problem.target.to(output.device)
        return output.gather(1, (target.repeat(copies) if copies > 1 else target)[:, None]).squeeze(1)
    raise InputError(f"the model's output has shape {tuple(output.shape)}; attribution needs (batch, n_classes) "
                     "with a target or (batch,), or a metric mapping the output to one score per row.")


def _call(problem: _Problem, x: Tensor) -> Any:
    """The model on a tensor input, its own failures wrapped in `ForwardError`."""
    try:
        return call_model(problem.model, x)
    except SeethroughError:
        raise
    except Exception as err:
        raise wrap_forward_error(err, problem.model, x) from err


def _endpoints(problem: _Problem, baseline: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The attributed value x, the baseline broadcast to it, F(x) and F(baseline): one no-grad forward."""
    n = problem.n
    with torch.no_grad():
        if problem.site is None:
            x = cast(Tensor, problem.inputs)  # a tensor: checked by _prepare
            base = _broadcast_baseline(baseline, x, "the inputs")
            scores = _scores(problem, _call(problem, torch.cat([x, base])), 2)
        else:
            found: list[Tensor] = []

            def start_and_end(value: Tensor, site: Site) -> Tensor:
                if not value.is_floating_point():
                    raise InputError(f"{site!r} holds {value.dtype} values, which have no gradient; "
                                     "pick a site with floating values.")
                x = value[:n].clone()
                found[:] = [x, _broadcast_baseline(baseline, x, f"the value at {site!r}")]
                return torch.cat(found)

            output = patch(problem.model, repeat_inputs(problem.inputs, 2), {problem.site: start_and_end})
            scores = _scores(problem, output, 2)
            x, base = found
    return x, base, scores[:n], scores[n:]


def _target_gradients(problem: _Problem, points: Tensor | None, copies: int = 1) -> tuple[Tensor, Tensor]:
    """The attributed tensor of every row, and the gradient of the summed scores with respect to it.

    ``points`` holds ``copies`` stacked versions of the attributed tensor (copy ``j`` is rows
    ``j*batch:(j+1)*batch``); at a site, the model runs on ``copies`` copies of the inputs and the
    site's value is replaced by ``points``. ``None`` means the actual value (one copy). Only this
    tensor is differentiated, so parameters get no ``.grad`` and the backward pass stops at the site.
    """
    leaves: list[Tensor] = []
    if problem.site is None:
        leaves.append((cast(Tensor, problem.inputs) if points is None else points).detach().requires_grad_())
        output = _call(problem, leaves[0])
    else:

        def replace(value: Tensor, site: Site) -> Tensor:
            if not value.is_floating_point():
                raise InputError(f"{site!r} holds {value.dtype} values, which have no gradient; "
                                 "pick a site with floating values.")
            leaves.append((value.clone() if points is None else points).detach().requires_grad_())
            # A copy, so that an in-place op after the site (nn.ReLU(inplace=True)) leaves the leaf alone.
            return leaves[0].clone()

        inputs = problem.inputs if copies == 1 else repeat_inputs(problem.inputs, copies)
        output = patch(problem.model, inputs, {problem.site: replace})
    scores = _scores(problem, output, copies)
    if not scores.requires_grad:
        raise InputError("the score does not depend on the attributed tensor through autograd (does the model "
                         "detach it, or run under torch.no_grad?); gradients cannot be read.")
    (grads,) = torch.autograd.grad(scores.sum(), leaves[0], allow_unused=True)
    value = leaves[0].detach()
    return value, torch.zeros_like(value) if grads is None else grads
