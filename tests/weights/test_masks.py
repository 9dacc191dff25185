"""weights.learn_mask and weights.overlap (issue #15): planted irrelevance is dropped, behaviour is kept."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from models import TinyMLP, vectors
from torch import nn

from seethrough.core.errors import InputError
from seethrough.weights import Overlap, WeightMask, importance, learn_mask, overlap


def planted() -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """An MLP whose inputs 4, 5 are always zero and whose hidden units 6, 7 reach no output.

    The weights reading inputs 4 and 5, and every weight into or out of units 6 and 7, cannot change
    any output on these inputs: a mask that keeps the behaviour with few weights must drop them.
    """
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8, bias=False), nn.ReLU(), nn.Linear(8, 3, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(8, 6, generator=gen))
        model[2].weight.copy_(torch.randn(3, 8, generator=gen))
        model[2].weight[:, 6:] = 0.0
    x = torch.randn(256, 6, generator=gen)
    x[:, 4:] = 0.0
    irrelevant = {"0.weight": torch.zeros(8, 6, dtype=torch.bool), "2.weight": torch.zeros(3, 8, dtype=torch.bool)}
    irrelevant["0.weight"][:, 4:] = True
    irrelevant["0.weight"][6:, :] = True
    irrelevant["2.weight"][:, 6:] = True
    return model, x, model(x).argmax(1), irrelevant


def test_mask_keeps_the_behaviour_and_drops_the_planted_irrelevant_weights() -> None:
    model, x, y, irrelevant = planted()
    result = learn_mask(model, x, y, seed=0)
    assert result.dense_accuracy == 1.0
    assert result.accuracy >= 0.97, result
    kept = result.binary()
    for name, drop in irrelevant.items():
        assert not bool(kept[name][drop].any()), f"{name}: kept planted-irrelevant weights {kept[name] & drop}"
    assert result.density < 0.8
    masked = result.apply(model)
    assert masked is not model
    accuracy = float((masked(x).argmax(1) == y).float().mean())
    assert accuracy == pytest.approx(result.accuracy)
    for name, p in masked.named_parameters():
        dense = dict(model.named_parameters())[name]
        assert torch.equal(p.detach(), dense.detach() * kept[name])
    ablated = result.ablate(model)
    assert float((ablated(x).argmax(1) == y).float().mean()) < 0.7  # the kept weights carry the behaviour


def test_mask_is_seeded_and_leaves_the_global_rng_alone() -> None:
    model, x, y, _ = planted()
    state = torch.get_rng_state()
    a = learn_mask(model, x, y, seed=3, steps=30)
    b = learn_mask(model, x, y, seed=3, steps=30)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)


def test_custom_loss_subset_of_parameters_and_round_trip(tmp_path) -> None:
    model, x = TinyMLP(), vectors(16)
    target = model(x).detach()
    result = learn_mask(model, x, target, parameters=["fc2.weight"], steps=20, loss=F.mse_loss)
    assert list(result.masks) == ["fc2.weight"] and result.accuracy != result.accuracy  # NaN: no accuracy
    result.save(tmp_path / "mask.safetensors")
    back = WeightMask.load(tmp_path / "mask.safetensors")
    assert torch.equal(back.masks["fc2.weight"], result.masks["fc2.weight"]) and back.density == result.density
    frame = result.to_frame()
    assert list(frame["parameter"]) == ["fc2.weight"]


def test_a_mask_that_never_keeps_the_behaviour_warns() -> None:
    model, x, y, _ = planted()
    with pytest.warns(UserWarning, match="keeps accuracy"):  # starts from the empty network, one step
        result = learn_mask(model, x, y, init=-3.0, steps=1)
    assert result.accuracy < result.dense_accuracy - 0.02


@pytest.mark.parametrize("bad", [dict(parameters=["fc9.weight"]), dict(steps=0), dict(penalty=-1.0),
                                 dict(lr=float("nan"))])
def test_bad_options_are_refused(bad: dict) -> None:
    with pytest.raises(InputError):
        learn_mask(TinyMLP(), vectors(4), torch.arange(4) % 3, **bad)


def test_apply_refuses_a_model_without_the_masked_parameters() -> None:
    result = WeightMask({"fc9.weight": torch.ones(2, 2)}, 1.0, 1.0, 1.0)
    with pytest.raises(InputError, match="fc9.weight"):
        result.apply(TinyMLP())


def test_overlap_counts_by_hand_and_between_two_tasks() -> None:
    a = {"w": torch.tensor([[True, True], [False, False]]), "b": torch.tensor([True, False])}
    b = {"w": torch.tensor([[True, False], [True, False]]), "b": torch.tensor([True, True])}
    r = overlap(a, b)
    assert isinstance(r, Overlap)
    assert (r.only_a, r.only_b, r.shared) == ((1, 0), (1, 1), (1, 1))
    assert r.jaccard == pytest.approx(2 / 5)
    # two importance maps of one model on disjoint inputs: Fisher of the same task overlaps itself fully
    model, x = TinyMLP(), vectors(12)
    y = model(x).argmax(1)
    top = importance(model, x, y, method="fisher").top(0.2)
    assert overlap(top, top).jaccard == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="differ in shape"):
            overlap({"w": torch.ones(2, dtype=torch.bool)}, {"w": torch.ones(3, dtype=torch.bool)})
