"""Tests for seethrough.core.batching: `batches` and `stream`.

Oracle for `stream`: one full-batch `capture` on the same model; the streamed chunks, concatenated
in order, must equal it, whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from seethrough import Site, SiteNotFoundError, capture
from seethrough.core import InputError, batches, stream

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
    with pytest.raises(InputError, match="batch_size must be a positive int") as info:
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
