"""Ramp limiter: how fast an output may move, in units per second (0 or inf: no limit)."""

from __future__ import annotations

import math


class RampLimiter:
    def __init__(self, rate_per_s: float = math.inf) -> None:
        if rate_per_s < 0 or math.isnan(rate_per_s):
            raise ValueError(f"a ramp rate must be >= 0, got {rate_per_s!r}")
        self.rate_per_s = rate_per_s if rate_per_s > 0 else math.inf

    def step(self, previous: float | None, target: float, dt: float) -> float:
        """The output after `dt` seconds moving from `previous` towards `target`."""
        if previous is None or math.isinf(self.rate_per_s):
            return target
        most = self.rate_per_s * max(dt, 0.0)
        return previous + min(max(target - previous, -most), most)
