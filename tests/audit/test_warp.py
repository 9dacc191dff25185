"""The warp family's search (issue #11 item 3): `WarpParametrisation` through the generic engine on a toy
whose classes need known warps, and `field_correlation` against closed forms."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from seethrough.audit import reverse_engineer_trigger
from seethrough.audit.families import Parametrisation, parametrisation
from seethrough.audit.warp import WarpParametrisation, field_correlation
from seethrough.bench.zoo import random_warp_trigger
from seethrough.core import InputError
from seethrough.evidence import Trigger, stamp

SIDE = 12


def _ramps(n: int, seed: int = 0) -> Tensor:
    """(n, 2, 12, 12): channel 0 rises along x, channel 1 along y (0 to 1), plus a little noise."""
    ramp = torch.linspace(0, 1, SIDE)
    base = torch.stack([ramp.expand(SIDE, SIDE), ramp[:, None].expand(SIDE, SIDE)])
    return base + 0.003 * torch.randn(n, 2, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


class _WarpReader(nn.Module):
    """Reads a warp off ramp images: channel 0 minus its ramp is dx/(W-1), channel 1 minus its ramp dy/(H-1).

    Class 0 is the clean class. Class k ≥ 1 wins when the displacement's projection on template k,
    ``mean(d · t_k) / mean(t_k · t_k)``, exceeds ``needs[k]``: the warp ``needs[k] · t_k`` is the planted
    answer, and class k needs about ``needs[k]`` times template k's size.
    """

    def __init__(self, templates: list[Tensor], needs: list[float]) -> None:
        super().__init__()
        ramp = torch.linspace(0, 1, SIDE)
        self.register_buffer("ramps", torch.stack([ramp.expand(SIDE, SIDE), ramp[:, None].expand(SIDE, SIDE)]))
        # dy pairs with channel 1 (the y ramp), dx with channel 0; read 3 pixels away from the border, where a
        # read beyond the image would be clamped
        inside = torch.zeros(SIDE, SIDE)
        inside[3:-3, 3:-3] = 1.0
        self.register_buffer("templates", torch.stack([t.flip(0) * inside for t in templates]))
        self.needs = needs

    def forward(self, x: Tensor) -> Tensor:
        moved = (x - self.ramps) * (SIDE - 1)  # (N, 2, H, W): (dx, dy) where the ramps are not clamped
        score = (moved[:, None] * self.templates).mean((2, 3, 4)) / self.templates.pow(2).mean((1, 2, 3))
        needs = torch.tensor(self.needs, dtype=x.dtype)
        return torch.cat([torch.zeros(len(x), 1), 30 * (score - needs)], dim=1)


def _toy() -> tuple[_WarpReader, list[Trigger]]:
    planted = [random_warp_trigger(s, strength=0.5, image_size=SIDE, channels=2, n_classes=2) for s in (1, 2, 3)]
    return _WarpReader([t.field for t in planted], [0.4, 1.6, 2.4]).eval(), planted


def test_the_toy_reads_its_planted_warps() -> None:
    model, planted = _toy()
    x = _ramps(64)
    assert bool((model(x).argmax(-1) == 0).all())
    for k, t in enumerate(planted, start=1):
        scaled = Trigger(t.mask, t.pattern, k, "warp", t.field * (0.5, 1.9, 2.7)[k - 1])
        assert bool((model(stamp(x, scaled)).argmax(-1) == k).all())


def test_warp_parametrisation_follows_the_protocol() -> None:
    p = parametrisation("warp")
    assert isinstance(p, WarpParametrisation) and isinstance(p, Parametrisation) and p.family == "warp"
    params = p.init((2, SIDE, SIDE), torch.Generator().manual_seed(0))
    assert [tuple(t.shape) for t in params] == [(2, 4, 4)]
    control = params[0].requires_grad_(True)
    t = p.trigger([control], 1, (0.0, 1.0))
    assert t.family == "warp" and tuple(t.pattern.shape) == (2, SIDE, SIDE)
    assert torch.equal(t.mask, torch.ones(SIDE, SIDE))
    # bicubic with align_corners=True puts the 4 control points on pixels 0, 11/3, 22/3, 11: the corners exactly
    torch.testing.assert_close(t.field[:, ::11, ::11], control[:, ::3, ::3], atol=1e-6, rtol=0)  # float32 resampling
    size = p.size(t)
    torch.testing.assert_close(size, torch.linalg.vector_norm(t.field, dim=0).sum())
    (grad,) = torch.autograd.grad(size, control)
    assert float(grad.abs().sum()) > 0
    with pytest.raises(InputError, match="init"):
        WarpParametrisation().trigger([control], 1, (0.0, 1.0))
    with pytest.raises(InputError, match="smaller grid"):
        WarpParametrisation(grid=SIDE + 1).init((1, SIDE, SIDE), torch.Generator())


def test_field_correlation_closed_forms() -> None:
    t = random_warp_trigger(0, image_size=SIDE)
    assert field_correlation(t, t) == pytest.approx(1.0, abs=1e-12)
    flipped = Trigger(t.mask, t.pattern, 0, "warp", -0.5 * t.field)
    assert field_correlation(flipped, t) == pytest.approx(-1.0, abs=1e-12)
    other = random_warp_trigger(7, image_size=SIDE)
    assert abs(field_correlation(other, t)) < 0.9
    with pytest.raises(InputError, match="two warp triggers"):
        field_correlation(Trigger(t.mask, t.pattern, 0, "blend"), t)


def test_the_engine_recovers_the_planted_warp_of_the_toy() -> None:
    model, planted = _toy()
    x = _ramps(64)
    # every clean input is class 0, so the scan's per-class searches are those of classes 1-3
    found = [reverse_engineer_trigger(model, x, k, family="warp", steps=150, seed=k) for k in (1, 2, 3)]
    sizes = [f.mask_l1 for f in found]
    assert min(range(3), key=lambda i: sizes[i]) == 0  # class 1 needs 0.4 x template 1, class 2 1.6 x template 2
    assert sizes[1] / sizes[0] > 2.0 and all(f.attack_success >= 0.95 for f in found)
    target = found[0]
    assert target.trigger.family == "warp" and target.trigger.target == 1
    # the size is the summed displacement: 144 pixels x the mean displacement
    assert target.mask_l1 == pytest.approx(SIDE * SIDE * target.trigger.mean_displacement, rel=1e-5)
    assert field_correlation(target.trigger, planted[0]) > 0.4  # measured 0.53; unrelated warps: about 0
    # the warp that was found does what it claims on fresh inputs
    assert float((model(stamp(_ramps(64, seed=1), target.trigger)).argmax(-1) == 1).float().mean()) >= 0.9


def test_reverse_engineer_trigger_runs_the_warp_family() -> None:
    model, _ = _toy()
    found = reverse_engineer_trigger(model, _ramps(32), 2, family="warp", steps=40, patience=None, seed=1)
    assert found.trigger.family == "warp" and found.trigger.field is not None and found.steps_run == 40
