"""The composite model score used to pick an agent's best checkpoint and to rank runs.

``score = sharpe - DRAWDOWN_WEIGHT * |max_drawdown|``: the annualised Sharpe ratio (0 when the
equity never moves, e.g. a flat policy) minus 10 x the maximum drawdown as a fraction, so a 10 %
drawdown costs one Sharpe point. In Sharpe units; higher is better. It penalises the tail risk a
Sharpe ratio alone hides, without rewarding a policy that never trades.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

DRAWDOWN_WEIGHT = 10.0


def composite_score(metrics: Mapping[str, float]) -> float:
    """The score of one metrics dict (floats, as :func:`envs.metrics.metrics_to_floats` gives)."""
    sharpe = float(metrics["sharpe"])
    sharpe = sharpe if math.isfinite(sharpe) else 0.0
    drawdown = abs(float(metrics["max_drawdown"]))
    drawdown = drawdown if math.isfinite(drawdown) else 0.0
    return sharpe - DRAWDOWN_WEIGHT * drawdown
