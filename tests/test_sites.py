"""Site resolution, validation and glob selection (issue #2)."""

from __future__ import annotations

import pytest
import torch
from models import TinyMLP, TinyTransformer, tokens

import seethrough as st
from seethrough import Site, select_sites


def test_unknown_path_lists_close_matches_before_any_forward() -> None:
    model = TinyMLP()
    calls = []
    model.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(st.SiteNotFoundError, match=r"'fc1'.*'fc2'|'fc2'.*'fc1'") as info:
        st.capture(model, torch.zeros(2, 4), ["fc"])
    assert isinstance(info.value, KeyError)
    assert "no module 'fc'" in str(info.value)
    assert calls == []  # failed before the forward pass


def test_unknown_nested_path_suggests_real_name() -> None:
    with pytest.raises(st.SiteNotFoundError, match="blocks.1.mlp"):
        st.capture(TinyTransformer(), tokens(), ["blocks.1.mpl"])


def test_select_sites_glob_in_model_order() -> None:
    model = TinyTransformer()
    assert select_sites(model, "blocks.*.mlp") == [Site("blocks.0.mlp"), Site("blocks.1.mlp")]
    assert select_sites(model, "blocks.*.attn.*") == [
        Site("blocks.0.attn.qkv"), Site("blocks.0.attn.out"), Site("blocks.1.attn.qkv"), Site("blocks.1.attn.out")]
    assert [s.path for s in select_sites(model, "**.out")] == ["blocks.0.attn.out", "blocks.1.attn.out"]
    assert all(s.point == "input" for s in select_sites(model, "blocks.*", point="input"))


def test_glob_matching_nothing_fails() -> None:
    with pytest.raises(st.SiteNotFoundError, match="matches no module"):
        select_sites(TinyTransformer(), "layers.*.mlp")


def test_glob_given_to_capture_points_to_select_sites() -> None:
    with pytest.raises(st.SiteError, match="select_sites"):
        st.capture(TinyTransformer(), tokens(), ["blocks.*.mlp"])


@pytest.mark.parametrize("kwargs, message", [
    ({"point": "middle"}, "point"),
    ({"units": []}, "empty"),
    ({"units": [1, 1]}, "repeated"),
    ({"units": [1.5]}, "units"),  # type errors: our message, or beartype's under the test hook
    ({"units": "ab"}, "units"),
    ({"positions": [True]}, "ints"),
    ({"call": -1}, "call"),
    ({"unit_dim": 1.0}, "unit_dim"),
])
def test_bad_site_fields_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises((st.SiteError, TypeError), match=message):
        Site("fc1", **kwargs)


def test_site_is_hashable_value_object() -> None:
    a, b = Site("fc1", units=[1, 2]), Site("fc1", units=(1, 2))
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert Site("fc1") != Site("fc1", point="input")
    assert repr(a) == "Site('fc1', units=(1, 2))"


def test_unit_selection_out_of_range_names_the_size() -> None:
    with pytest.raises(st.SiteError, match="out of range for size 8"):
        st.capture(TinyMLP(), torch.zeros(2, 4), [Site("fc1", units=[9])])
