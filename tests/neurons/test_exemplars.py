"""Top-k exemplars and receptive fields against independent oracles (issue #5).

Sharding (issue #9): one pass, shards in this process and shards as Ray tasks give identical
exemplars, and identical activation statistics (`activation_stats` shares the sharded pass).
Padding (issue #10, item 2): a padded batch gives the exemplars of each sentence run alone.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from models import TinyCNN, TinyMLP, TinyTransformer, images, tokens, vectors
from torch import nn

import seethrough as st
from seethrough import Site
from seethrough.core import InputError, InputTypeError, SiteNotFoundError
from seethrough.evidence import validate
from seethrough.neurons import ActivationStats, activation_stats, receptive_fields, top_exemplars


def test_top_exemplars_match_a_full_sort_and_do_not_depend_on_chunking() -> None:
    model, x = TinyCNN(), images(37, seed=1)
    with torch.no_grad():
        full = model.conv(x).flatten(2)  # (N, C, H*W): the slow oracle sees every value at once
    best, where = full.max(2)
    order = torch.sort(best, dim=0, descending=True, stable=True).indices[:5]
    for batch_size in (1, 4, 37):
        ex = top_exemplars(model, x, "conv", k=5, batch_size=batch_size)
        assert torch.equal(ex.indices, order)
        assert torch.equal(ex.values, best.gather(0, order))
        flat = where.gather(0, order)
        assert torch.equal(ex.positions, torch.stack([flat // 6, flat % 6], -1))


def test_ties_keep_the_earlier_index_and_iterables_of_batches_work() -> None:
    model = nn.Sequential(nn.Identity())
    x = torch.tensor([[1.0], [3.0], [3.0], [2.0], [3.0]])
    ex = top_exemplars(model, [x[:2], x[2:3], x[3:]], "0", k=3)  # a list of batches
    assert ex.indices[:, 0].tolist() == [1, 2, 4] and ex.positions is None
    gen = (b for b in (x[:2], x[2:]))  # a one-shot generator is fine for one pass
    assert top_exemplars(model, gen, "0", k=2).indices[:, 0].tolist() == [1, 2]


def test_receptive_fields_are_the_analytic_boxes_of_a_conv_pool_conv_stack() -> None:
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 2, 3, padding=1))
    h = 12
    units = torch.tensor([0, 1, 1, 0])
    positions = torch.tensor([[0, 0], [2, 3], [5, 5], [3, 0]])
    boxes = receptive_fields(model, torch.zeros(1, 1, h, h), "3", units, positions)
    for (i, j), box in zip(positions.tolist(), boxes.tolist(), strict=True):
        # conv2 at (i, j) reads pool cells i-1..i+1, each reading input rows 2p..2p+1, each reading
        # conv1 taps ±1: input rows 2(i-1)-1 .. 2(i+1)+1+1, clipped by the zero padding
        expect = [max(0, 2 * (i - 1) - 1), max(0, 2 * (j - 1) - 1), min(h, 2 * (i + 1) + 3), min(h, 2 * (j + 1) + 3)]
        assert box == expect


def test_crop_gives_each_exemplar_the_box_of_its_position() -> None:
    model, x = TinyCNN(), images(10, seed=2)
    ex = top_exemplars(model, x, "conv", k=3, crop=True)
    assert ex.boxes is not None and ex.positions is not None
    for r in range(3):
        for u in range(4):
            i, j = ex.positions[r, u].tolist()
            assert ex.boxes[r, u].tolist() == [max(0, i - 1), max(0, j - 1), min(6, i + 2), min(6, j + 2)]
    frame = ex.to_frame()
    assert len(frame) == 12 and {"index", "value", "pos0", "top"} <= set(frame.columns)
    assert ex.plot(x).axes and ex.plot().axes


def test_bad_arguments_fail_before_any_forward() -> None:
    model = TinyMLP()
    calls: list[int] = []
    model.fc1.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(InputError, match="k must be"):
        top_exemplars(model, vectors(), "act", k=0)
    with pytest.raises(SiteNotFoundError):
        top_exemplars(model, vectors(), "acts")
    with pytest.raises(InputError, match="selects units"):
        top_exemplars(model, vectors(), Site("act", units=[1]))
    with pytest.raises(InputError, match="crop"):
        top_exemplars(model, vectors(), "act", crop=True)
    with pytest.raises(InputError, match="n_shards must be an int ≥ 1"):
        top_exemplars(model, vectors(), "act", n_shards=0)
    with pytest.raises(InputError, match="in memory"):
        top_exemplars(model, [vectors()], "act", n_shards=2)
    assert not calls


def test_exemplar_findings_name_the_majority_class_and_validate_by_ablation() -> None:
    model = _ClassUnits()
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (90,), generator=gen)
    x = torch.nn.functional.one_hot(labels, 3).float() + 0.05 * torch.rand(90, 3, generator=gen)
    ex = top_exemplars(model, x, "units", k=10)
    findings = ex.to_findings(labels)
    assert [(f.units, f.target) for f in findings] == [((0,), 0), ((1,), 1), ((2,), 2)]
    result = validate(findings[0], model, x[labels == 0], n_controls=2)
    assert result.effect > 1.0  # ablating the class-0 unit removes its logit of 4


class _ClassUnits(nn.Module):
    """Unit u outputs ``x[:, u]``: one-hot rows give hand-computed class means."""

    def __init__(self) -> None:
        super().__init__()
        self.units = nn.Identity()
        self.head = nn.Linear(3, 3)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(3) * 4.0)
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.units(x))


# -- sharded passes (issue #9) ------------------------------------------------------------------


def _same_stats(a: ActivationStats, b: ActivationStats) -> None:
    """Every statistic bit for bit (class means: NaN for absent classes on both sides)."""
    assert a.count == b.count and a.quantiles == b.quantiles
    for name in ("mean", "std", "quantile_values", "sparsity", "class_means", "selectivity", "preferred_class"):
        x, y = getattr(a, name), getattr(b, name)
        assert x is not None and y is not None and torch.equal(x.nan_to_num(-1.0), y.nan_to_num(-1.0)), name


@pytest.mark.parametrize("n_shards", [2, 3, 7])
def test_sharded_passes_in_this_process_give_identical_results(n_shards: int) -> None:
    model, x = TinyCNN(), images(37, seed=4)
    labels = torch.arange(37) % 3
    one = top_exemplars(model, x, "conv", k=5, batch_size=4, crop=True)
    split = top_exemplars(model, x, "conv", k=5, batch_size=4, crop=True, n_shards=n_shards)
    for name in ("values", "indices", "positions", "boxes"):
        assert torch.equal(getattr(split, name), getattr(one, name)), name
    qs = (0.0, 0.1, 0.5, 0.99, 1.0)
    whole = activation_stats(model, x, "conv", labels=labels, quantiles=qs, batch_size=4, reduce="max")
    _same_stats(activation_stats(model, x, "conv", labels=labels, quantiles=qs, batch_size=4, reduce="max",
                                 n_shards=n_shards), whole)


def test_ties_across_shards_keep_the_earlier_index() -> None:
    model = nn.Sequential(nn.Identity())
    x = torch.tensor([[1.0], [3.0], [3.0], [2.0], [3.0], [3.0]])
    assert top_exemplars(model, x, "0", k=3, n_shards=3).indices[:, 0].tolist() == [1, 2, 4]


def test_shards_as_ray_tasks_give_identical_results() -> None:
    ray = pytest.importorskip("ray")  # skipped only where the [ray] extra is not installed
    from seethrough.bench.executors import ray_map

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU())  # torch classes only: Ray workers cannot import tests/
    x = vectors(40, seed=6)
    labels = torch.arange(40) % 2
    one = top_exemplars(model, x, "1", k=4, batch_size=8)
    stats = activation_stats(model, x, "1", labels=labels, batch_size=8)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        far = top_exemplars(model, x, "1", k=4, batch_size=8, n_shards=3, mapper=ray_map)
        far_stats = activation_stats(model, x, "1", labels=labels, batch_size=8, n_shards=3, mapper=ray_map)
    finally:
        ray.shutdown()
    assert torch.equal(far.values, one.values) and torch.equal(far.indices, one.indices)
    _same_stats(far_stats, stats)


# -- padding never counts (issue #10, item 2) -----------------------------------------------------

LENGTHS = (5, 2, 4, 3, 5, 1, 4, 2, 3)


def _sentences(lengths: tuple[int, ...] = LENGTHS, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 16, (n,), generator=gen) for n in lengths]


def _padded(sentences: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Right-padded token ids (pad id 0) with their attention mask, as a tokenizer gives them."""
    seq = max(len(s) for s in sentences)
    ids = torch.zeros(len(sentences), seq, dtype=torch.long)
    mask = torch.zeros(len(sentences), seq, dtype=torch.long)
    for i, s in enumerate(sentences):
        ids[i, :len(s)], mask[i, :len(s)] = s, 1
    return {"input_ids": ids, "attention_mask": mask}


