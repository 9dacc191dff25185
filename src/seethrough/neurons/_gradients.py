"""The gradient engine shared by the attribution methods (private to `seethrough.neurons`).

Checks every argument before any forward pass, then reads the gradient of a per-example score
with respect to the attributed tensor: the model's input, the value at a `Site` (which `patch`
replaces by a leaf tensor), or the coordinate of that value along a direction. Only that leaf is
differentiated (`torch.autograd.grad` with ``inputs=`` the leaf), so parameters get no ``.grad``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from ..core.errors import InputError, InputTypeError, SeethroughError
from ..core.hooks import patch
from ..core.inputs import call_model, repeat_inputs, validate_inputs, wrap_forward_error
from ..core.interventions import along_units
from ..core.sites import Site, resolve_site
from ..core.types import Inputs

__all__: list[str] = []

#: Quadrature rules for the path integral (the names Captum uses).
METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


@dataclass(frozen=True)
class Problem:
    """Validated arguments: what is attributed, and the per-example score it is attributed to."""

    model: nn.Module
    inputs: Inputs
    site: Site | None
    target: Tensor | None
    max_target: int
    metric: Callable[[Any], Tensor] | None
    n: int
    direction: Tensor | None = None  # unit length, float64 until it meets the site's value

    def read(self, value: Tensor) -> Tensor:
        """The attributed tensor inside a site's value: the value, or its coordinate along the direction."""
        if self.direction is None:
            return value
        axis, u = self._axis_and_direction(value)
        return (value * u).sum(axis)

    def write(self, value: Tensor, attributed: Tensor) -> Tensor:
        """``value`` with its attributed part replaced by ``attributed`` (out of place)."""
        if self.direction is None:
            return attributed
        axis, u = self._axis_and_direction(value)
        return value + (attributed - (value * u).sum(axis)).unsqueeze(axis) * u

    def _axis_and_direction(self, value: Tensor) -> tuple[int, Tensor]:
        assert self.direction is not None and self.site is not None
        return self.site.unit_axis(value), along_units(self.direction, value, self.site, name="direction")


# -- validation --------------------------------------------------------------------------------


def quadrature(method: str, n_steps: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Nodes α in [0, 1] and weights for ∫₀¹ g(α) dα ≈ Σ w_k g(α_k), after checking the arguments."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int):
        raise InputTypeError(f"n_steps must be an int, got {type(n_steps).__name__}.")
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}.")
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


def check_internal_batch_size(internal_batch_size: int | None) -> None:
    if internal_batch_size is not None and (isinstance(internal_batch_size, bool)
                                            or not isinstance(internal_batch_size, int) or internal_batch_size < 1):
        raise InputError(f"internal_batch_size must be a positive int or None, got {internal_batch_size!r}.")


