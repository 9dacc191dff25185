"""Games: known route (attention rollout and flow) and basis change (logit and tuned lens).

Representations / tokens and attention. *Known route*: attention-only transformers
(`zoo.routes.trained_route_transformer`) on two tasks read at the last position: ``copy`` (copy the
token after a marker) and ``two_hop`` (the one key token of the first half; the last layer may only
attend to the second half, so raw last-layer attention points at intermediates, never at the
source). Each method gives an importance per input position at the top layer, for the read position;
scored per case by the mean Spearman correlation with blank-out importance (KL divergence of the
output at the read position when one token's embedding is zeroed; Abnar & Zuidema's test), by the
gain over raw attention's Spearman on the same case, and by top-1 hits on the source position among
the positions other than the read position. Blank-out as KL, not as the drop in the predicted
class's probability, was chosen on development seeds 0-1: the probability drop is ~0 at every
position but the source and the marker, so its ranks elsewhere are noise (rollout 0.23 on copy,
0.00 on two-hop) while KL ranks them (rollout 0.83-0.87 and 0.58-0.66). Scored on zoo seeds
1000 + seed.

*Basis change*: a residual MLP on a random teacher's labels (`zoo.routes.trained_residual_net`) and
its rotated twin (`zoo.routes.rotated_twin`: the same function, with the stream after block 0
rotated by a random orthogonal matrix and rotated back after block 2). Lenses read the embedding
and every block of the twin; translators are fitted on one set of inputs (500 in ``--quick``) and
every KL is measured on another. Scored: the fraction of non-final sites where the method's KL to
the final output is below the logit lens's (paired bootstrap 95% CI of the per-input difference
entirely below 0), and the method's KL on the rotated sites as a fraction of the uniform guess's
KL. Scored on zoo seeds 1000 + seed (seeds 0-1 were used to develop the game: a first version on
modular addition was dropped there because no lens generalises from half of a 529-pair table).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...core.hooks import patch
from ...evidence.ranks import spearman
from ...evidence.summary import bootstrap_ci
from ...representations.attention import attention_patterns, flow, rollout
from ...representations.lenses import TunedLens, logit_lens, module_readout
from ..zoo import generator
from ..zoo.routes import (
    ROUTE_TASKS,
    ResidualNet,
    rotated_twin,
    route_task,
    teacher_task,
    trained_residual_net,
    trained_route_transformer,
)
from .base import Game, Metric, register

__all__ = ["MODEL_SEED_OFFSET", "blank_out_importance", "RoutePlanted", "RouteAnswer", "BasisPlanted", "BasisAnswer"]

#: Scored on zoo seeds 1000 + seed; seeds 0 and 1 were used to develop the games.
MODEL_SEED_OFFSET = 1000


def blank_out_importance(model: nn.Module, tokens: Tensor, read: int = -1) -> Tensor:
    """``(batch, seq)``: KL(output ‖ output with position j's token embedding zeroed) at position ``read``.

    One forward pass over ``seq`` stacked copies of ``tokens`` (copy j blanks position j) through
    `patch` at the model's ``embed`` site.

    Example:
        >>> from seethrough.bench.zoo.routes import RouteTransformer
        >>> blank_out_importance(RouteTransformer(16, 10), torch.zeros(2, 10, dtype=torch.long)).shape
        torch.Size([2, 10])
    """
    n, s = tokens.shape

    def blank(value: Tensor, site: Any) -> Tensor:
        keep = torch.ones_like(value)
        for k in range(s):
            keep[k * n:(k + 1) * n, k] = 0
        return value * keep

    with torch.no_grad():
        p = model(tokens)[:, read].double().log_softmax(-1)
        q = patch(model, tokens.repeat(s, 1), {"embed": blank})[:, read].double().log_softmax(-1).view(s, n, -1)
    return (p.exp()[None] * (p[None] - q)).sum(-1).T.float()


# -- known route -----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RoutePlanted:
    """One case: the model, probe sequences, their source positions and blank-out importance."""

    model: nn.Module
    tokens: Tensor
    source: Tensor
    blank_out: Tensor  # (batch, seq)
    raw_spearman: float
    sites: tuple[str, ...]


@dataclass(frozen=True)
class RouteAnswer:
    """A method's importance of each input position for the read position at the top layer, or None (raw)."""

    importance: Tensor  # (batch, seq)
    is_raw: bool = False


def _route_cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "task": task, "n_sequences": 100 if quick else 300} for task in ROUTE_TASKS]


