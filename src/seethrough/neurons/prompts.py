"""Feature synthesis for token models: a soft prompt in embedding space, then the nearest tokens.

Neurons / feature synthesis in the survey's taxonomy. Token ids have no gradient, so
`synthesize_prompt` optimises continuous embeddings (a soft prompt) fed at the token-embedding
site through `patch`, keeping each position's norm within the embedding matrix's largest row
norm. A soft prompt can lie far from every real token, so the result reports what is lost when
each position is projected to its nearest token embedding: the distance (L2 and cosine) per
position and the gap between the objective with the soft prompt and with the projected tokens.
A prompt with a large gap is a hypothesis about the embedding space, not about any text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..core.checks import check_float, check_int
from ..core.errors import InputError, InputTypeError
from ..core.hooks import capture, patch
from ..core.inputs import validate_inputs
from ..core.results import Result, new_figure
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from .objectives import Objective

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["SoftPrompt", "synthesize_prompt"]


@dataclass(frozen=True)
class SoftPrompt(Result):
    """A synthesised soft prompt, its nearest tokens and the gap between the two.

    Attributes:
        embeddings: ``(batch, n_positions, d_model)``, the optimised soft prompt.
        token_ids: ``(batch, n_positions)``, the nearest token (L2) of each soft position.
        positions: the sequence positions that were optimised.
        objective_values: ``(batch,)``, the objective with the soft prompt.
        projected_values: ``(batch,)``, the objective with the nearest tokens' embeddings.
        gap: ``objective_values - projected_values`` (what the projection to real tokens loses).
        distance: ``(batch, n_positions)``, L2 distance from each soft position to its token.
        cosine: ``(batch, n_positions)``, cosine similarity of each soft position and its token.
        history: ``(steps, batch)`` objective values during the ascent.
        objective: what was maximised.
        tokens: the strings of ``token_ids`` (from ``vocabulary``), or ``None``.
    """

    embeddings: Float[Tensor, "batch seq d_model"]
    token_ids: Tensor
    positions: tuple[int, ...]
    objective_values: Float[Tensor, " batch"]
    projected_values: Float[Tensor, " batch"]
    gap: Float[Tensor, " batch"]
    distance: Float[Tensor, "batch seq"]
    cosine: Float[Tensor, "batch seq"]
    history: Tensor
    objective: Objective
    tokens: tuple[tuple[str, ...], ...] | None = None

    def _token(self, i: int, j: int) -> str:
        return self.tokens[i][j] if self.tokens is not None else str(int(self.token_ids[i, j]))

    def to_frame(self) -> pandas.DataFrame:
        """One row per example and optimised position: the nearest token, its distances and the example's gap."""
        import pandas as pd

        n, p = self.token_ids.shape
        rows = [(i, self.positions[j], int(self.token_ids[i, j]), self._token(i, j), float(self.distance[i, j]),
                 float(self.cosine[i, j]), float(self.objective_values[i]), float(self.projected_values[i]),
                 float(self.gap[i])) for i in range(n) for j in range(p)]
        return pd.DataFrame(rows, columns=["example", "position", "token_id", "token", "l2_distance", "cosine",
                                           "objective_value", "projected_value", "gap"])

    def plot(self) -> Figure:
        """Left: the objective during the ascent; right: each position's distance to its nearest token (example 0)."""
        fig = new_figure(9, 3)
        left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        left.plot(self.history.detach().double().cpu().numpy())
        left.set_xlabel("step")
        left.set_ylabel(self.objective.label, fontsize=7)
        p = self.token_ids.shape[1]
        right.bar(range(p), self.distance[0].detach().double().cpu().tolist())
        right.set_xticks(range(p), [self._token(0, j) for j in range(p)], rotation=60, ha="right", fontsize=7)
        right.set_ylabel("L2 distance to the nearest token")
        right.set_title(f"gap {float(self.gap[0]):.3g} (soft {float(self.objective_values[0]):.3g}, "
                        f"tokens {float(self.projected_values[0]):.3g})", fontsize=8)
        return fig


