"""Attention patterns, rollout and flow (issue #13 item 4).

Oracles: rollout by hand on 2-layer matrices; flow against networkx on float capacities and against
a brute-force minimum cut (max-flow = min-cut) on tiny graphs; the captured patterns against a
hand-written forward of the zoo's attention; padding masked on a keyword-mask model.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from models import TinyTransformer as KeywordTransformer
from models import tokens

from seethrough.bench.zoo import TinyTransformer
from seethrough.core import InputError, SiteNotFoundError
from seethrough.representations import (
    AttentionMaps,
    attention_flow,
    attention_patterns,
    attention_rollout,
    flow,
    rollout,
)

SITES = ["blocks.0.attn.pattern", "blocks.1.attn.pattern"]


def _random_maps(batch: int, layers: int, seq: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, layers, 2, seq, seq, generator=gen).mul(3).softmax(-1)


def _min_cut(caps: list[np.ndarray], source: int, sink_layer: int, sink: int) -> float:
    """Brute-force minimum cut from node (0, source) to node (sink_layer, sink): every subset of the other nodes."""
    s = caps[0].shape[0]
    middle = [(k, i) for k in range(1, sink_layer + 1) for i in range(s) if (k, i) != (sink_layer, sink)]
    middle += [(0, j) for j in range(s) if j != source]
    best = float("inf")
    for bits in itertools.product([False, True], repeat=len(middle)):
        side = {node for node, on in zip(middle, bits, strict=True) if on} | {(0, source)}
        cut = sum(caps[k][i, j] for k in range(sink_layer) for i in range(s) for j in range(s)
                  if (k, j) in side and (k + 1, i) not in side)
        best = min(best, cut)
    return best


def test_rollout_of_two_layers_by_hand() -> None:
    a1 = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    a2 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.0, 0.4]])
    maps = torch.stack([a1, a2])[None, :, None]
    eye = torch.eye(3, dtype=torch.float64)
    r1 = 0.5 * eye + 0.5 * a1.double()
    r2 = (0.5 * eye + 0.5 * a2.double()) @ r1
    out = rollout(maps)
    torch.testing.assert_close(out[0, 0, 0], r1)
    torch.testing.assert_close(out[0, 1, 0], r2)
    torch.testing.assert_close(rollout(maps, residual=0.0)[0, 1, 0], (a2 @ a1).double())


def test_rollout_averages_heads_and_rows_sum_to_one() -> None:
    maps = _random_maps(2, 3, 5)
    out = rollout(maps)
    torch.testing.assert_close(out.sum(-1), torch.ones(2, 3, 1, 5, dtype=torch.float64))
    one_head = rollout(maps.mean(2, keepdim=True))
    torch.testing.assert_close(out, one_head)


def test_flow_matches_networkx_and_the_closed_forms() -> None:
    maps = _random_maps(2, 4, 5, seed=1)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    fast, exact = flow(maps, mask), flow(maps, mask, exact=True)
    # the fast path quantises capacities to 2**-24 beyond layer 2; the closed forms are exact
    torch.testing.assert_close(fast, exact, atol=1e-6, rtol=0)
    torch.testing.assert_close(fast.sum(-1)[0], torch.ones(4, 1, 5, dtype=torch.float64))
    assert float(fast[1, :, :, 3:].abs().max()) == 0 and float(fast[1, :, :, :, 3:].abs().max()) == 0


def test_flow_values_equal_brute_force_minimum_cuts() -> None:
    maps = _random_maps(1, 2, 3, seed=2)
    eye = torch.eye(3, dtype=torch.float64)
    caps = [(0.5 * eye + 0.5 * maps[0, k].mean(0).double()).numpy() for k in range(2)]
    raw = np.array([[_min_cut(caps, j, 2, i) for j in range(3)] for i in range(3)])
    expected = raw / raw.sum(1, keepdims=True)
    np.testing.assert_allclose(flow(maps)[0, 1, 0].numpy(), expected, atol=1e-12)
    three = _random_maps(1, 3, 3, seed=3)
    caps3 = [(0.5 * eye + 0.5 * three[0, k].mean(0).double()).numpy() for k in range(3)]
    raw3 = np.array([_min_cut(caps3, j, 3, 2) for j in range(3)])
    np.testing.assert_allclose(flow(three, positions=[2])[0, 2, 0, 2].numpy(), raw3 / raw3.sum(), atol=1e-6)


def test_flow_positions_compute_only_the_rows_asked_for() -> None:
    maps = _random_maps(1, 3, 4, seed=4)
    full, last = flow(maps), flow(maps, positions=[-1])
    torch.testing.assert_close(last[..., -1, :], full[..., -1, :])
    assert float(last[..., :-1, :].abs().max()) == 0.0


def test_attention_patterns_match_a_hand_written_forward() -> None:
    model = TinyTransformer(10, 6, n_layers=2)
    x = torch.randint(0, 10, (3, 6), generator=torch.Generator().manual_seed(0))
    maps = attention_patterns(model, x, SITES)
    block = model.blocks[0]
    h = block.ln1(model.embed(x) + model.pos_embed(torch.arange(6)))
    q = block.attn.q(h).view(3, 6, 2, 16).transpose(1, 2)
    k = block.attn.k(h).view(3, 6, 2, 16).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2) / 4.0).masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(maps.values[:, 0], scores.softmax(-1).detach())
    assert isinstance(maps, AttentionMaps) and maps.method == "attention"
    assert tuple(maps.values.shape) == (3, 2, 2, 6, 6)


def test_rollout_and_flow_on_a_model_equal_the_tensor_engines() -> None:
    model = TinyTransformer(10, 5, n_layers=2)
    x = torch.randint(0, 10, (2, 5), generator=torch.Generator().manual_seed(1))
    raw = attention_patterns(model, x, SITES)
    torch.testing.assert_close(attention_rollout(model, x, SITES).values, rollout(raw.values).float())
    torch.testing.assert_close(attention_flow(model, x, SITES).values, flow(raw.values).float())
    assert attention_rollout(model, x, SITES).importance(-1).shape == (2, 5)


def test_padding_is_masked() -> None:
    model = KeywordTransformer()
    x = tokens(3, 5)
    x["attention_mask"][1, 3:] = 0
    # the keyword-mask model returns (output, weights): element 1 of each attention is its probabilities
    from seethrough import Site

    sites = [Site("blocks.0.attn", element=1), Site("blocks.1.attn", element=1)]
    maps = attention_patterns(model, x, sites)
    assert float(maps.values[1, ..., 3:].abs().max()) == 0 and float(maps.values[1, ..., 3:, :].abs().max()) == 0
    assert maps.mask[1].tolist() == [True, True, True, False, False]
    r = attention_rollout(model, x, sites)
    torch.testing.assert_close(r.values[1, :, 0, :3].sum(-1), torch.ones(2, 3))
    frame = maps.to_frame()
    assert not ((frame.example == 1) & (frame.key >= 3)).any()


def test_bad_input_fails_before_work() -> None:
    model = TinyTransformer(10, 5, n_layers=2)
    x = torch.zeros(1, 5, dtype=torch.long)
    with pytest.raises(SiteNotFoundError):
        attention_patterns(model, x, ["blocks.0.attn.patern"])
    with pytest.raises(InputError, match="attention probabilities"):
        attention_patterns(model, x, ["blocks.0"])
    with pytest.raises(InputError, match="seq, seq"):
        rollout(torch.ones(1, 1, 1, 2, 3))
    with pytest.raises(InputError, match="non-negative"):
        flow(-torch.ones(1, 1, 1, 2, 2))
    with pytest.raises(InputError, match="positions"):
        flow(torch.ones(1, 1, 1, 2, 2), positions=[5])
    with pytest.raises(InputError, match="residual"):
        rollout(torch.ones(1, 1, 1, 2, 2), residual=1.5)
    with pytest.raises(InputError, match="tokens"):
        attention_patterns(model, x, SITES, tokens=[["a"]])


@pytest.mark.hf
def test_a_huggingface_bert_matches_its_own_output_attentions() -> None:
    """A tiny random BertModel (built offline, eager attention): the sites' maps equal ``output_attentions``."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, attn_implementation="eager")
    torch.manual_seed(0)  # transformers initialises from the global RNG (the autouse fixture reseeds per test)
    model = transformers.BertModel(config).eval()
    x = {"input_ids": torch.randint(0, 30, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    x["attention_mask"][1, 4:] = 0
    from seethrough import Site

    sites = [Site(f"encoder.layer.{i}.attention.self", element=1) for i in range(2)]
    maps = attention_patterns(model, x, sites)
    with torch.no_grad():
        own = torch.stack(model(**x, output_attentions=True).attentions, 1)
    mask = x["attention_mask"].bool()
    expected = own * mask[:, None, None, :, None] * mask[:, None, None, None, :]
    torch.testing.assert_close(maps.values, expected)
    torch.testing.assert_close(rollout(maps.values, maps.mask)[1, :, 0, :4].sum(-1),
                               torch.ones(2, 4, dtype=torch.float64))


class _ReadsPosition2(torch.nn.Module):
    """tokens → embed → the output is a linear map of position 2's embedding only: the planted route."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 3)
        with torch.no_grad():
            for p in (self.embed.weight, self.head.weight, self.head.bias):
                p.copy_(torch.randn(p.shape, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x)[:, 2])


def test_a_route_finding_is_validated_by_blanking_its_positions() -> None:
    from seethrough import Site
    from seethrough.evidence import Finding, validate

    model = _ReadsPosition2()
    x = torch.randint(0, 10, (32, 5), generator=torch.Generator().manual_seed(3))

    def metric(out: torch.Tensor) -> torch.Tensor:
        return out.log_softmax(-1)[:, 0]

    true = validate(Finding("route", "reads 2", site=Site("embed", positions=[2])), model, x, metric=metric,
                    n_controls=9)
    false = validate(Finding("route", "reads 0", site=Site("embed", positions=[0])), model, x, metric=metric,
                     n_controls=9)
    assert true.control_effects == (0.0,) * 9 and true.effect > 0.1 and true.p_value == pytest.approx(0.1)
    assert false.effect == 0.0 and false.p_value == 1.0
    with pytest.raises(InputError, match="positions"):
        Finding("route", "no positions", site=Site("embed"))
    maps = attention_rollout(TinyTransformer(10, 5, n_layers=2), x[:4], SITES)
    finding = maps.to_findings("embed", k=2)[0]
    assert finding.kind == "route" and len(finding.site.positions) == 2 and 4 not in finding.site.positions
    assert finding.to_dict()["site"]["positions"] == list(finding.site.positions)
