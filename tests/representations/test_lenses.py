"""Logit lens and tuned lens (issue #13 item 4).

Oracles: the logit lens at the last layer is the model's own logits (KL 0); an untrained tuned lens
(identity translators) is the logit lens; a translator can undo a planted rotation exactly, and the
trained tuned lens finds it (its held-out KL drops far below the logit lens's); the KL against a
direct float64 computation; padding masked.
"""

from __future__ import annotations

import pytest
import torch
from models import TinyTransformer as KeywordTransformer
from models import tokens

from seethrough.bench.zoo import TinyTransformer
from seethrough.core import InputError, NotFittedError, SiteNotFoundError
from seethrough.representations import LensResult, TunedLens, logit_lens, module_readout

SITES = ["blocks.0", "blocks.1"]


def _model_and_tokens(n: int = 24) -> tuple[TinyTransformer, torch.Tensor]:
    model = TinyTransformer(10, 5, n_layers=2)
    return model, torch.randint(0, 10, (n, 5), generator=torch.Generator().manual_seed(0))


def test_the_last_layer_is_the_models_output() -> None:
    model, x = _model_and_tokens()
    lens = logit_lens(model, x, SITES, module_readout(model, ["ln_final", "unembed"]))
    with torch.no_grad():
        torch.testing.assert_close(lens.logits[:, -1], model(x))
        first = model.unembed(model.ln_final(model.blocks[0](model.embed(x) + model.pos_embed(torch.arange(5)))))
    torch.testing.assert_close(lens.logits[:, 0], first)
    assert float(lens.kl[:, -1].abs().max()) == 0.0
    p, q = model(x).double().log_softmax(-1), first.double().log_softmax(-1)
    torch.testing.assert_close(lens.kl[:, 0], (p.exp() * (p - q)).sum(-1).float(), atol=1e-5, rtol=1e-5)
    assert isinstance(lens, LensResult) and lens.mean_kl().shape == (2,)


def test_an_untrained_tuned_lens_is_the_logit_lens() -> None:
    model, x = _model_and_tokens()
    readout = module_readout(model, ["ln_final", "unembed"])
    tuned = TunedLens(readout, n_steps=0).fit(model, x, SITES)
    torch.testing.assert_close(tuned.lens(model, x).logits, logit_lens(model, x, SITES, readout).logits)


