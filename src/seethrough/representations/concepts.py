"""Concept activation vectors and TCAV with a calibrated null.

Representations / concept vectors (survey §5.5). A CAV is the normal of a linear classifier that
separates a site's values on concept examples from those on random examples; the TCAV score is the
fraction of ``inputs`` whose ``target`` output rises along it (the directional derivative's sign).
`tcav` tests the score against a calibrated null: each run redraws its examples (a bootstrap
resample of the concept set against a fresh random set), and each null statistic is the same
average computed after re-partitioning the concept and random examples at random (a permutation
test), so a concept that is just random examples is called significant at most ``alpha`` of the
time (the rank p-value is exact up to its +1 correction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError
from ..core.hooks import capture, patch
from ..core.inputs import batch_size_of, validate_inputs
from ..core.results import Result, new_figure
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from ..evidence.finding import Finding
from ..evidence.fingerprint import Fingerprint
from ._examples import _capture_site

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["tcav", "TCAVResult", "fit_cavs", "directional_derivatives"]


def fit_cavs(positives: Tensor, negatives: Tensor, *, C: float = 1.0, max_iter: int = 100) -> Tensor:
    """Unit-norm CAVs of many concept-vs-random problems at once: ``(n_problems, d)``.

    Problem ``p`` separates ``positives[p]`` ``(m, d)`` from ``negatives[p]`` ``(m', d)`` with an
    L2-regularised logistic regression (``sum of log-losses + ||w||² / (2 C)``, intercept free) in
    the site's raw activation space. The problems are independent; they are solved as one
    separable objective by L-BFGS, so one call costs about as much as one problem.

    Example:
        >>> pos = torch.tensor([[[2.0, 0.0], [3.0, 1.0]]]); neg = torch.tensor([[[-2.0, 0.0], [-3.0, -1.0]]])
        >>> fit_cavs(pos, neg)[0, 0].item() > 0.9
        True
    """
    c = check_float("C", C, at_least=1e-12)
    if positives.ndim != 3 or negatives.ndim != 3 or positives.shape[::2] != negatives.shape[::2]:
        raise InputError(f"positives and negatives must be (n_problems, m, d) with the same n_problems and d, got "
                         f"{tuple(positives.shape)} and {tuple(negatives.shape)}.")
    x = torch.cat([positives, negatives], 1).double()
    y = torch.cat([torch.ones(positives.shape[:2]), torch.zeros(negatives.shape[:2])], 1).double()
    centre = x.mean(1, keepdim=True)
    scale = x.std(1, keepdim=True).mean(-1, keepdim=True).clamp_min(1e-12)  # one scale per problem: keeps directions
    z = (x - centre) / scale
    w = torch.zeros(x.shape[0], x.shape[2], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(x.shape[0], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-14,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimiser.zero_grad()
        logits = torch.einsum("pmd,pd->pm", z, w) + b[:, None]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum")
        loss = loss + (w * w).sum() / (2 * c)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    cavs = w.detach()
    return cavs / cavs.norm(dim=1, keepdim=True).clamp_min(1e-300)


def _target_score(output: Any, target: int, metric: Callable[[Any], Tensor] | None) -> Tensor:
    if metric is not None:
        scores = metric(output)
        if not isinstance(scores, Tensor) or scores.ndim != 1:
            raise InputError("metric must return one score per row, a 1-D tensor.")
        return scores
    if not isinstance(output, Tensor) or output.ndim != 2:
        got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise InputError(f"the model's output is {got}; the target column needs a (batch, n_classes) output. "
                         "Give metric= (output -> one score per row) for other outputs.")
    if not 0 <= target < output.shape[1]:
        raise InputError(f"target {target} is out of range for {output.shape[1]} output columns.")
    return output[:, target]


def directional_derivatives(model: nn.Module, inputs: Inputs, site: Site | str, target: int,
                            directions: Tensor, *, metric: Callable[[Any], Tensor] | None = None) -> Tensor:
    """``(n_directions, batch)``: the derivative of each input's ``target`` output along each direction.

    The site's value is flattened per example; ``directions`` is ``(n_directions, d)`` in that
    flattened space. The gradient is read through a leaf tensor patched in at the site, so no
    parameter gets a ``.grad``.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.Identity(), nn.Linear(2, 1))
        >>> dd = directional_derivatives(model, torch.ones(3, 2), "1", 0, torch.eye(2))
        >>> torch.allclose(dd, model[2].weight.T.double().expand(2, 3))
        True
    """
    flat = _site_gradients(model, inputs, site, target, metric)
    if directions.ndim != 2 or directions.shape[1] != flat.shape[1]:
        raise InputError(f"directions must be (n_directions, {flat.shape[1]}) (the site's value flattened), got "
                         f"{tuple(directions.shape)}.")
    return directions.double() @ flat.T


def _site_gradients(model: nn.Module, inputs: Inputs, site: Site | str, target: int,
                    metric: Callable[[Any], Tensor] | None) -> Tensor:
    """``(batch, d)``: each input's gradient of its target score at the site (flattened), in float64."""
    target = check_int("target", target, at_least=0)
    resolved = resolve_site(model, site)[0]
    validate_inputs(model, inputs)
    with torch.no_grad():
        value = capture(model, inputs, [resolved])[resolved]
    leaf = value.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        scores = _target_score(patch(model, inputs, {resolved: lambda v, s: leaf}), target, metric)
        if scores.shape[0] != value.shape[0]:
            raise InputError(f"the score has {scores.shape[0]} rows for {value.shape[0]} inputs.")
        (grad,) = torch.autograd.grad(scores.sum(), [leaf])
    return grad.reshape(grad.shape[0], -1).double()


