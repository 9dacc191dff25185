"""Tests for seethrough.core.batching: `batches`, `stream`, `shards` and `sharded_pass`.

Oracle for `stream`: one full-batch `capture` on the same model; the streamed chunks, concatenated
in order, must equal it, whatever the batch size. Oracle for `sharded_pass`: the same statistic
over the whole data in one state, and a recording mapper for the order and offsets of shards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from seethrough import Site, SiteNotFoundError, capture
from seethrough.core import InputError, RunningMean, TopK, batches, sharded_pass, shards, stream

N_ROWS = 10


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))


def _x() -> Tensor:
    return torch.randn(N_ROWS, 3, generator=torch.Generator().manual_seed(1))


class _Scaled(nn.Module):
    """Called as ``model(x=..., scale=...)``: exercises dict (keyword) chunks."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: Tensor, scale: float = 1.0) -> Tensor:
        return self.fc(x) * scale


# -- batches ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("batch_size", "sizes"), [(4, [4, 4, 2]), (5, [5, 5]), (1, [1] * N_ROWS),
                                                   (N_ROWS, [N_ROWS]), (N_ROWS + 7, [N_ROWS])])
def test_batches_of_a_tensor(batch_size: int, sizes: list[int]) -> None:
    x = _x()
    chunks = list(batches(x, batch_size))
    assert [c.shape[0] for c in chunks] == sizes
    assert torch.equal(torch.cat(chunks), x)


def test_batches_of_a_tuple_slice_every_batch_tensor() -> None:
    x, mask = _x(), torch.arange(N_ROWS)
    chunks = list(batches((x, mask, "tag"), 4))
    assert len(chunks) == 3
    assert all(isinstance(c, tuple) and len(c) == 3 for c in chunks)
    assert torch.equal(torch.cat([c[0] for c in chunks]), x)
    assert torch.equal(torch.cat([c[1] for c in chunks]), mask)
    assert [c[2] for c in chunks] == ["tag"] * 3
    assert chunks[2][1].tolist() == [8, 9]


def test_batches_of_a_dict_pass_non_batch_values_through() -> None:
    x = _x()
    table = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))  # leading size 4 != batch 10
    chunks = list(batches({"x": x, "table": table, "scale": 2.0}, 3))
    assert [c["x"].shape[0] for c in chunks] == [3, 3, 3, 1]
    assert torch.equal(torch.cat([c["x"] for c in chunks]), x)
    for chunk in chunks:
        assert set(chunk) == {"x", "table", "scale"}
        assert chunk["table"] is table  # unchanged, not sliced or copied
        assert chunk["scale"] == 2.0


@pytest.mark.parametrize("batch_size", [0, -1, True])
def test_batches_bad_batch_size(batch_size: int) -> None:
    with pytest.raises(InputError, match="batch_size must be an int ≥ 1") as info:
        list(batches(_x(), batch_size))
    assert repr(batch_size) in str(info.value)


def test_batches_empty_inputs() -> None:
    with pytest.raises(InputError, match="empty batch"):
        list(batches(torch.zeros(0, 3), 2))


def test_batches_inputs_without_tensor() -> None:
    with pytest.raises(InputError, match="hold no tensor"):
        list(batches((1, 2), 2))


# -- stream ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, 4, N_ROWS, N_ROWS + 1])
def test_stream_matches_one_full_batch_capture(batch_size: int) -> None:
    model, x = _model(), _x()
    sites = ["0", Site("2")]
    with torch.no_grad():
        full = capture(model, x, sites)
    offsets, parts = [], {key: [] for key in sites}
    for offset, values in stream(model, batches(x, batch_size), sites):
        offsets.append(offset)
        assert list(values) == sites  # keyed by the sites exactly as given
        for key in sites:
            parts[key].append(values[key])
    assert offsets == list(range(0, N_ROWS, batch_size))
    for key in sites:
        torch.testing.assert_close(torch.cat(parts[key]), full[key])


def test_stream_offsets_follow_uneven_chunks() -> None:
    model, x = _model(), _x()
    chunks = [x[:2], x[2:7], x[7:8], x[8:]]
    result = list(stream(model, chunks, "1"))
    assert [offset for offset, _ in result] == [0, 2, 7, 8]
    torch.testing.assert_close(torch.cat([v["1"] for _, v in result]), torch.relu(model[0](x)).detach())


def test_stream_dict_chunks() -> None:
    model, x = _Scaled(), _x()
    with torch.no_grad():
        full = capture(model, {"x": x, "scale": 2.0}, "fc")["fc"]
    result = list(stream(model, batches({"x": x, "scale": 2.0}, 4), "fc"))
    assert [offset for offset, _ in result] == [0, 4, 8]
    torch.testing.assert_close(torch.cat([v["fc"] for _, v in result]), full)