def _raw_importance(model: nn.Module, tokens: Tensor, sites: tuple[str, ...]) -> Tensor:
    return attention_patterns(model, tokens, list(sites)).importance(-1, layer=-1).double()


def _route_build(case: Mapping[str, Any]) -> RoutePlanted:
    seed = MODEL_SEED_OFFSET + case["seed"]
    model, meta = trained_route_transformer(case["task"], seed)
    tokens, _, source = route_task(case["task"], generator(seed, "route_eval"), case["n_sequences"])
    blank = blank_out_importance(model, tokens)
    sites = tuple(meta["attention_sites"])
    raw = float(np.mean(spearman(_raw_importance(model, tokens, sites).numpy(), blank.double().numpy())))
    return RoutePlanted(model, tokens, source, blank, raw, sites)


def _raw(planted: RoutePlanted, gen: torch.Generator) -> RouteAnswer:
    return RouteAnswer(_raw_importance(planted.model, planted.tokens, planted.sites), is_raw=True)


def _rollout(planted: RoutePlanted, gen: torch.Generator) -> RouteAnswer:
    maps = attention_patterns(planted.model, planted.tokens, list(planted.sites))
    return RouteAnswer(rollout(maps.values, maps.mask)[:, -1, 0, -1])


def _flow(planted: RoutePlanted, gen: torch.Generator) -> RouteAnswer:
    maps = attention_patterns(planted.model, planted.tokens, list(planted.sites))
    return RouteAnswer(flow(maps.values, maps.mask, positions=[-1])[:, -1, 0, -1])


def _random_route(planted: RoutePlanted, gen: torch.Generator) -> RouteAnswer:
    return RouteAnswer(torch.rand(planted.tokens.shape, generator=gen, dtype=torch.float64))


def _uniform_route(planted: RoutePlanted, gen: torch.Generator) -> RouteAnswer:
    return RouteAnswer(torch.ones(planted.tokens.shape, dtype=torch.float64))  # every position alike


def _route_score(answer: RouteAnswer, planted: RoutePlanted) -> dict[str, float]:
    importance = answer.importance.double()
    rho = float(np.mean(spearman(importance.numpy(), planted.blank_out.double().numpy())))
    others = importance.clone()
    others[:, -1] = -float("inf")  # the read position itself is not a candidate source
    ties = others == others.max(-1, keepdim=True).values  # a tie counts as a random pick among the tied
    hits = ties[torch.arange(len(ties)), planted.source].double() / ties.sum(-1)
    top1 = float(hits.mean())
    scores = {"spearman": rho, "source_top1": top1}
    if not answer.is_raw:
        scores["spearman_gain"] = rho - planted.raw_spearman
    return scores


ROUTE_GAME = register(Game(
    name="known-route",
    item="Representations / tokens and attention (rollout, flow)",
    description=("Attention-only 2-layer transformers (10 tokens) trained to copy the token after a marker, or to "
                 "return the one key token of the first half through a planted two-hop route (the last layer sees "
                 "only the second half). Methods attribute the read position's output to input positions at the "
                 "top layer; scored against blank-out importance (Spearman) and the source position (top-1)."),
    metrics=(
        Metric("spearman", chance=0.0, bar=0.6,
               description="mean Spearman correlation with blank-out importance (KL of the output when one "
                           "position's token embedding is zeroed), top layer, read position"),
        Metric("spearman_gain", chance=0.0, bar=0.3,
               description="the method's Spearman minus raw last-layer attention's on the same case"),
        Metric("source_top1", chance=1 / 9, bar=0.9,
               description="fraction of sequences whose highest-scored position (the read position excluded) is "
                           "the source; chance 1/9"),
    ),
    cases=_route_cases,
    build=_route_build,
    methods={"rollout": _rollout, "flow": _flow, "raw attention": _raw, "random": _random_route,
             "uniform": _uniform_route},
    score=_route_score,
    baselines=frozenset({"random", "uniform"}),
    order=170,
))


# -- basis change ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BasisPlanted:
    """One case: the rotated twin, its plain original, the lens split, and the logit lens's held-out KL."""

    model: nn.Module
    plain: nn.Module
    train: Tensor
    test: Tensor
    sites: tuple[str, ...]
    rotated: tuple[int, ...]  # indices into sites
    logit_kl: Tensor  # (sites, n_test) the logit lens on the rotated twin
    uniform_kl: Tensor  # (n_test,) KL(final ‖ uniform)
    n_steps: int
    seed: int


