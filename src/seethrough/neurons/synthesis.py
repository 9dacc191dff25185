"""Feature synthesis: inputs that maximise a unit, a channel, a direction or a class logit.

Neurons / feature synthesis in the survey's taxonomy (activation maximisation; Erhan et al.
2009, Olah et al. 2017). `synthesize` runs gradient ascent on the *inputs* only: the images are
parametrised (pixels or a 1/f-scaled Fourier spectrum), randomly transformed every step
(jitter, scale, rotation) so the result must be robust, regularised (total variation, L2,
blur) and optionally pushed apart by a diversity term. Objectives read the model through
`capture`; gradients are taken with ``torch.autograd.grad`` on the image parameters, so the
model's ``.grad`` fields, flags and modes are never touched. A synthesised image is a
hypothesis about what a unit detects; `Synthesis.to_findings` hands it to `validate`. The
objectives live in ``objectives`` and are re-exported here. Token models have no pixels to
optimise: `synthesize_prompt` (``prompts``) optimises a soft prompt at the embedding site instead.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError
from ..core.hooks import capture
from ..core.inputs import validate_inputs
from ..core.results import Result, new_figure
from ..core.sites import Site, resolve_site
from ..evidence.finding import Finding
from ..evidence.trigger import Trigger
from ._transforms import Transforms, blur3, fourier_scale, fourier_to_image, image_to_fourier, total_variation
from .objectives import (
    Objective,
    channel_objective,
    direction_objective,
    logit_objective,
    unit_objective,
)

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["Objective", "unit_objective", "channel_objective", "direction_objective", "logit_objective",
           "Transforms", "Synthesis", "synthesize"]

@dataclass(frozen=True)
class Synthesis(Result):
    """Synthesised inputs and how strongly they drive their objectives.

    Attributes:
        images: ``(len(objectives) * n, ...)``, objective-major: rows ``i*n .. (i+1)*n - 1`` belong
            to ``objectives[i]``.
        objective_values: each image's objective on the final, untransformed image.
        history: ``(steps, batch)`` objective values during the ascent (on transformed images).
        objectives: what was maximised.
        n: images per objective.
        init: the starting images, or ``None`` for random starts.
    """

    images: Float[Tensor, " batch *rest"]
    objective_values: Float[Tensor, " batch"]
    history: Tensor
    objectives: tuple[Objective, ...]
    n: int
    init: Tensor | None = None

    def group(self, i: int) -> Tensor:
        """The ``n`` images of ``objectives[i]``."""
        return self.images[i * self.n:(i + 1) * self.n]

    def to_frame(self) -> pandas.DataFrame:
        """One row per image: its objective, its index within the group and its final value."""
        import pandas as pd

        return pd.DataFrame({"image": range(len(self.images)),
                             "objective": [o.label for o in self.objectives for _ in range(self.n)],
                             "copy": [j for _ in self.objectives for j in range(self.n)],
                             "value": self.objective_values.double().tolist()})

    def plot(self) -> Figure:
        """Image grid: one row per objective, one column per copy (channels shown as RGB or grey)."""
        rows, cols = len(self.objectives), self.n
        fig = new_figure(1.4 * cols + 0.6, 1.4 * rows + 0.3)
        for i in range(rows):
            for j in range(cols):
                ax = fig.add_subplot(rows, cols, i * cols + j + 1)
                ax.set_xticks([])
                ax.set_yticks([])
                img = self.images[i * cols + j].detach().double().cpu()
                if img.ndim == 3:
                    img = img.permute(1, 2, 0) if img.shape[0] == 3 else img.mean(0)
                    ax.imshow(((img - img.min()) / (img.max() - img.min() + 1e-12)).numpy(),
                              cmap=None if img.ndim == 3 else "gray")
                else:
                    ax.bar(range(img.numel()), img.flatten().tolist())
                if j == 0:
                    ax.set_ylabel(self.objectives[i].label, fontsize=7)
        return fig

    def _repr_html_(self) -> str:
        """One row per objective: its label (escaped) and the mean final value of its images."""
        rows = "".join(f"<tr><td>{html.escape(o.label)}</td><td>{float(v):.4g}</td></tr>"
                       for o, v in zip(self.objectives, self.objective_values.view(len(self.objectives), -1)
                                       .mean(1), strict=True))
        return f"<table><tr><th>objective</th><th>mean value</th></tr>{rows}</table>"

    def to_findings(self, i: int | None = None, *, target: int | None = None) -> list[Finding]:
        """The claim that each objective (or only ``objectives[i]``) is driven by what its images show.

        One testable `Finding` per objective, in order. Unit and channel objectives give a ``"units"`` finding (``validate`` ablates the unit),
        direction objectives a ``"direction"`` finding (projected out). A logit objective
        started from given images gives a ``"trojan"`` finding: the mask is the mean absolute
        change of the images (summed over channels, scaled to [0, 1]) and the pattern the mean
        synthesised image, so `validate` stamps that change onto new inputs.

        Raises:
            InputError: a logit objective without ``init`` images or on non-image inputs, or an
                ``i`` that names no objective.
        """
        if i is None:
            return [self._finding(j, target) for j in range(len(self.objectives))]
        return [self._finding(check_int("i", i, at_least=0, at_most=len(self.objectives) - 1), target)]

    def _finding(self, i: int, target: int | None) -> Finding:
        o = self.objectives[i]
        values = self.objective_values[i * self.n:(i + 1) * self.n]
        evidence = {"method": "feature synthesis", "objective": o.label, "objective_values": values}
        if o.kind in ("unit", "channel"):
            return Finding("units", f"{o.label} detects what its synthesised images show", site=o.site,
                           units=[int(o.index or 0)], target=target, score=float(values.mean()), evidence=evidence)
        if o.kind == "direction":
            assert o.direction is not None
            return Finding("direction", f"{o.label} detects what its synthesised images show", site=o.site,
                           direction=o.direction, target=target, score=float(values.mean()), evidence=evidence)
        if self.init is None or self.images.ndim != 4:  # a logit or log_prob objective
            raise InputError("a trigger finding needs image synthesis started from init images (N, C, H, W): the "
                             "trigger is the change made to them.")
        images = self.group(i).detach()
        change = (images - self.init[: self.n].to(images)).abs().sum(1).mean(0)
        mask = change / change.max().clamp(min=1e-12)
        trigger = Trigger(mask, images.mean(0), int(o.index if target is None else target), "patch")
        return Finding("trojan", f"the change that synthesis makes towards class {o.index} is a trigger",
                       trigger=trigger, score=float(values.mean()), evidence=evidence)


def _check_options(steps: int, lr: float, param: str, bounds: tuple[float, float], weights: dict[str, float],
                   decay: float) -> None:
    check_int("steps", steps, at_least=1)
    if not check_float("lr", lr) > 0:
        raise InputError(f"lr must be a positive number, got {lr!r}; pass e.g. lr=0.05.")
    if param not in ("pixel", "fourier"):
        raise InputError(f"param must be 'pixel' or 'fourier', got {param!r}.")
    if (not isinstance(bounds, tuple) or len(bounds) != 2 or not all(isinstance(b, (int, float)) for b in bounds)
            or not bounds[0] < bounds[1]):
        raise InputError(f"bounds must be a tuple (lo, hi) with lo < hi, got {bounds!r}.")
    for name, w in weights.items():
        check_float(name, w, at_least=0.0)
    check_float("decay", decay, at_least=0.0)


def synthesize(
    model: nn.Module,
    objective: Objective | Sequence[Objective],
    *,
    shape: Sequence[int],
    n: int | None = None,
    steps: int = 256,
    lr: float = 0.05,
    param: str = "pixel",
    transforms: Transforms = Transforms(),  # noqa: B008 - a frozen, immutable default
    tv: float = 0.0,
    l2: float = 0.0,
    blur: float = 0.0,
    diversity: float = 0.0,
    bounds: tuple[float, float] = (0.0, 1.0),
    init: Tensor | None = None,
    shared: bool = False,
    decay: float = 1.0,
    seed: int = 0,
    progress: Callable[[int, Tensor], None] | None = None,
) -> Synthesis:
    """Activation maximisation: find inputs in a box that maximise one or more objectives.

    Each step evaluates the objectives on randomly transformed images and takes an Adam step on
    the image parameters that raises ``objective - tv·TV - l2·L2 - blur·B - diversity·D`` per
    image, where TV is total variation, L2 the mean squared distance to ``init`` (or to the box's
    midpoint), B the mean squared difference to a 3×3 blur of the image, and D the mean pairwise
    cosine similarity of the site values of an objective's ``n`` images. Pixel images are kept in
    the box by projection (clamping) after each step; Fourier images by a sigmoid. Every image is
    optimised independently except through D, so without diversity or random transforms a batch
    gives the same images as one call per image.

    Args:
        model: any ``nn.Module`` taking one tensor (left as found; run it in eval mode).
        objective: an `Objective` or a list of them (one batch: ``n`` images per objective).
        shape: the shape of one input, e.g. ``(3, 16, 16)`` or ``(d,)``; transforms, TV, blur and
            the Fourier parametrisation need ``(C, H, W)``.
        n: images per objective (default 1, or ``len(init)``).
        steps: gradient steps; lr: Adam's learning rate (in box units for pixels).
        param: ``"pixel"`` or ``"fourier"`` (spectrum scaled by ``1 / f ** decay``, then a sigmoid).
        transforms: random jitter/scale/rotation per image and step (`Transforms`).
        tv, l2, blur, diversity: weights of the regularisers and of the diversity term.
        bounds: the box ``(lo, hi)`` every input value lies in.
        init: ``(n, *shape)`` starting images (the same for every objective), inside the box.
        shared: optimise one perturbation per objective, added to all ``n`` init images (a
            universal perturbation, as a trojan trigger is) instead of each image on its own;
            images are ``clamp(init + perturbation)``, the perturbation in pixels or, with
            ``param="fourier"``, a 1/f-scaled spectrum (no sigmoid). Needs ``init``.
        decay: the Fourier spectrum's 1/f exponent.
        seed: seeds the random start and the transforms (the global RNG is not used).
        progress: called as ``progress(step, objective_values)`` after every step.

    Returns:
        `Synthesis` with the images, their final objective values and the history.

    Raises:
        InputError: bad options, an init of the wrong shape or outside the box, a site or index
            that does not fit the model (after one forward pass for index checks).
        SiteNotFoundError: an objective's site names no module (before any forward pass).

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 2))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]]))
        >>> result = synthesize(model, logit_objective(0), shape=(3,), steps=100, lr=0.1)
        >>> result.images.round().tolist()  # sign(w) at the box's bounds
        [[1.0, 0.0, 1.0]]

    References:
        Erhan et al., "Visualizing Higher-Layer Features of a Deep Network", 2009; Olah,
        Mordvintsev and Schubert, "Feature Visualization", Distill 2017.
    """
    objectives = (objective,) if isinstance(objective, Objective) else tuple(objective)
    if not objectives or not all(isinstance(o, Objective) for o in objectives):
        raise InputTypeError("objective must be an Objective (from unit_objective, channel_objective, "
                             "direction_objective or logit_objective) or a non-empty list of them.")
    if not isinstance(transforms, Transforms):
        raise InputTypeError(f"transforms must be a Transforms(...), got {type(transforms).__name__}.")
    _check_options(steps, lr, param, bounds, {"tv": tv, "l2": l2, "blur": blur, "diversity": diversity}, decay)
    shape = tuple(shape)
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise InputError(f"shape must be the positive sizes of one input, e.g. (3, 16, 16); got {shape!r}.")
    is_image = len(shape) == 3
    if not is_image and (param == "fourier" or not transforms.identity or tv or blur):
        raise InputError(f"param='fourier', transforms, tv and blur need image inputs (C, H, W); shape is {shape}.")
    lo, hi = float(bounds[0]), float(bounds[1])
    if init is not None:
        if not isinstance(init, Tensor) or tuple(init.shape[1:]) != shape or init.shape[0] < 1:
            got = tuple(init.shape) if isinstance(init, Tensor) else type(init).__name__
            raise InputError(f"init must be a tensor (n, {', '.join(map(str, shape))}); got {got}.")
        if n is not None and n != init.shape[0]:
            raise InputError(f"n={n} but init holds {init.shape[0]} images; drop n or pass n images.")
        n = int(init.shape[0])
        if not bool(((init >= lo) & (init <= hi)).all()):  # also false for NaN
            raise InputError(f"init values must lie in bounds [{lo}, {hi}] (no NaN); got "
                             f"[{float(init.min())}, {float(init.max())}]. Clamp them or widen bounds.")
    n = 1 if n is None else check_int("n", n, at_least=1)
    if shared and init is None:
        raise InputError("shared=True adds one perturbation to given images; pass init=... as well.")
    if diversity and n < 2:
        raise InputError("diversity compares an objective's images with each other; it needs n ≥ 2.")
    sites = list(dict.fromkeys(o.site for o in objectives))
    for s in sites:
        resolve_site(model, s)  # unknown paths fail here, before any forward pass
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    gen = torch.Generator().manual_seed(seed)
    k = len(objectives)
    start = init.detach().to(dtype).repeat(k, *[1] * len(shape)) if init is not None else \
        (lo + (hi - lo) * (0.5 + 0.05 * torch.randn((k * n, *shape), generator=gen, dtype=torch.float64))
         ).clamp(lo, hi).to(dtype)
    start = start.to(device)
    anchor = start.clone() if init is not None else torch.full_like(start, (lo + hi) / 2)

    if shared:
        scale = fourier_scale(shape[1], shape[2], float(decay)).to(device) if param == "fourier" else None
        params = torch.zeros((k, *shape) if scale is None else (k, shape[0], shape[1], shape[2] // 2 + 1, 2),
                             dtype=dtype, device=device)

        def render(p: Tensor) -> Tensor:
            delta = p if scale is None else torch.fft.irfft2(torch.view_as_complex(p) * scale.to(p),
                                                               s=(shape[1], shape[2]), norm="ortho")
            return (start + delta.repeat_interleave(n, dim=0)).clamp(lo, hi)
    elif param == "fourier":
        scale = fourier_scale(shape[1], shape[2], float(decay)).to(device)
        if init is None:
            params = (0.01 * torch.randn((k * n, shape[0], shape[1], shape[2] // 2 + 1, 2), generator=gen,
                                         dtype=torch.float64)).to(dtype).to(device)
        else:
            params = image_to_fourier(start, scale, lo, hi)

        def render(p: Tensor) -> Tensor:
            return fourier_to_image(p, scale, (shape[1], shape[2]), lo, hi)
    else:
        params = start.clone()

        def render(p: Tensor) -> Tensor:
            return p

    params.requires_grad_(True)
    validate_inputs(model, start)
    optimiser = torch.optim.Adam([params], lr=float(lr))
    history = torch.empty(steps, k * n, dtype=dtype)

    def evaluate(x: Tensor) -> tuple[Tensor, dict[Site, Tensor]]:
        values = capture(model, x, sites)
        scores = torch.cat([o.score(values[o.site][i * n:(i + 1) * n]) for i, o in enumerate(objectives)])
        return scores, values

    with torch.enable_grad():
        for step in range(steps):
            images = render(params)
            scores, values = evaluate(transforms.apply(images, gen))
            gain = scores
            if tv:
                gain = gain - tv * total_variation(images)
            if l2:
                gain = gain - l2 * (images - anchor).pow(2).flatten(1).mean(1)
            if blur:
                gain = gain - blur * (images - blur3(images)).pow(2).flatten(1).mean(1)
            if diversity:
                gain = gain - diversity * _similarity(objectives, values, n)
            (grad,) = torch.autograd.grad(-gain.sum(), [params])
            params.grad = grad
            optimiser.step()
            params.grad = None
            if param == "pixel" and not shared:
                with torch.no_grad():
                    params.clamp_(lo, hi)
            history[step] = scores.detach()
            if progress is not None:
                progress(step, scores.detach())
    with torch.no_grad():
        final = render(params).detach()
        values_final = evaluate(final)[0].detach()
    return Synthesis(final, values_final, history, objectives, n, None if init is None else init.detach().clone())


def _similarity(objectives: tuple[Objective, ...], values: dict[Site, Tensor], n: int) -> Tensor:
    """Per image: its mean cosine similarity to the other images of its objective (site values, flattened)."""
    out = []
    for i, o in enumerate(objectives):
        a = values[o.site][i * n:(i + 1) * n].flatten(1)
        a = a / a.norm(dim=1, keepdim=True).clamp(min=1e-8)
        sim = a @ a.T
        out.append((sim.sum(1) - sim.diagonal()) / (n - 1))
    return torch.cat(out)