def test_stream_runs_without_grad() -> None:
    model, x = _model(), _x()
    assert all(p.requires_grad for p in model.parameters())
    assert capture(model, x, "2")["2"].requires_grad  # control: capture alone keeps the graph
    for _, values in stream(model, batches(x, 4), ["0", "2"]):
        for value in values.values():
            assert not value.requires_grad
            assert value.grad_fn is None
    assert torch.is_grad_enabled()


def test_stream_does_not_leak_no_grad_to_the_caller() -> None:
    model, x = _model(), _x()
    it = stream(model, batches(x, 4), "0")
    try:
        _, values = next(it)
        grad_between_chunks = torch.is_grad_enabled()
    finally:
        it.close()  # a stream left open would keep grad off for the tests that follow
    assert torch.is_grad_enabled()
    assert not values["0"].requires_grad
    assert grad_between_chunks, "grad mode is off in the caller between chunks"


def test_stream_progress_bar_gives_the_same_values(capsys: pytest.CaptureFixture[str]) -> None:
    model, x = _model(), _x()
    plain = [(o, v["0"]) for o, v in stream(model, batches(x, 4), "0")]
    shown = [(o, v["0"]) for o, v in stream(model, batches(x, 4), "0", progress=True, total=3)]
    assert [o for o, _ in shown] == [o for o, _ in plain]
    for (_, a), (_, b) in zip(shown, plain, strict=True):
        torch.testing.assert_close(a, b)
    assert "stream" in capsys.readouterr().err


@pytest.mark.parametrize("chunks", [[], (), iter([])], ids=["list", "tuple", "iterator"])
def test_stream_empty_iterable(chunks: list[Tensor] | tuple[Tensor, ...] | Iterator[Tensor]) -> None:
    with pytest.raises(InputError, match="yielded no batch"):
        list(stream(_model(), chunks, "0"))
    assert torch.is_grad_enabled()


def test_stream_unknown_site_fails_before_reading_any_chunk() -> None:
    model = _model()
    advanced: list[int] = []

    def chunks() -> Iterator[Tensor]:
        advanced.append(1)
        yield _x()

    source = chunks()
    with pytest.raises(SiteNotFoundError, match="no module '3'") as info:
        next(stream(model, source, ["0", "3"]))
    assert advanced == [], "a chunk was read before the sites were checked"
    assert "close matches" in str(info.value)
    assert torch.is_grad_enabled()


# -- shards and sharded_pass (issue #9) --------------------------------------------------------


@pytest.mark.parametrize("n_shards", [1, 2, 3, 10, 25])
def test_shards_are_contiguous_cover_every_row_once_and_are_never_empty(n_shards: int) -> None:
    x = _x()
    parts = shards(x, n_shards)
    assert len(parts) == min(n_shards, N_ROWS)
    assert [offset for _, offset in parts] == [0, *torch.tensor([len(p) for p, _ in parts]).cumsum(0)[:-1].tolist()]
    assert torch.equal(torch.cat([p for p, _ in parts]), x)
    sizes = [len(p) for p, _ in parts]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_shards_slice_every_tensor_of_tuple_and_dict_inputs() -> None:
    x = _x()
    (first, _), (second, offset) = shards({"x": x, "scale": 2.0}, 2)
    assert torch.equal(first["x"], x[:5]) and torch.equal(second["x"], x[5:]) and offset == 5
    assert second["scale"] == 2.0


def test_sharded_pass_merges_in_shard_order_and_equals_one_state() -> None:
    x = _x()
    seen: list[int] = []

    def top_of(shard: Tensor, offset: int) -> TopK:
        seen.append(offset)
        top = TopK(4)
        top.update(shard.round(), offset)  # rounding makes ties, which must still go to the earlier index
        return top

    whole = top_of(x, 0)
    seen.clear()
    split = sharded_pass(x, top_of, n_shards=3)
    assert seen == [0, 3, 6]
    assert torch.equal(split.indices, whole.indices) and torch.equal(split.values, whole.values)


def test_sharded_pass_runs_through_any_map_like_callable() -> None:
    x = _x()
    calls: list[int] = []

    def recording_map(fn, items):  # type: ignore[no-untyped-def]  # the builtin map's contract
        items = list(items)
        calls.append(len(items))
        return [fn(item) for item in reversed(items)][::-1]  # runs out of order, returns in order

    def mean_of(shard: Tensor, offset: int) -> RunningMean:
        m = RunningMean()
        m.update(shard)
        return m

    got = sharded_pass(x, mean_of, n_shards=4, mapper=recording_map)
    assert calls == [4] and got.count == N_ROWS
    torch.testing.assert_close(got.mean, x.double().mean(0), rtol=1e-12, atol=1e-12)


def test_sharded_pass_bad_arguments() -> None:
    with pytest.raises(InputError, match="n_shards must be an int ≥ 1"):
        sharded_pass(_x(), lambda s, o: RunningMean(), n_shards=0)
    with pytest.raises(InputError, match="empty batch"):
        shards(torch.zeros(0, 3), 2)
