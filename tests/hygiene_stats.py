"""Hygiene exemptions for the streaming statistics and the sharded pass (issue #9): they take no model.

Their model-facing users (`top_exemplars`, `activation_stats`, `dissect`, `StreamingCKA`'s callers)
are in the table, sharded cases included (tests/hygiene_exemplars.py).
"""

from __future__ import annotations

from typing import Any

from hygiene import Case

from seethrough import core
from seethrough.bench import executors

CASES: list[Case] = []

EXEMPT: dict[Any, str] = {
    core.Mergeable: "a typing protocol",
    core.RunningBlockCovariance: "a streaming statistic over tensors; takes no model",
    core.RunningRange: "a streaming statistic over tensors; takes no model",
    core.Histogram: "one pass of a streaming statistic over tensors; takes no model",
    core.OrderStatistics: "a streaming statistic over tensors; takes no model",
    core.QuantileRanks: "a value object (ranks of order statistics)",
    core.quantile_ranks: "arithmetic on probabilities; takes no model",
    core.exact_quantiles: "a statistic over streamed tensors; takes no model",
    core.shards: "slices inputs; takes no model",
    core.sharded_pass: "runs a caller's function over shards; takes no model (its users are in the table)",
    executors.ray_map: "runs a caller's function as Ray tasks; takes no model",
}
