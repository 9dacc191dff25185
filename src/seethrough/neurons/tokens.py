"""Token-level attribution: per-token scores with the token strings, for text and transformer models.

Neurons / gradient attribution in the survey's taxonomy. Attribution to token embeddings gives a
``(batch, seq, d_model)`` tensor; `AttributionResult.token_scores` sums it over the embedding axis
into one score per token and returns a `TokenAttribution`, which carries the token strings (one
list per example, e.g. from `seethrough.hf.token_strings`) and the positions that count (padding
is left out of its table and figure when an attention mask is given).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..core.errors import InputError, InputTypeError
from ..core.results import Result, new_figure
from ..core.sites import Site

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["TokenAttribution"]

_FIX = ("give one list of token strings per example, e.g. seethrough.hf.token_strings(tokenizer, inputs) "
        "or [tokenizer.convert_ids_to_tokens(ids) for ids in inputs['input_ids']]")


def check_tokens(tokens: Any, shape: tuple[int, int]) -> tuple[tuple[str, ...], ...]:
    """``tokens`` as a tuple of per-example tuples of strings, checked against ``(batch, seq)``.

    Raises:
        InputTypeError: a raw string, a flat list of strings or anything but lists of strings.
        InputError: a number of examples or of tokens that does not match ``shape``.

    Example:
        >>> check_tokens([["[CLS]", "hi"]], (1, 2))
        (('[CLS]', 'hi'),)
        >>> check_tokens("[CLS] hi", (1, 2))
        Traceback (most recent call last):
        ...
        seethrough.core.errors.InputTypeError: tokens is a str ('[CLS] hi'), not one list of token strings per example; give one list of token strings per example, e.g. seethrough.hf.token_strings(tokenizer, inputs) or [tokenizer.convert_ids_to_tokens(ids) for ids in inputs['input_ids']].
    """
    if isinstance(tokens, str):
        shown = tokens if len(tokens) <= 40 else tokens[:37] + "..."
        raise InputTypeError(f"tokens is a str ({shown!r}), not one list of token strings per example; {_FIX}.")
    if not isinstance(tokens, Sequence) or isinstance(tokens, bytes):
        raise InputTypeError(f"tokens is a {type(tokens).__name__}, not one list of token strings per example; {_FIX}.")
    rows = list(tokens)
    if rows and all(isinstance(row, str) for row in rows):
        raise InputTypeError(f"tokens is a flat list of {len(rows)} strings; {_FIX} (for one example: [tokens]).")
    for i, row in enumerate(rows):
        if isinstance(row, str) or not isinstance(row, Sequence) or not all(isinstance(t, str) for t in row):
            raise InputTypeError(f"tokens[{i}] is a {type(row).__name__}, not a list of token strings; {_FIX}.")
    batch, seq = shape
    if len(rows) != batch:
        raise InputError(f"tokens holds {len(rows)} examples but the scores have {batch}; {_FIX}.")
    for i, row in enumerate(rows):
        if len(row) != seq:
            raise InputError(f"tokens[{i}] has {len(row)} tokens but the scores have {seq} positions; give every "
                             "position's token, padding included (the attention mask leaves padding out).")
    return tuple(tuple(row) for row in rows)


def check_mask(attention_mask: Any, shape: tuple[int, int]) -> Tensor:
    """The positions that count, as a bool ``(batch, seq)`` tensor (all of them when ``None``)."""
    if attention_mask is None:
        return torch.ones(shape, dtype=torch.bool)
    if not isinstance(attention_mask, Tensor):
        raise InputTypeError(f"attention_mask must be a (batch, seq) tensor of 0/1, got "
                             f"{type(attention_mask).__name__}; pass inputs['attention_mask'].")
    if tuple(attention_mask.shape) != shape:
        raise InputError(f"attention_mask has shape {tuple(attention_mask.shape)} but the scores have {shape}; "
                         "pass the mask of the inputs that were attributed.")
    return attention_mask.detach().cpu() != 0


@dataclass(frozen=True)
class TokenAttribution(Result):
    """One attribution score per token, with the token strings and the positions that count.

    Made by `AttributionResult.token_scores`. ``scores[i].sum()`` equals the attributed values of
    example i summed over everything, so integrated gradients' completeness error ``delta`` carries
    over unchanged (padding included, where it is usually zero: masked positions do not reach the
    score).

    Attributes:
        scores: ``(batch, seq)``, the attribution summed over every axis after the position axis
            (the embedding axis).
        tokens: one tuple of token strings per example, ``seq`` each (padding included).
        mask: ``(batch, seq)`` bool, the positions shown in `to_frame` and `plot` (not padding).
        delta: per-example completeness error, as in `AttributionResult`, or ``None``.
        method: how the values were computed.
        site: the attributed site (the token embeddings), or ``None`` for the model's input.
    """

    scores: Float[Tensor, "batch seq"]
    tokens: Sequence[Sequence[str]]  # stored as a tuple of tuples (checked in __post_init__)
    mask: Tensor
    delta: Float[Tensor, " batch"] | None
    method: str
    site: Site | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.scores, Tensor) or self.scores.ndim != 2:
            got = tuple(self.scores.shape) if isinstance(self.scores, Tensor) else type(self.scores).__name__
            raise InputError(f"scores must be a (batch, seq) tensor, got {got}.")
        shape = (int(self.scores.shape[0]), int(self.scores.shape[1]))
        object.__setattr__(self, "tokens", check_tokens(self.tokens, shape))
        object.__setattr__(self, "mask", check_mask(self.mask, shape))

    def to_frame(self) -> pandas.DataFrame:
        """One row per example and real token (padding left out): example, position, token, attribution."""
        import pandas as pd

        keep = self.mask.numpy()
        examples, positions = np.nonzero(keep)
        values = self.scores.detach().double().cpu().numpy()[examples, positions]
        return pd.DataFrame({"example": examples, "position": positions,
                             "token": [self.tokens[i][p] for i, p in zip(examples, positions, strict=True)],
                             "attribution": values})

    def plot(self) -> Figure:
        """One row per example: its real tokens along the axis, coloured by score (shared symmetric scale)."""
        n = len(self.tokens)
        longest = max(1, int(self.mask.sum(1).max())) if n else 1
        fig = new_figure(min(2.0 + 0.45 * longest, 16.0), 0.9 + 0.75 * n)
        values = self.scores.detach().double().cpu()
        limit = float(values[self.mask].abs().max()) if bool(self.mask.any()) else 1.0
        limit = limit or 1.0
        image = None
        for i in range(n):
            ax = fig.add_subplot(n, 1, i + 1)
            keep = self.mask[i].nonzero().flatten().tolist()
            row = values[i, keep].numpy()[None, :] if keep else np.zeros((1, 0))
            image = ax.imshow(row, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
            ax.set_xticks(range(len(keep)), [self.tokens[i][p] for p in keep], rotation=60, ha="right", fontsize=7)
            ax.set_yticks([0], [f"example {i}"], fontsize=7)
        if image is not None:
            fig.colorbar(image, ax=fig.axes, shrink=0.8, label="attribution")
            fig.axes[0].set_title(f"{self.method}\nat {'input' if self.site is None else self.site.path}, "
                                  "summed over the embedding axis", fontsize=8)
        return fig
