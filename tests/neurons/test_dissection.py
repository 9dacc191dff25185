"""Network dissection against a brute-force oracle and hand-built detectors (issue #5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seethrough.core import InputError
from seethrough.evidence import validate
from seethrough.neurons.dissection import dissect


def _brute_force(model: nn.Module, x: torch.Tensor, masks: torch.Tensor, quantile: float) -> torch.Tensor:
    """All activations at once, numpy's quantile, then IoU: the slow reference."""
    with torch.no_grad():
        maps = model[0](x)
    per_unit = maps.transpose(0, 1).reshape(maps.shape[1], -1).double().numpy()
    t = torch.tensor(np.quantile(per_unit, quantile, axis=1, method="higher"))
    up = F.interpolate(maps.double(), size=tuple(masks.shape[2:]), mode="bilinear", align_corners=False)
    on = up > t.view(1, -1, 1, 1)
    inter = torch.einsum("buhw,bchw->uc", on.double(), masks.double())
    union = on.sum((0, 2, 3)).double()[:, None] + masks.sum((0, 2, 3)).double()[None] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), 0.0)


def test_iou_matches_a_brute_force_reference_with_upsampling() -> None:
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, stride=2, padding=1))  # 8×8 maps for 16×16 masks
    x = torch.rand(23, 3, 16, 16, generator=gen)
    masks = torch.rand(23, 4, 16, 16, generator=gen) > 0.8
    for q in (0.995, 0.9):
        got = dissect(model, x, masks, "0", quantile=q, batch_size=5)
        torch.testing.assert_close(got.iou, _brute_force(model, x, masks, q).float())


def _planted(x: torch.Tensor) -> nn.Sequential:
    """Unit 0 reads the red plane, unit 1 the green plane, unit 2 a constant."""
    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0], conv.weight[1, 1] = 1.0, 1.0
        conv.bias.copy_(torch.tensor([0.0, 0.0, 0.5]))
    return nn.Sequential(conv, nn.Flatten())


def _scenes(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = 0.1 * torch.rand(n, 3, 8, 8, generator=gen)
    masks = torch.zeros(n, 2, 8, 8, dtype=torch.bool)
    for i in range(n):
        c, r, col = i % 2, int(torch.randint(0, 6, (1,), generator=gen)), int(torch.randint(0, 6, (1,), generator=gen))
        x[i, c, r:r + 2, col:col + 2] = 1.0
        masks[i, c, r:r + 2, col:col + 2] = True
    return x, masks


def test_planted_colour_units_get_their_labels_and_the_constant_unit_none() -> None:
    x, masks = _scenes(40)
    d = dissect(_planted(x), x, masks, "0", concepts=["red", "green"], quantile=0.97)
    assert d.labels == (0, 1, -1)
    assert float(d.iou[0, 0]) > 0.9 and float(d.iou[2].max()) == 0.0  # constant unit: empty mask
    assert d.detectors == [0, 1]
    frame = d.to_frame()
    assert frame["concept"].tolist()[:2] == ["red", "green"] and frame["detector"].tolist() == [True, True, False]
    assert d.plot().axes
    findings = d.to_findings({0: 0})
    assert [(f.units, f.target, f.evidence["concept"]) for f in findings] == [((0,), 0, "red"), ((1,), None, "green")]


def test_a_dissection_finding_validates_by_ablation_with_a_concept_metric() -> None:
    x, masks = _scenes(40)
    model = _planted(x)
    finding = dissect(model, x, masks, "0", concepts=["red", "green"], quantile=0.97).to_findings()[0]

    def red_score(output: torch.Tensor) -> torch.Tensor:  # the red unit's total response per image
        return output.view(len(output), 3, 8, 8)[:, 0].sum((1, 2))

    result = validate(finding, model, x[masks[:, 0].any((1, 2))], metric=red_score, n_controls=2)
    assert result.effect > 1.0 and result.control_mean < result.effect


def test_bad_masks_and_settings_are_refused_before_any_forward() -> None:
    x, masks = _scenes(6)
    model = _planted(x)
    calls: list[int] = []
    model[0].register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(InputError, match="bool tensor"):
        dissect(model, x, masks.float(), "0")
    with pytest.raises(InputError, match="bool tensor"):
        dissect(model, x, masks[:3], "0")
    with pytest.raises(InputError, match="quantile"):
        dissect(model, x, masks, "0", quantile=1.0)
    with pytest.raises(InputError, match="names 3 concepts"):
        dissect(model, x, masks, "0", concepts=["a", "b", "c"])
    assert not calls


def test_dissection_is_blind_to_a_positive_affine_map_of_each_unit() -> None:
    """Thresholds are per-unit quantiles, so rescaling and shifting a unit changes nothing (the reason the
    dissection game standardises the channels before its random rotation)."""
    gen = torch.Generator().manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    x = torch.rand(30, 3, 8, 8, generator=gen)
    masks = torch.rand(30, 3, 8, 8, generator=gen) > 0.85
    scaled = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    scale, shift = torch.tensor([0.5, 2.0, 7.0, 1.0]), torch.tensor([1.0, -3.0, 0.0, 10.0])
    with torch.no_grad():
        scaled[0].weight.copy_(model[0].weight * scale.view(-1, 1, 1, 1))
        scaled[0].bias.copy_(model[0].bias * scale + shift)
    a = dissect(model, x, masks, "0", quantile=0.9)
    b = dissect(scaled, x, masks, "0", quantile=0.9)
    assert a.labels == b.labels
    torch.testing.assert_close(a.iou, b.iou, atol=0.02, rtol=0.0)  # float rounding may flip a tied pixel
