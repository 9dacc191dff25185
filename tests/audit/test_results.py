"""Every audit result has to_frame(), plot() returning a matplotlib Figure, and _repr_html_ (DESIGN §3)."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from models import TinyCNN, images

from seethrough import Site
from seethrough.audit import design_attack, repair_by_unlearning, scan, trigger_units
from seethrough.evidence import Trigger


def test_audit_results_plot_and_tabulate() -> None:
    model, x = TinyCNN().eval(), images(16)
    mask = torch.zeros(6, 6)
    mask[1:3, 1:3] = 1.0
    trigger = Trigger(mask, torch.ones(1, 6, 6), 1, "patch")
    result = scan(model, x, steps=10, n_controls=20)
    units = trigger_units(model, x, trigger, site="act", k=2, n_controls=3)
    attack = design_attack(model, x, x, Site("act"), [0, 1], trigger, steps=3, n_controls=3)
    repair = repair_by_unlearning(model, x, torch.arange(16) % 3, trigger, epochs=1)
    # rows: 3 classes x 3 families (the default for images: patch, blend, warp), 3 classes, 4 units,
    # designed + 3 controls, before/after
    assert result.settings["families"] == ["patch", "blend", "warp"]
    for found, rows in ((result, 9), (result.scan, 3), (units, 4), (attack, 4), (repair, 2), (trigger, 1),
                        (result.scan.triggers[0], 1)):
        assert len(found.to_frame()) == rows, type(found).__name__
        assert isinstance(found.plot(), Figure)
        assert "<table" in found._repr_html_()