def _alone(model: nn.Module, sentences: list[torch.Tensor], site: str) -> list[torch.Tensor]:
    """Each sentence run by itself, unpadded: ``(length, n_units)`` values (the oracle)."""
    out = []
    for s in sentences:
        inputs = {"input_ids": s[None], "attention_mask": torch.ones(1, len(s), dtype=torch.long)}
        out.append(st.capture(model, inputs, [site])[site][0].detach())
    return out


def _exemplar_oracle(alone: list[torch.Tensor], k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    best = torch.stack([v.max(0).values for v in alone])  # (n_sentences, n_units)
    where = torch.stack([v.max(0).indices for v in alone])
    order = torch.sort(best, dim=0, descending=True, stable=True).indices[:k]
    return best.gather(0, order), order, where.gather(0, order)


@pytest.mark.parametrize("site", ["blocks.0.mlp.1", "blocks.1"])
def test_a_padded_batch_gives_the_exemplars_of_each_sentence_run_alone(site: str) -> None:
    model, sentences = TinyTransformer(), _sentences()
    padded = _padded(sentences)
    values, indices, positions = _exemplar_oracle(_alone(model, sentences, site), k=4)
    unmasked = top_exemplars(model, padded, site, k=4, mask=False)
    lengths = torch.tensor(LENGTHS)
    assert unmasked.positions is not None and bool((unmasked.positions[..., 0] >= lengths[unmasked.indices]).any())
    with ThreadPoolExecutor(1) as pool:  # one worker: shards share the model and its hooks
        runs = [top_exemplars(model, padded, site, k=4, **kwargs)  # the attention_mask is the default mask
                for kwargs in ({}, {"batch_size": 2}, {"batch_size": 3, "n_shards": 2},
                               {"n_shards": 3, "mapper": pool.map},
                               {"mask": padded["attention_mask"].bool(), "batch_size": 4})]
    for run, ex in enumerate(runs):
        assert torch.equal(ex.indices, indices) and ex.positions is not None, run
        assert torch.equal(ex.positions[..., 0], positions), run
        assert not bool((ex.positions[..., 0] >= lengths[ex.indices]).any())  # never on a pad
        # padding changes the attention's float32 sums slightly: 1e-5 absolute covers it
        torch.testing.assert_close(ex.values, values, rtol=0.0, atol=1e-5)


def test_batches_padded_to_different_lengths_and_explicit_masks() -> None:
    model, sentences = TinyTransformer(), _sentences()
    site = "blocks.0.mlp.1"
    values, indices, positions = _exemplar_oracle(_alone(model, sentences, site), k=3)
    chunks = [_padded(sentences[:4]), _padded(sentences[4:6]), _padded(sentences[6:])]  # seq 5, 5, 4
    chunks[1] = {"input_ids": chunks[1]["input_ids"][:, :5], "attention_mask": chunks[1]["attention_mask"][:, :5]}
    ex = top_exemplars(model, iter(chunks), site, k=3)
    assert torch.equal(ex.indices, indices) and ex.positions is not None
    assert torch.equal(ex.positions[..., 0], positions)
    torch.testing.assert_close(ex.values, values, rtol=0.0, atol=1e-5)
    # an explicit mask on plain token ids (no attention_mask) says the same
    ids, mask = _padded(sentences)["input_ids"], _padded(sentences)["attention_mask"]
    plain = top_exemplars(model, (ids,), site, k=3, mask=mask)
    assert torch.equal(plain.indices, top_exemplars(model, (ids,), site, k=3, mask=mask.bool()).indices)


def test_an_example_with_no_counted_position_is_never_an_exemplar() -> None:
    model = nn.Sequential(nn.Identity())
    x = torch.tensor([[[1.0], [9.0]], [[2.0], [0.0]], [[3.0], [0.0]]])  # (batch, seq, 1)
    mask = torch.tensor([[0, 0], [1, 0], [1, 1]])
    ex = top_exemplars(model, x, "0", k=3, mask=mask)
    assert ex.indices[:, 0].tolist() == [2, 1] and ex.values[:, 0].tolist() == [3.0, 2.0]
    assert top_exemplars(model, x, "0", k=1).indices.item() == 0  # no mask on a plain tensor: the 9 wins
    with pytest.raises(InputError, match="no position"):
        top_exemplars(model, x, "0", mask=torch.zeros(3, 2))


def test_bad_masks_are_refused() -> None:
    model, t = TinyTransformer(), tokens(3, 5)
    calls: list[int] = []
    model.embed.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(InputTypeError, match="mask must be"):
        top_exemplars(model, t, "blocks.0", mask=True)  # type: ignore[arg-type]  # the wrong form, on purpose
    with pytest.raises(InputError, match="0/1"):
        top_exemplars(model, t, "blocks.0", mask=torch.full((3, 5), 2))
    with pytest.raises(InputError, match="3 rows but the data has 4"):
        top_exemplars(model, tokens(4, 5), "blocks.0", mask=torch.ones(3, 5))
    assert not calls
    with pytest.raises(InputError, match=r"mask has shape \(3, 4\)"):
        top_exemplars(model, t, "blocks.0", mask=torch.ones(3, 4))
    with pytest.raises(InputError, match="mask=False"):
        top_exemplars(TinyCNN(), images(3), "conv", mask=torch.ones(3, 6))
    # images and vectors ignore the default: the same exemplars as before masks existed
    assert torch.equal(top_exemplars(TinyCNN(), images(5), "conv", k=2).indices,
                       top_exemplars(TinyCNN(), images(5), "conv", k=2, mask=False).indices)
