"""PID controller with output limits, anti-windup, derivative on measurement and bumpless start.

- Anti-windup by back-calculation: when the output is clamped (by its own limits, or by what the plant
  was actually given: `track`), the integral is set so the unclamped output equals the applied one, so
  the controller leaves a limit as soon as the error changes sign instead of unwinding for minutes.
- Derivative on the measurement, not the error: a setpoint step gives no derivative kick.
- Bumpless: `reset(output)` starts the integral so the first output equals the present one.

Own code rather than a library (simple-pid): it has no back-calculation from an externally applied
output, which the arbitration needs (a higher-priority bound may clamp what the PID asked for).
"""

from __future__ import annotations

import math


class PID:
    def __init__(self, kp: float, ki: float = 0.0, kd: float = 0.0, low: float = -math.inf,
                 high: float = math.inf) -> None:
        self.kp, self.ki, self.kd = kp, ki, kd
        self.low, self.high = low, high
        self.integral = 0.0
        self.output = 0.0
        self._last_measurement: float | None = None

    def set_limits(self, low: float, high: float) -> None:
        if low > high:
            raise ValueError(f"PID limits reversed: {low} > {high}")
        self.low, self.high = low, high

    def reset(self, output: float = 0.0, measurement: float | None = None) -> None:
        """Start from `output` (bumpless): integral = output, no derivative history."""
        self.output = min(max(output, self.low), self.high)
        self.integral = self.output
        self._last_measurement = measurement

    def update(self, setpoint: float, measurement: float, dt: float) -> float:
        error = setpoint - measurement
        derivative = 0.0
        if self.kd and self._last_measurement is not None and dt > 0:
            derivative = -self.kd * (measurement - self._last_measurement) / dt
        self._last_measurement = measurement
        self.integral += self.ki * error * dt
        raw = self.kp * error + self.integral + derivative
        self.output = min(max(raw, self.low), self.high)
        # Clamped: back-calculate the integral (anti-windup). A controller without integral action has
        # nothing to wind up; its integral is only the bias a bumpless start gave it, and stays.
        if raw != self.output and self.ki:
            self.integral += self.output - raw
        return self.output

    def track(self, applied: float) -> None:
        """The plant got `applied` instead of `self.output`: move the integral by the difference."""
        if math.isfinite(applied) and applied != self.output:
            self.integral += applied - self.output
            self.output = applied