def _check_embedding(embedding: Any) -> Tensor:
    if not isinstance(embedding, Tensor) or embedding.ndim != 2 or not embedding.is_floating_point():
        got = f"{embedding.dtype} of shape {tuple(embedding.shape)}" if isinstance(embedding, Tensor) else \
            type(embedding).__name__
        raise InputError(f"embedding must be the (vocab, d_model) token-embedding matrix, got {got}; pass e.g. "
                         "model.get_input_embeddings().weight.")
    if not bool(torch.isfinite(embedding).all()):
        raise InputError("embedding holds NaN/inf; pass the model's finite token-embedding matrix.")
    return embedding.detach()


def _check_positions(positions: Sequence[int] | None, seq: int) -> tuple[int, ...]:
    if positions is None:
        return tuple(range(seq))
    if isinstance(positions, (str, Tensor)) or not isinstance(positions, Sequence) or not positions:
        raise InputTypeError(f"positions must be a non-empty list of ints (sequence positions), got "
                             f"{type(positions).__name__}.")
    checked = tuple(check_int("positions", p, at_least=-seq, at_most=seq - 1) % seq for p in positions)
    if len(set(checked)) != len(checked):
        raise InputError(f"positions repeat a position: {list(positions)}; give each position once.")
    return checked


def synthesize_prompt(
    model: nn.Module,
    objective: Objective,
    inputs: Inputs,
    *,
    site: Site | str,
    embedding: Float[Tensor, "vocab d_model"],
    positions: Sequence[int] | None = None,
    steps: int = 200,
    lr: float = 0.05,
    max_norm: float | None = None,
    vocabulary: Sequence[str] | None = None,
    seed: int = 0,
    progress: Callable[[int, Tensor], None] | None = None,
) -> SoftPrompt:
    """Optimise a soft prompt at a token-embedding site, then project it to the nearest tokens.

    The value at ``site`` (``(batch, seq, d_model)``, the token embeddings of ``inputs``) is
    replaced at ``positions`` by free vectors that start at the embeddings of random tokens
    (drawn with ``seed``) and take Adam steps raising the objective; after each step a
    position longer than ``max_norm`` is scaled back to it. Each final position is then replaced
    by its nearest row of ``embedding`` (L2), and the objective is evaluated again: the result
    holds both values, their ``gap`` and each position's L2 distance and cosine similarity to
    its token. The other positions, and ``inputs``' other arguments (e.g. the attention mask),
    stay as given. For the projected tokens to be a real input, ``site`` must be the lookup
    itself (``embed`` of a plain model, ``embeddings.word_embeddings`` of a HuggingFace BERT,
    not ``embeddings``, which adds positions and a LayerNorm).

    Args:
        model: a token model (left as found; run it in eval mode).
        objective: an `Objective` read from a site of the model (e.g.
            ``unit_objective("unembed", 3, position=(4,))`` for one logit at the last position).
        inputs: the token inputs whose embeddings are partly replaced (tensor, tuple or dict).
        site: the token-embedding site, whose value is ``(batch, seq, d_model)``.
        embedding: the ``(vocab, d_model)`` token-embedding matrix to project onto.
        positions: the sequence positions to optimise (default: all).
        steps: Adam steps; lr: Adam's learning rate.
        max_norm: the largest norm a soft position may have (default: the largest row norm of
            ``embedding``, so the prompt stays where real tokens are).
        vocabulary: the token strings by id (e.g. ``tokenizer.convert_ids_to_tokens(range(vocab))``),
            for the result's ``tokens``.
        seed: seeds the random start (the global RNG is not used).
        progress: called as ``progress(step, objective_values)`` after every step.

    Returns:
        `SoftPrompt`.

    Raises:
        InputError: bad options, an embedding matrix that does not fit the site's value, or an
            objective read at ``site`` itself.
        SiteNotFoundError: unknown site (before any forward pass).

    Example:
        >>> from seethrough.neurons import unit_objective
        >>> model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 2))
        >>> prompt = synthesize_prompt(model, unit_objective("1", 0, position=(1,)), torch.tensor([[0, 1]]),
        ...                            site="0", embedding=model[0].weight, steps=20)
        >>> prompt.token_ids.shape, bool(prompt.gap.isfinite().all())
        (torch.Size([1, 2]), True)

    References:
        Lester, Al-Rfou and Constant, "The Power of Scale for Parameter-Efficient Prompt Tuning",
        2021 (soft prompts); Wen et al., "Hard Prompts Made Easy", 2023 (nearest-token projection).
    """
    if not isinstance(objective, Objective):
        raise InputTypeError(f"objective must be an Objective (e.g. unit_objective(...)), got {type(objective).__name__}.")
    check_int("steps", steps, at_least=1)
    if not check_float("lr", lr) > 0:
        raise InputError(f"lr must be a positive number, got {lr!r}; pass e.g. lr=0.05.")
    seed = check_int("seed", seed, at_least=0, at_most=2**63 - 1)
    table = _check_embedding(embedding)
    if max_norm is not None and not check_float("max_norm", max_norm) > 0:
        raise InputError(f"max_norm must be positive, got {max_norm!r}; pass None for the embedding's largest norm.")
    limit = float(table.norm(dim=1).max()) if max_norm is None else float(max_norm)
    if vocabulary is not None and (isinstance(vocabulary, str) or len(vocabulary) != len(table)
                                   or not all(isinstance(t, str) for t in vocabulary)):
        raise InputError(f"vocabulary must be a list of {len(table)} token strings (one per embedding row), e.g. "
                         "tokenizer.convert_ids_to_tokens(list(range(vocab))).")
    where = resolve_site(model, site)[0]
    if where.selects:
        raise InputError(f"{where!r} selects units or positions; give the plain embedding site and positions=.")
    read = resolve_site(model, objective.site)[0]
    if (read.path, read.point) == (where.path, where.point):
        raise InputError(f"the objective reads {read!r}, the site the soft prompt replaces; read it at a later site.")
    validate_inputs(model, inputs)
    with torch.no_grad():
        original = capture(model, inputs, [where], clone=True)[where].detach()
    if original.ndim != 3 or original.shape[2] != table.shape[1] or not original.is_floating_point():
        raise InputError(f"{where!r} holds {original.dtype} values of shape {tuple(original.shape)}; a soft prompt "
                         f"needs (batch, seq, {table.shape[1]}) token embeddings matching the embedding matrix.")
    n, seq, _ = original.shape
    chosen = _check_positions(positions, seq)
    index = torch.tensor(chosen, device=original.device)
    table = table.to(original)
    gen = torch.Generator().manual_seed(seed)
    start = torch.randint(0, len(table), (n, len(chosen)), generator=gen).to(original.device)
    params = table[start].clone().requires_grad_(True)

    def evaluate(soft: Tensor) -> Tensor:
        seen: list[Tensor] = []
        patch(model, inputs, {where: lambda value, s: value.index_copy(1, index, soft.to(value)),
                              read: lambda value, s: seen.append(value)})
        return objective.score(seen[0])

    optimiser = torch.optim.Adam([params], lr=float(lr))
    history = torch.empty(steps, n, dtype=original.dtype)
    with torch.enable_grad():
        for step in range(steps):
            scores = evaluate(params)
            (grad,) = torch.autograd.grad(-scores.sum(), [params])
            params.grad = grad
            optimiser.step()
            params.grad = None
            with torch.no_grad():  # back inside the ball where real tokens are
                params.mul_((limit / params.norm(dim=2, keepdim=True).clamp(min=1e-12)).clamp(max=1.0))
            history[step] = scores.detach()
            if progress is not None:
                progress(step, scores.detach())
    soft = params.detach()
    with torch.no_grad():
        distances = torch.cdist(soft.reshape(1, -1, soft.shape[2]).double(), table[None].double())[0]
        nearest, ids = distances.min(1)
        projected = table[ids].reshape(soft.shape)
        soft_values, projected_values = evaluate(soft).detach(), evaluate(projected).detach()
        cosine = torch.nn.functional.cosine_similarity(soft.double(), projected.double(), dim=2)
    token_ids = ids.reshape(n, len(chosen)).cpu()
    tokens = None if vocabulary is None else tuple(tuple(vocabulary[int(t)] for t in row) for row in token_ids)
    return SoftPrompt(soft, token_ids, chosen, soft_values, projected_values, soft_values - projected_values,
                      nearest.reshape(n, len(chosen)).to(soft.dtype), cosine.to(soft.dtype), history, objective, tokens)
