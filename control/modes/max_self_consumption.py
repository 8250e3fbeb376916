"""MaxSelfConsumption: grid power to zero with a PI(D), keeping a SOC reserve for backup.

The PID's error is the grid power (> 0 importing: discharge more). It starts from the battery's present
output (bumpless) and follows what the plant was actually given (a higher-priority bound may have
clamped it), so it never winds up against the BMS limits. Below `reserve_soc` it does not discharge.
A grid meter that is Bad or stale idles the battery: the mode does not steer blind. Power a grid-support
service adds is taken out of the grid power it regulates, so the service's response reaches the grid.
"""

from __future__ import annotations

import math

from gateway.control.modes import CycleContext, Mode, Param, register
from gateway.control.pid import PID


@register
class MaxSelfConsumption(Mode):
    name = "MaxSelfConsumption"
    code = 2
    inputs = ("grid_power", "soc")
    setpoints = ("battery_power",)
    PARAMETERS = (
        Param("reserve_soc", 20.0, "%", 0.0, 100.0, "SOC kept for backup: no discharge at or below it."),
        Param("kp", 0.3, "", 0.0, 10.0, "Proportional gain (kW per kW of grid power)."),
        Param("ki", 0.6, "", 0.0, 10.0, "Integral gain (kW per kW·s)."),
    )

    def __init__(self, params: dict | None = None) -> None:
        super().__init__(params)
        self.pid = PID(self.param("kp"), self.param("ki"))

    def activate(self, ctx: CycleContext) -> None:
        present = ctx.output("battery_power")
        self.pid.reset(present if present is not None else 0.0)

    def run(self, ctx: CycleContext) -> None:
        grid = ctx.number("grid_power")
        if grid is None:
            ctx.constrain("battery_power", "=", 0.0, "grid power not usable")
            self.pid.reset(0.0)
            return
        self.pid.kp, self.pid.ki = self.param("kp"), self.param("ki")
        soc = ctx.number("soc")
        may_discharge = soc is not None and soc > self.param("reserve_soc")
        self.pid.set_limits(-math.inf, math.inf if may_discharge else 0.0)
        applied = ctx.output("battery_power")
        if applied is not None:
            self.pid.track(applied)
        # The grid without what a grid service gives: that power is the grid's, not the site's to cancel.
        grid += ctx.supported.get("battery_power", 0.0)
        out = self.pid.update(0.0, -grid, ctx.dt)  # error = grid power
        ctx.constrain("battery_power", "=", out, f"grid {grid:g} kW")