class _Rotated(torch.nn.Module):
    """x → embed → rot (the stream times an orthogonal q) → back (times qᵀ) → unembed: the same function as without q."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.embed = torch.nn.Linear(6, 8)
        self.rot = torch.nn.Linear(8, 8, bias=False)
        self.back = torch.nn.Linear(8, 8, bias=False)
        self.unembed = torch.nn.Linear(8, 5)
        with torch.no_grad():
            for p in (self.embed.weight, self.embed.bias, self.unembed.weight, self.unembed.bias):
                p.copy_(torch.randn(p.shape, generator=gen))
            q, _ = torch.linalg.qr(torch.randn(8, 8, generator=gen))
            self.rot.weight.copy_(q)
            self.back.weight.copy_(q.T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unembed(self.back(self.rot(self.embed(x))))


def test_the_tuned_lens_undoes_a_planted_rotation() -> None:
    model = _Rotated()
    x = torch.randn(400, 6, generator=torch.Generator().manual_seed(2))
    readout = module_readout(model, ["unembed"])
    sites = ["rot", "back"]
    logit = logit_lens(model, x[200:], sites, readout).mean_kl()
    with torch.no_grad():  # the exact translator is qᵀ: it gives KL 0
        exact = readout(model.rot(model.embed(x)) @ model.rot.weight)
        torch.testing.assert_close(exact, model(x), atol=1e-5, rtol=1e-5)
    tuned = TunedLens(readout, n_steps=300, lr=3e-2).fit(model, x[:200], sites)
    held_out = tuned.lens(model, x[200:]).mean_kl()
    assert float(logit[0]) > 0.3  # the logit lens reads the rotated basis: broken
    assert float(held_out[0]) < 0.02 * float(logit[0])
    assert float(held_out[-1]) == 0.0
    assert tuned.weight_.shape == (2, 8, 8) and torch.equal(tuned.weight_[-1], torch.eye(8))


def test_padding_is_masked_and_tables_and_plots_work() -> None:
    model = KeywordTransformer()
    x = tokens(3, 5)
    x["attention_mask"][2, 3:] = 0
    lens = logit_lens(model, x, ["blocks.0", "blocks.1"], module_readout(model, ["unembed"]),
                      tokens=[["a", "b", "c", "d", "e"]] * 3)
    assert float(lens.kl[2, :, 3:].abs().max()) == 0.0
    frame = lens.to_frame()
    assert len(frame) == 2 * (5 + 5 + 3) and set(frame.token) <= set("abcde")
    assert lens.plot(example=2) is not None


def test_bad_input_fails_before_work() -> None:
    model, x = _model_and_tokens(4)
    readout = module_readout(model, ["ln_final", "unembed"])
    with pytest.raises(SiteNotFoundError):
        module_readout(model, ["ln_fnal"])
    with pytest.raises(SiteNotFoundError):
        logit_lens(model, x, ["blocks.0", "blocks.7"], readout)
    with pytest.raises(InputError, match="at least two sites"):
        logit_lens(model, x, ["blocks.0"], readout)
    with pytest.raises(InputError, match="n_classes"):
        logit_lens(model, x, SITES, lambda h: h.sum(-1))
    with pytest.raises(NotFittedError):
        TunedLens(readout).lens(model, x)
    with pytest.raises(InputError, match="n_steps"):
        TunedLens(readout, n_steps=-1).fit(model, x, SITES)


# -- lens findings (issue #13 item 5) ----------------------------------------------------------------------


class _Planted(torch.nn.Module):
    """embed → unembed, where class 0 is read from one planted direction ``u`` of the stream."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(123)  # not validate's control seed: its first random direction
        self.u = torch.nn.functional.normalize(torch.randn(8, generator=gen), dim=0)
        self.embed, self.unembed = torch.nn.Linear(6, 8), torch.nn.Linear(8, 3, bias=False)
        with torch.no_grad():
            self.embed.weight.copy_(0.1 * torch.randn(8, 6, generator=gen))
            self.embed.bias.copy_(2.0 * self.u)  # every input sits 2 units along u
            self.unembed.weight.copy_(torch.stack([3 * self.u, torch.zeros(8), torch.zeros(8)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unembed(self.embed(x))


def test_lens_findings_point_along_the_planted_readout_and_validate_only_where_it_is_used() -> None:
    from seethrough import Site
    from seethrough.evidence import validate
    from seethrough.representations import lens_findings

    model = _Planted()
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(1))
    sites = ["embed", Site("unembed", point="input")]
    (finding,) = lens_findings(model, x, sites, model.unembed, 0)
    assert finding.kind == "direction" and finding.site.path == "embed" and finding.target == 0
    assert abs(float(finding.direction.float() @ model.u)) > 0.999  # the linear readout's gradient is along u
    assert finding.evidence["mean_probability"] > 0.9
    held = torch.randn(200, 6, generator=torch.Generator().manual_seed(2))
    assert validate(finding, model, held, n_controls=39).validated  # projecting u out removes class 0 (p = 1/40)
    (other,) = lens_findings(model, x, sites, model.unembed, 1)
    assert not validate(other, model, held, n_controls=39).validated  # class 1 only loses when u goes: it gains
    tuned = TunedLens(model.unembed, n_steps=0).fit(model, x, sites)
    (via_tuned,) = lens_findings(model, x, sites, model.unembed, 0, tuned=tuned)
    assert torch.allclose(via_tuned.direction, finding.direction)  # an identity translator reads as the logit lens
    with pytest.raises(InputError):
        lens_findings(model, x, sites, model.unembed, 3)
