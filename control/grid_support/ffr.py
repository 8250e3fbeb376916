"""FFR, fast frequency reserve: full power at once when the frequency falls to the activation level.

Armed, it activates when the frequency is at or below `f_activation`: the whole `capacity` from that
cycle on (the engine adds it outside the ramp limit, so full power is reached within one control cycle
and the battery's own response, inside the 0.7..1.3 s the Nordic FFR asks). It holds for at least
`hold_s` and as long as the frequency stays at or below the activation level, then deactivates
linearly over `deactivation_s`, then stays unarmed for `recovery_s` before it may activate again.
A frequency that is Bad or stale neither activates nor holds it (the deactivation then starts).
SOC endurance as every service (control/grid_support).
"""

from __future__ import annotations

from datetime import datetime

from gateway.control.grid_support import ENDURANCE, CycleContext, GridSupport, Param, register

ARMED, ACTIVE, DEACTIVATING, RECOVERING = "armed", "active", "deactivating", "recovering"


@register
class Ffr(GridSupport):
    name = "Ffr"
    inputs = ("frequency", "soc")
    PARAMETERS = (
        Param("capacity", 0.0, "kW", 0.0, 1e6, "Discharge while active."),
        Param("f_activation", 49.7, "Hz", 45.0, 55.0, "Activate at or below this frequency."),
        Param("hold_s", 5.0, "s", 0.0, 3600.0, "Shortest support duration."),
        Param("deactivation_s", 5.0, "s", 0.0, 3600.0, "Linear ramp from full power to zero after the hold."),
        Param("recovery_s", 900.0, "s", 0.0, 86400.0, "Unarmed after a deactivation."),
        *ENDURANCE,
    )

    def __init__(self, params: dict | None = None) -> None:
        super().__init__(params)
        self.state = ARMED
        self.since: datetime | None = None  # when the present state began

    def _go(self, state: str, now: datetime) -> None:
        self.state, self.since = state, now

    def power(self, f: float | None, now: datetime) -> float:
        """The service's power now (> 0 discharging), stepping its state machine."""
        low = f is not None and f <= self.param("f_activation")
        elapsed = (now - self.since).total_seconds() if self.since is not None else 0.0
        if self.state == ARMED and low:
            self._go(ACTIVE, now)
            elapsed = 0.0
        if self.state == ACTIVE and not low and elapsed >= self.param("hold_s"):
            self._go(DEACTIVATING, now)
            elapsed = 0.0
        if self.state == DEACTIVATING:
            span = self.param("deactivation_s")
            if elapsed >= span:
                self._go(RECOVERING, now)
                elapsed = 0.0
            else:
                return self.param("capacity") * (1.0 - elapsed / span)
        if self.state == RECOVERING and elapsed >= self.param("recovery_s"):
            self._go(ARMED, now)
            return self.power(f, now)
        return self.param("capacity") if self.state == ACTIVE else 0.0

    def full_power(self) -> tuple[float, float]:
        return self.param("capacity"), 0.0

    def run(self, ctx: CycleContext) -> None:
        ctx.support("battery_power", self.endurance(ctx, self.power(ctx.number("frequency"), ctx.now)))