@dataclass(frozen=True)
class TCAVResult(Result):
    """A TCAV score with its calibrated null.

    Attributes:
        site: where the CAVs live.
        target: the output column whose sensitivity is scored.
        score: mean TCAV score over the concept's runs (fraction of inputs whose target rises along the CAV).
        concept_scores: ``(n_runs,)`` the score of each concept run (bootstrap concept vs fresh random).
        random_scores: ``(n_random,)`` the null statistics: the test statistic averaged the same way
            after a random re-partition (TCAV scores for ``statistic="sign"``, mean cosines for ``"cosine"``).
        p_value: two-sided rank p-value ``(1 + #{|null - c| ≥ |observed - c|}) / (1 + n_random)``, with
            ``c = ½`` for the sign statistic (``observed = score``) and ``c = 0`` for the cosine.
        significant: ``p_value ≤ alpha``.
        alpha: the test's level.
        n_random: null statistics (random sets in the concept's place).
        cav: ``(d,)`` the unit-norm mean CAV of the concept runs.
        concept_cavs: ``(n_runs, d)`` the unit-norm CAV of each concept run.
        statistic: the test statistic, ``"sign"`` or ``"cosine"``.
        observed: the concept's value of the test statistic (``score`` for ``"sign"``).
    """

    site: Site
    target: int
    score: float
    concept_scores: Tensor
    random_scores: Tensor
    p_value: float
    significant: bool
    alpha: float
    n_random: int
    cav: Tensor
    concept_cavs: Tensor
    statistic: str = "sign"
    observed: float = float("nan")

    def to_findings(self, *, data_fingerprint: Fingerprint | None = None) -> list[Finding]:
        """The mean CAV as a ``"direction"`` finding for ``target`` (none unless significant).

        The claim "the target uses this concept direction" is tested by
        `seethrough.evidence.validate`: project the CAV out of the site (every example's value,
        where the site's value is ``(batch, d)``) against random directions. ``data_fingerprint``:
        the concept examples' `Fingerprint`, if the validation data might share them.
        """
        if not self.significant:
            return []
        return [Finding("direction", f"the concept direction at {self.site.path} raises target {self.target} "
                        f"(TCAV score {self.score:.3f}, p = {self.p_value:.3f} against {self.n_random} random runs)",
                        site=self.site, direction=self.cav, target=self.target, score=self.score,
                        evidence={"p_value": self.p_value, "n_random": self.n_random, "statistic": self.statistic,
                                  "observed": self.observed, "alpha": self.alpha},
                        data_fingerprint=data_fingerprint)]

    def to_frame(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame({"site": [self.site.path], "target": [self.target], "score": [self.score],
                             "statistic": [self.statistic], "observed": [self.observed],
                             "p_value": [self.p_value], "significant": [self.significant],
                             "n_random": [self.n_random], "alpha": [self.alpha]})

    def plot(self) -> Figure:
        fig = new_figure(4, 2.5)
        ax = fig.add_subplot()
        low = 0.0 if self.statistic == "sign" else -1.0
        ax.hist(self.random_scores.tolist(), bins=10, range=(low, 1), color="C7", label="null (random sets)")
        ax.axvline(self.observed, color="C3", label="concept")
        ax.set_xlabel(f"{'TCAV score' if self.statistic == 'sign' else 'mean cosine'} of target {self.target}")
        ax.set_title(f"TCAV at {self.site.path}: p = {self.p_value:.3f}", fontsize=9)
        ax.legend(fontsize=7)
        return fig


#: The test statistics `tcav` offers.
STATISTICS = ("sign", "cosine")

#: Float64 elements of the stacked CAV problems solved in one L-BFGS call (about 160 MB).
_MAX_ELEMENTS = 20_000_000


def _draw(gen: torch.Generator, n: int, k: int) -> Tensor:
    return torch.randperm(n, generator=gen)[:k]


def tcav(model: nn.Module, concept: Inputs, random: Inputs, site: Site | str, inputs: Inputs, target: int, *,
         n_random: int = 20, alpha: float = 0.05, seed: int = 0, metric: Callable[[Any], Tensor] | None = None,
         C: float = 1.0, n_runs: int | None = None, batch_size: int = 256, statistic: str = "sign") -> TCAVResult:
    """TCAV score of ``concept`` for ``target`` at ``site``, tested against a calibrated random null.

    Sets of ``m = min(len(concept), len(random))`` examples are compared. Each concept run fits a
    CAV on a bootstrap resample (``m`` draws with replacement) of the concept set against ``m``
    random examples drawn afresh, and scores it on ``inputs``. The null is a permutation test: each
    null statistic re-partitions the concept and random examples together into a stand-in concept
    set of ``len(concept)`` examples and a pool of ``len(random)``, and averages ``n_runs`` runs
    built the same way. If the concept's examples are no different from the random ones, the
    observed split is one of these random partitions, so the two-sided rank test holds its level
    exactly (up to its +1), whatever the pool's size. (Drawing stand-ins from the random pool alone
    was measured at 22/200 false positives: overlapping stand-ins from one fixed pool make the null
    too narrow.) TCAV scores of a direction and
    its opposite sum to one, so the null is centred on ½.

    Args:
        model: any ``nn.Module`` (left as found, ``.grad`` included).
        concept: inputs showing the concept.
        random: a pool of random inputs (at least two).
        site: where the CAVs live (the value flattened per example).
        inputs: the inputs whose sensitivity is scored.
        target: the output column (``metric`` overrides it).
        n_random: null statistics (and, by default, runs per statistic); the smallest p-value is ``1 / (n_random + 1)``.
        alpha: level of the test.
        seed: every draw's seed.
        metric: output → one score per row, instead of the target column.
        C: the CAV classifier's inverse regularisation.
        n_runs: runs averaged per statistic (the concept's and each null's); default ``n_random``.
            Fewer runs cost less (``(n_random + 1) × n_runs`` CAVs) and keep the test exact.
        batch_size: rows per capture pass.
        statistic: what the test compares: ``"sign"``, the TCAV score itself (the fraction of
            inputs whose target rises along the CAV), or ``"cosine"``, the mean over inputs of the
            cosine between the CAV and the target's gradient at the site. Both are exact under the
            same permutation null; the cosine does not saturate where the inputs' gradients are
            nearly aligned (many random CAVs then score exactly 0 or 1 and a concept scoring 1.0
            cannot reach a small p-value), so it has more power there. ``score`` is the TCAV score
            either way.

    Returns:
        A `TCAVResult` with ``score``, ``random_scores``, ``p_value`` and ``significant``.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> g = torch.Generator().manual_seed(0)
        >>> r = tcav(model, torch.randn(20, 2, generator=g) + 2, torch.randn(40, 2, generator=g), "1",
        ...          torch.randn(10, 2, generator=g), 0, n_random=5)
        >>> 0 <= r.score <= 1 and len(r.random_scores) == 5
        True

    References:
        Kim et al., "Interpretability Beyond Feature Attribution: Quantitative Testing with Concept
        Activation Vectors (TCAV)", ICML 2018.
    """
    n_random = check_int("n_random", n_random, at_least=1)
    runs = n_random if n_runs is None else check_int("n_runs", n_runs, at_least=1)
    level = check_float("alpha", alpha, at_least=0.0, at_most=1.0)
    check_int("seed", seed)
    target = check_int("target", target, at_least=0)
    check_int("batch_size", batch_size, at_least=1)
    if statistic not in STATISTICS:
        raise InputError(f"statistic must be one of {STATISTICS}, got {statistic!r}.")
    if metric is not None and not callable(metric):
        raise InputTypeError(f"metric must be callable (output -> one score per row), got {type(metric).__name__}.")
    resolved = resolve_site(model, site)[0]
    for given in (concept, random, inputs):
        validate_inputs(model, given)
    n_c, n_r = batch_size_of(concept), batch_size_of(random)
    if n_r < 2:
        raise InputError(f"random holds {n_r} example(s); the null needs a pool of at least two random inputs.")
    m = min(n_c, n_r)
    acts_c = _capture_site(model, concept, resolved, batch_size).reshape(n_c, -1).double()
    acts_r = _capture_site(model, random, resolved, batch_size).reshape(n_r, -1).double()
    acts_all = torch.cat([acts_c, acts_r])
    gen = torch.Generator().manual_seed(int(seed))
    pos, neg = [], []
    for _ in range(runs):  # concept runs
        pos.append(acts_c[torch.randint(0, n_c, (m,), generator=gen)])
        neg.append(acts_r[_draw(gen, n_r, m)])
    for _ in range(n_random):  # null statistics: a random set in the concept's place
        order = torch.randperm(n_c + n_r, generator=gen)
        stand_in, rest = acts_all[order[:n_c]], acts_all[order[n_c:]]
        for _ in range(runs):
            pos.append(stand_in[torch.randint(0, n_c, (m,), generator=gen)])
            neg.append(rest[_draw(gen, len(rest), m)])
    # All problems in one L-BFGS call where memory allows (its cost is mostly per-iteration overhead).
    chunk = max(1, _MAX_ELEMENTS // (2 * m * acts_c.shape[1]))
    cavs = torch.cat([fit_cavs(torch.stack(pos[i:i + chunk]), torch.stack(neg[i:i + chunk]), C=C)
                      for i in range(0, len(pos), chunk)])
    grads = _site_gradients(model, inputs, resolved, target, metric)
    if cavs.shape[1] != grads.shape[1]:
        raise InputError(f"the site's value has {grads.shape[1]} features on inputs but {cavs.shape[1]} on the concept "
                         "examples; give inputs of the same shape.")
    derivatives = cavs @ grads.T
    run_scores = (derivatives > 0).double().mean(1)
    concept_scores = run_scores[:runs]
    score = float(concept_scores.mean())
    if statistic == "sign":
        per_run, centre = run_scores, 0.5
    else:  # the CAVs are unit-norm: the derivative over the gradient's norm is the cosine
        per_run, centre = (derivatives / grads.norm(dim=1).clamp_min(1e-300)).mean(1), 0.0
    null = per_run[runs:].view(n_random, runs).mean(1)
    observed = float(per_run[:runs].mean())
    p_value = (1 + int(((null - centre).abs() >= abs(observed - centre) - 1e-12).sum())) / (1 + n_random)
    mean_cav = cavs[:runs].mean(0)
    return TCAVResult(resolved, target, score, concept_scores, null, p_value, bool(p_value <= level), level, n_random,
                      mean_cav / mean_cav.norm().clamp_min(1e-300), cavs[:runs], statistic, observed)