def steps_per_pass(internal_batch_size: int | None, n: int, total: int) -> int:
    """How many stacked copies of the batch one forward pass takes."""
    return total if internal_batch_size is None else max(1, internal_batch_size // n)


def check_baseline(baseline: Tensor | None) -> None:
    if baseline is None:
        return
    if not isinstance(baseline, Tensor):
        raise InputTypeError(f"baseline must be a Tensor or None, got {type(baseline).__name__}; "
                             "wrap a number as torch.tensor(value).")
    if not baseline.is_floating_point():
        raise InputError(f"baseline is {baseline.dtype}; give a floating tensor like the attributed one.")
    if not bool(torch.isfinite(baseline).all()):
        raise InputError(f"baseline contains NaN/inf (shape {tuple(baseline.shape)}); give finite values.")


def broadcast_baseline(baseline: Tensor | None, like: Tensor, where: str) -> Tensor:
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


def _check_direction(direction: Tensor | None, site: Site | None) -> Tensor | None:
    if direction is None:
        return None
    if site is None:
        raise InputError("a direction is a direction in a site's activation space; give site= too.")
    if not isinstance(direction, Tensor):
        raise InputTypeError(f"direction must be a 1-D floating Tensor, got {type(direction).__name__}.")
    if direction.ndim != 1 or not direction.is_floating_point() or len(direction) == 0:
        raise InputError(f"direction must be a non-empty 1-D floating tensor (one entry per unit), got "
                         f"{direction.dtype} of shape {tuple(direction.shape)}.")
    u = direction.detach().to("cpu", torch.float64)
    norm = float(u.norm())
    if not np.isfinite(norm) or norm == 0.0:
        raise InputError(f"direction must be finite and non-zero (norm {norm}); it is normalised to unit length.")
    return u / norm


def prepare(model: nn.Module, inputs: Inputs, target: Tensor | int | None, site: Site | str | None,
            metric: Callable[[Any], Tensor] | None, direction: Tensor | None = None,
            need_input_tensor: bool = False) -> Problem:
    """Check every argument before any forward pass."""
    resolved = None if site is None else resolve_site(model, site)[0]
    unit = _check_direction(direction, resolved)
    if resolved is None or need_input_tensor:
        if not isinstance(inputs, Tensor):
            kind = "a dict of keyword arguments" if isinstance(inputs, Mapping) else \
                "a tuple of positional arguments" if isinstance(inputs, tuple) else type(inputs).__name__
            hint = ("this method integrates along a path in input space, so it needs one input tensor."
                    if need_input_tensor else "without a site, attribution needs one input tensor. Pass the tensor "
                    "itself, or name a site whose value to attribute to (e.g. site='embed' for token models).")
            raise InputTypeError(f"inputs are {kind}; {hint}")
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
    return Problem(model, inputs, resolved, checked, max_target, metric, n, unit)


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
def gradients_enabled() -> Iterator[None]:
    """Autograd on, whatever the caller's mode (``no_grad`` or ``inference_mode``)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def scores(problem: Problem, output: Any, copies: int) -> Tensor:
    """One score per row of the ``copies × batch`` rows: ``output[i, target[i]]``, ``output[i]`` or the metric."""
    rows = problem.n * copies
    if problem.metric is not None:
        result = problem.metric(output)
        if not isinstance(result, Tensor) or result.shape != (rows,):
            got = tuple(result.shape) if isinstance(result, Tensor) else type(result).__name__
            raise InputError(f"metric must return one score per row, shape ({rows},); got {got}.")
        return result
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


def call(problem: Problem, inputs: Inputs) -> Any:
    """The model on ``inputs``, its own failures wrapped in `ForwardError`."""
    try:
        return call_model(problem.model, inputs)
    except SeethroughError:
        raise
    except Exception as err:
        raise wrap_forward_error(err, problem.model, inputs) from err


def _check_floating(value: Tensor, site: Site) -> None:
    if not value.is_floating_point():
        raise InputError(f"{site!r} holds {value.dtype} values, which have no gradient; "
                         "pick a site with floating values.")


def input_scores(problem: Problem, points: Tensor, copies: int) -> Tensor:
    """Scores of the model on stacked input points (no gradient)."""
    with torch.no_grad():
        return scores(problem, call(problem, points), copies)


def endpoints(problem: Problem, baseline: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The attributed value x, the baseline broadcast to it, F(x) and F(baseline): one no-grad forward."""
    n = problem.n
    with torch.no_grad():
        if problem.site is None:
            x = cast(Tensor, problem.inputs)  # a tensor: checked by prepare
            base = broadcast_baseline(baseline, x, "the inputs")
            found = scores(problem, call(problem, torch.cat([x, base])), 2)
        else:
            ends: list[Tensor] = []

            def start_and_end(value: Tensor, site: Site) -> Tensor:
                _check_floating(value, site)
                x = problem.read(value)[:n].clone()
                ends[:] = [x, broadcast_baseline(baseline, x, f"the attributed value at {site!r}")]
                return problem.write(value, torch.cat(ends))

            output = patch(problem.model, repeat_inputs(problem.inputs, 2), {problem.site: start_and_end})
            found = scores(problem, output, 2)
            x, base = ends
    return x, base, found[:n], found[n:]


def gradients(problem: Problem, inputs: Inputs | None = None, copies: int = 1,
              leaf_from: Callable[[Tensor], Tensor] | None = None,
              feed: tuple[Site, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """The attributed tensor of every row, and the gradient of the summed scores with respect to it.

    The model runs on ``inputs`` (``copies`` stacked copies of the batch; the problem's own inputs,
    repeated, when ``None``). Without a site the input tensor itself is attributed. At a site the
    attributed tensor ``a`` (the value, or its coordinate along the direction) is replaced by the
    leaf ``leaf_from(a)`` (``a`` itself when ``None``). Only the leaf is differentiated, so
    parameters get no ``.grad`` and the backward pass stops at the site. ``feed = (site, points)``
    replaces an earlier site's value by ``points`` in the same forward (conductance's path through
    token embeddings).
    """
    if inputs is None:
        inputs = problem.inputs if copies == 1 else repeat_inputs(problem.inputs, copies)
    leaves: list[Tensor] = []
    if problem.site is None:
        x = cast(Tensor, inputs)
        leaves.append((x if leaf_from is None else leaf_from(x)).detach().requires_grad_())
        output = call(problem, leaves[0])
    else:

        def replace(value: Tensor, site: Site) -> Tensor:
            _check_floating(value, site)
            attributed = problem.read(value)
            leaves.append((attributed if leaf_from is None else leaf_from(attributed)).detach().requires_grad_())
            # A copy, so that an in-place op after the site (nn.ReLU(inplace=True)) leaves the leaf alone.
            return problem.write(value, leaves[0].clone())

        edits: dict[Site, Any] = {} if feed is None else {feed[0]: feed[1]}
        edits[problem.site] = replace
        output = patch(problem.model, inputs, edits)
    found = scores(problem, output, copies)
    if not found.requires_grad:
        raise InputError("the score does not depend on the attributed tensor through autograd (does the model "
                         "detach it, or run under torch.no_grad?); gradients cannot be read.")
    (grads,) = torch.autograd.grad(found.sum(), leaves[0], allow_unused=True)
    value = leaves[0].detach()
    return value, torch.zeros_like(value) if grads is None else grads
