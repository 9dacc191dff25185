"""fingerprint: which examples a finding was discovered on (issue #10, item 5)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from jaxtyping import TypeCheckError

from seethrough import Site
from seethrough.core import InputError, InputTypeError
from seethrough.evidence import Finding, Fingerprint, fingerprint
from seethrough.evidence.fingerprint import FULL_ROW_ELEMENTS


def data(n: int = 16, d: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_same_data_same_digest_and_any_change_a_new_one() -> None:
    x = data()
    assert fingerprint(x) == fingerprint(x.clone())
    changed = x.clone()
    changed[3, 2] += 1e-6
    assert fingerprint(changed) != fingerprint(x)
    assert fingerprint(x[:15]) != fingerprint(x)  # shape
    assert fingerprint(x.double()) != fingerprint(x)  # dtype enters the digest...
    assert fingerprint(x).overlap(fingerprint(x.double())) == 16  # ...but not the rows: same values, same examples
    assert fingerprint(x[torch.randperm(16)]) != fingerprint(x)  # order


def test_overlap_counts_shared_examples_by_row() -> None:
    x, held_out = data(seed=0), data(seed=1)
    seen = fingerprint(x)
    assert seen.overlap(fingerprint(held_out)) == 0
    assert seen.overlap(fingerprint(torch.cat([held_out, x[4:7]]))) == 3
    assert seen.overlap(fingerprint(x)) == seen.n_examples == 16
    one_changed = x.clone()
    one_changed[0, 0] = 9.0
    assert seen.overlap(fingerprint(one_changed)) == 15  # full rows are hashed: one edit is a new example


def test_tuples_dicts_and_batches() -> None:
    ids = torch.randint(0, 50, (6, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(6, 7, dtype=torch.long)
    d = {"input_ids": ids, "attention_mask": mask}
    assert fingerprint(d) == fingerprint({"attention_mask": mask, "input_ids": ids})  # key order does not matter
    assert fingerprint(d).overlap(fingerprint({k: v[2:4] for k, v in d.items()})) == 2
    other_mask = mask.clone()
    other_mask[2, 5:] = 0
    assert fingerprint(d).overlap(fingerprint({"input_ids": ids, "attention_mask": other_mask})) == 5
    x = data()
    assert fingerprint([x[:5], x[5:]]) == fingerprint(x)  # batching does not matter
    table = torch.arange(3.0)  # another leading size: a shared argument, in the digest only
    assert fingerprint((x, table)) != fingerprint((x, table + 1))
    assert fingerprint((x, table)).overlap(fingerprint((x, table + 1))) == 16


def test_long_rows_are_sampled_so_near_copies_count_as_the_same_example() -> None:
    """The documented collision risk: a long row is hashed through a strided sample of its elements."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert x[0].numel() > FULL_ROW_ELEMENTS
    nudged = x.clone()
    nudged[0, 0, 0, 1] += 1.0  # an element between the first two samples (the stride is about 3)
    assert fingerprint(x).overlap(fingerprint(nudged)) == 2
    nudged[0, 0, 0, 0] += 1.0  # the first element is always sampled
    assert fingerprint(x).overlap(fingerprint(nudged)) == 1


def test_json_holds_the_digest_and_size_only() -> None:
    f = fingerprint(data())
    assert f.to_dict() == {"digest": f.digest, "n_examples": 16} and len(f.digest) == 32
    found = Finding("direction", "d", site=Site("fc"), direction=torch.ones(3), data_fingerprint=f)
    assert json.loads(json.dumps(found.to_dict()))["data_fingerprint"] == f.to_dict()
    assert Fingerprint(f.digest, 16) == f  # equality is the digest's


def test_bad_arguments() -> None:
    # the signature refuses it under the test suite's type checker; the function itself without one
    with pytest.raises((InputTypeError, TypeCheckError), match="inputs"):
        fingerprint("text")
    with pytest.raises(InputError, match="no tensor"):
        fingerprint(("a", 1))
    with pytest.raises(InputError, match="no batches"):
        fingerprint([])
    with pytest.raises(InputError, match="differ"):
        fingerprint([data(d=5), data(d=4)])
    with pytest.raises(InputError, match="row hashes"):
        Fingerprint("0" * 32, 3, rows=np.zeros(2, dtype=np.uint64))
    with pytest.raises((InputError, TypeCheckError), match="data_fingerprint"):
        Finding("direction", "d", site=Site("fc"), direction=torch.ones(3), data_fingerprint="abc")  # type: ignore[arg-type]


def test_a_sentence_fingerprints_alike_however_its_batch_was_padded() -> None:
    """Issue #10: text batches are padded to different lengths; padding must not change an example's hash."""
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 1, 2, 3]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    batch = {"input_ids": ids, "attention_mask": mask}
    alone = {"input_ids": ids[:1, :3], "attention_mask": mask[:1, :3]}
    repadded = {"input_ids": torch.tensor([[5, 6, 7, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 0]])}
    assert fingerprint(batch).overlap(fingerprint(alone)) == 1
    assert fingerprint(batch).overlap(fingerprint(repadded)) == 1
    both = fingerprint([alone, {"input_ids": ids[1:], "attention_mask": mask[1:]}])  # batches of two lengths
    assert both.n_examples == 2 and fingerprint(batch).overlap(both) == 2
    other = {"input_ids": torch.tensor([[5, 6, 4]]), "attention_mask": torch.tensor([[1, 1, 1]])}
    assert fingerprint(batch).overlap(fingerprint(other)) == 0