@dataclass(frozen=True)
class BasisAnswer:
    """A method's held-out KL to the final output per site and test pair, ``(sites, n_test)``."""

    kl: Tensor
    is_logit_lens: bool = False


def _basis_cases(seed: int, quick: bool) -> list[dict[str, Any]]:
    return [{"seed": seed, "n_steps": 200 if quick else 600, "n_inputs": 500 if quick else 2000}]


def _readout(model: nn.Module) -> Any:
    return module_readout(model, ["ln_final", "unembed"])


def _basis_build(case: Mapping[str, Any]) -> BasisPlanted:
    seed = MODEL_SEED_OFFSET + case["seed"]
    plain, meta = trained_residual_net(seed)
    assert isinstance(plain, ResidualNet)
    twin, rotated_sites = rotated_twin(plain, seed)
    train, _ = teacher_task(seed, generator(seed, "lens_train"), case["n_inputs"])
    test, _ = teacher_task(seed, generator(seed, "lens_test"), case["n_inputs"])
    sites = tuple(meta["sites"])
    lens = logit_lens(twin, test, list(sites), _readout(twin))
    final = lens.logits[:, -1, 0].double().log_softmax(-1)
    uniform = (final.exp() * (final + np.log(final.shape[-1]))).sum(-1)
    return BasisPlanted(twin, plain, train, test, sites, tuple(sites.index(s) for s in rotated_sites),
                        lens.kl[:, :, 0].T.double(), uniform, case["n_steps"], seed)


def _logit(planted: BasisPlanted, gen: torch.Generator) -> BasisAnswer:
    return BasisAnswer(planted.logit_kl, is_logit_lens=True)


def _tuned(planted: BasisPlanted, gen: torch.Generator) -> BasisAnswer:
    tuned = TunedLens(_readout(planted.model), n_steps=planted.n_steps, seed=planted.seed)
    tuned.fit(planted.model, planted.train, list(planted.sites))
    return BasisAnswer(tuned.lens(planted.model, planted.test).kl[:, :, 0].T.double())


def _plain_logit(planted: BasisPlanted, gen: torch.Generator) -> BasisAnswer:
    lens = logit_lens(planted.plain, planted.test, list(planted.sites), _readout(planted.plain))
    return BasisAnswer(lens.kl[:, :, 0].T.double())


def _uniform_lens(planted: BasisPlanted, gen: torch.Generator) -> BasisAnswer:
    kl = planted.uniform_kl[None].expand(len(planted.sites), -1).clone()
    kl[-1] = 0.0  # at the final site every lens reads the final output itself
    return BasisAnswer(kl)


def _basis_score(answer: BasisAnswer, planted: BasisPlanted) -> dict[str, float]:
    rotated = list(planted.rotated)
    fraction = float(answer.kl[rotated].mean() / planted.uniform_kl.mean())
    scores = {"rotated_kl_fraction": fraction}
    if not answer.is_logit_lens:
        below = 0
        n_sites = len(planted.sites) - 1  # the final site: every lens reads the final output, KL 0
        for k in range(n_sites):
            diff = (answer.kl[k] - planted.logit_kl[k]).numpy()
            below += int(bootstrap_ci(diff, seed=planted.seed + k)[1] < 0)
        scores["below_logit_lens"] = below / n_sites
    return scores


BASIS_GAME = register(Game(
    name="basis-change",
    item="Representations / tokens and attention (logit lens, tuned lens)",
    description=("A residual MLP (a random teacher's 10 classes) whose stream is rotated after block 0 and rotated "
                 "back after block 2 (the function unchanged). Lenses read the embedding and every block; "
                 "translators are fitted on some inputs, KL to the final output measured on others."),
    metrics=(
        Metric("below_logit_lens", chance=0.0, bar=1.0,
               description="fraction of non-final sites where the method's held-out KL to the final output is "
                           "below the logit lens's (paired bootstrap 95% CI below 0)"),
        Metric("rotated_kl_fraction", chance=1.0, bar=0.5, higher_is_better=False,
               description="the method's held-out KL on the rotated sites divided by the uniform guess's KL "
                           "(1 = no better than guessing uniformly)"),
    ),
    cases=_basis_cases,
    build=_basis_build,
    methods={"tuned lens": _tuned, "logit lens": _logit, "logit lens (unrotated)": _plain_logit,
             "uniform": _uniform_lens},
    score=_basis_score,
    baselines=frozenset({"logit lens (unrotated)", "uniform"}),
    order=171,
))
