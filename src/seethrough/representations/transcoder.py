"""Transcoders: a sparse dictionary that reads a module's input and predicts its output.

Representations / dictionary learning (survey §5.3). A transcoder (Dunefsky et al. 2024) is a
sparse autoencoder whose target is not its own input: it encodes what enters a module (an MLP,
a block) into sparse latents and decodes them into what the module gives out, so its latents
describe the module's computation rather than one activation. `Transcoder` shares
`SparseAutoencoder`'s training engine (sparsity kinds, decoder-norm constraint, AuxK or
resampling, streaming, the stopping rule, safetensors + JSON); `module_pairs` streams a module's
(input, output) pairs from a model, and `sae_sites.loss_recovered` splices a transcoder in place
of the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import Tensor, nn

from ..core.batching import batches, stream
from ..core.checks import check_int
from ..core.errors import InputTypeError
from ..core.sites import Site, resolve_site
from ..core.types import Inputs
from .sae import SparseAutoencoder

__all__ = ["Transcoder", "module_pairs"]


class Transcoder(SparseAutoencoder):
    """A sparse dictionary ``x → codes → codes @ decoder_ + decoder_bias_ ≈ module(x)`` (an estimator).

    ``encode(x) = σ((x − input_bias_) @ encoder_.T + encoder_bias_)`` with the sparsity ``σ`` of
    ``kind`` (as `SparseAutoencoder`), and ``decode`` predicts the module's output. The input and
    the output are each rescaled so that ``E‖· − mean‖² = width`` during training (the loss is the
    fraction of the output's variance unexplained); ``input_bias_`` is the input's mean (fixed,
    from the first batch), and the encoder rows are drawn at random (not tied to the decoder, whose
    rows live in the output space and have unit norm). Every hyper-parameter is
    `SparseAutoencoder`'s; ``fit`` takes the targets beside the activations.

    Example:
        >>> import torch
        >>> x = torch.randn(512, 6, generator=torch.Generator().manual_seed(0))
        >>> y = torch.relu(x @ torch.randn(6, 4, generator=torch.Generator().manual_seed(1)))
        >>> tc = Transcoder(32, k=4, max_epochs=5).fit(x, y)
        >>> tuple(tc.encode(x).shape), tuple(tc.decode(tc.encode(x)).shape)
        ((512, 32), (512, 4))

    References:
        Dunefsky, Chlenski & Nanda 2024, "Transcoders find interpretable LLM feature circuits".
    """

    _WEIGHTS = (*SparseAutoencoder._WEIGHTS, "input_bias_")
    _CENTRE = "input_bias_"

    def fit(self, activations: Any, targets: Any = None) -> Transcoder:  # type: ignore[override]  # targets added
        """Learn to predict ``targets`` from ``activations``; returns ``self`` (earlier fits are forgotten).

        Args:
            activations: the module's inputs, an ``(n, d_in)`` array/tensor or an iterable of batches.
            targets: its outputs, of the same form: an ``(n, d_out)`` array (rows aligned with
                ``activations``), or an iterable yielding batches aligned with those of ``activations``
                (e.g. `module_pairs`'s two iterables).

        Raises:
            InputError: targets missing or misaligned (row or batch counts differ), plus
                `SparseAutoencoder.fit`'s errors. InputTypeError: activations and targets of different forms.
        """
        if targets is None:
            raise InputTypeError("a Transcoder needs targets: fit(inputs, outputs) with the module's outputs "
                                 "(module_pairs(model, inputs, path) gives both).")
        return self._train(activations, targets)  # type: ignore[return-value]  # _train returns self


class _Point:
    """A re-iterable of one point (input or output) of a module, streamed from the model afresh each time."""

    def __init__(self, model: nn.Module, inputs: Inputs, site: Site, batch_size: int) -> None:
        self.model, self.inputs, self.site, self.batch_size = model, inputs, site, batch_size

    def __iter__(self) -> Iterator[Tensor]:
        for _, values in stream(self.model, batches(self.inputs, self.batch_size), [self.site]):
            value = values[self.site]
            axis = self.site.unit_axis(value)
            yield value.movedim(axis, -1).reshape(-1, value.shape[axis]).detach().float()


def module_pairs(model: nn.Module, inputs: Inputs, path: str, *,
                 batch_size: int = 256) -> tuple[_Point, _Point]:
    """The inputs and outputs of the module at ``path``, as two aligned re-iterables of ``(rows, d)`` batches.

    ``Transcoder(...).fit(*module_pairs(model, inputs, "mlp"))`` trains a transcoder of that module.
    Each iterable streams ``inputs`` through ``model`` chunk by chunk (memory: one chunk), with the
    unit axis last and positions flattened into rows; the two yield batches of the same rows.

    Raises:
        SiteNotFoundError: no module at ``path``. InputError: a bad ``batch_size``.

    Example:
        >>> import torch
        >>> model = nn.Sequential(nn.Linear(3, 5), nn.ReLU())
        >>> x_in, y_out = module_pairs(model, torch.ones(4, 3), "1", batch_size=2)
        >>> [tuple(b.shape) for b in x_in], [tuple(b.shape) for b in y_out]
        ([(2, 5), (2, 5)], [(2, 5), (2, 5)])
    """
    check_int("batch_size", batch_size, at_least=1)
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be an nn.Module, got {type(model).__name__}.")
    if not isinstance(path, str):
        raise InputTypeError(f"path must be a module path (str), got {type(path).__name__}.")
    source, target = Site(path, point="input"), Site(path)
    resolve_site(model, source)
    resolve_site(model, target)
    return _Point(model, inputs, source, batch_size), _Point(model, inputs, target, batch_size)
