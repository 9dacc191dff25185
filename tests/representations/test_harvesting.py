"""Sharded harvesting (issue #14 item 1): the same rows whatever the shards, bounded files, a finished index."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from models import TinyMLP, TinyTransformer, tokens
from torch import nn

from seethrough.core import InputError, LoadError
from seethrough.representations import (
    Harvest,
    SparseAutoencoder,
    Transcoder,
    harvest,
    module_pairs,
    site_activations,
)


def test_sharded_harvest_gives_the_rows_of_one_pass(tmp_path: Path) -> None:
    model, x = TinyTransformer(), tokens(batch=7)
    one = harvest(model, x, "blocks.0", tmp_path / "one", batch_size=2)
    three = harvest(model, x, "blocks.0", tmp_path / "three", n_shards=3, batch_size=2, rows_per_file=4)
    reference = torch.cat(list(site_activations(model, x, "blocks.0", batch_size=2)))
    assert torch.equal(one.tensor(), reference) and torch.equal(three.tensor(), reference)
    assert three.n_rows == 35 and three.d == reference.shape[1]
    assert max(three.rows) <= 4 and sum(three.rows) == 35  # no file (so no worker) holds more than rows_per_file
    assert len({name.split("-")[0] for name in three.files}) == 3  # three shards wrote files


def test_harvest_reads_back_in_batches_and_reopens(tmp_path: Path) -> None:
    model, x = TinyMLP(), torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    h = harvest(model, x, "fc1", tmp_path, n_shards=2, batch_size=16)
    assert [b.shape[0] for b in h] == [16, 9, 16, 9] and len(h) == 4
    again = Harvest.load(tmp_path, batch_size=16)
    assert torch.equal(again.tensor(), h.tensor()) and again.site == {"path": "fc1", "point": "output"}
    (tmp_path / "harvest.json").unlink()  # as an interrupted harvest leaves it
    with pytest.raises(LoadError, match="not a finished harvest"):
        Harvest.load(tmp_path)


def test_models_fit_from_harvests_as_from_the_live_model(tmp_path: Path) -> None:
    model, x = TinyMLP(), torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    h = harvest(model, x, "fc1", tmp_path / "a", batch_size=32)
    live = SparseAutoencoder(12, k=3, max_epochs=3).fit(site_activations(model, x, "fc1", batch_size=32))
    assert torch.equal(SparseAutoencoder(12, k=3, max_epochs=3).fit(h).decoder_, live.decoder_)
    source = harvest(model, x, "fc1", tmp_path / "in", batch_size=32, n_shards=2)
    target = harvest(model, x, "act", tmp_path / "out", batch_size=32, n_shards=2)
    tc = Transcoder(12, k=3, max_epochs=3).fit(source, target)
    assert torch.equal(tc.decoder_, Transcoder(12, k=3, max_epochs=3).fit(*module_pairs(model, x, "act",
                                                                                        batch_size=32)).decoder_)


def test_bad_arguments_are_refused_before_work(tmp_path: Path) -> None:
    model, x = TinyMLP(), torch.randn(8, 4)
    with pytest.raises(KeyError):
        harvest(model, x, "nope", tmp_path)
    with pytest.raises(InputError, match="n_shards"):
        harvest(model, x, "fc1", tmp_path, n_shards=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="directory"):
        harvest(model, x, "fc1", tmp_path / "file")
    assert not (tmp_path / "harvest.json").exists()


def test_harvest_sharded_over_ray_tasks_gives_the_rows_of_one_pass(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")  # skipped only where the [ray] extra is not installed
    from seethrough.bench.executors import ray_map

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU())  # torch classes only: Ray workers cannot import tests/
    x = torch.randn(45, 4, generator=torch.Generator().manual_seed(2))
    reference = torch.cat(list(site_activations(model, x, "1", batch_size=8)))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        far = harvest(model, x, "1", tmp_path, n_shards=3, mapper=ray_map, batch_size=8, rows_per_file=10)
    finally:
        ray.shutdown()
    assert torch.equal(far.tensor(), reference) and far.n_rows == 45
    assert len({name.split("-")[0] for name in far.files}) == 3 and max(far.rows) <= 10
    assert torch.equal(Harvest.load(tmp_path).tensor(), reference)  # the index the workers' files were joined into
