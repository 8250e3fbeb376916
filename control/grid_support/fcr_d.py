"""FCR-D up and down: a continuous linear droop on the grid frequency, full activation at the band's end.

Up (under-frequency, discharge): 0 at `f_up_start` (49.9 Hz), rising linearly to `capacity_up` at
`f_up_full` (49.5 Hz) and held there below it. Down (over-frequency, charge): 0 at `f_down_start`
(50.1 Hz), to `capacity_down` of charge at `f_down_full` (50.5 Hz). Between the two starts it gives
nothing. Continuous rather than a threshold, so the response follows the frequency as the market's
prequalification asks (a proportional response over the whole band). A frequency that is Bad or stale
gives no response. SOC endurance as every service (control/grid_support).
"""

from __future__ import annotations

from gateway.control.grid_support import ENDURANCE, CycleContext, GridSupport, Param, register


def droop(f: float, start: float, full: float) -> float:
    """0 at `start`, 1 at `full` and beyond, linear between (either direction)."""
    x = (f - start) / (full - start)
    return 0.0 if x <= 0 else 1.0 if x >= 1 else x


@register
class FcrD(GridSupport):
    name = "FcrD"
    inputs = ("frequency", "soc")
    PARAMETERS = (
        Param("capacity_up", 0.0, "kW", 0.0, 1e6, "Discharge at full up-activation (0: no FCR-D up)."),
        Param("capacity_down", 0.0, "kW", 0.0, 1e6, "Charge at full down-activation (0: no FCR-D down)."),
        Param("f_up_start", 49.9, "Hz", 45.0, 55.0, "Up-activation starts below this frequency."),
        Param("f_up_full", 49.5, "Hz", 45.0, 55.0, "Full up-activation at and below this frequency."),
        Param("f_down_start", 50.1, "Hz", 45.0, 55.0, "Down-activation starts above this frequency."),
        Param("f_down_full", 50.5, "Hz", 45.0, 55.0, "Full down-activation at and above this frequency."),
        *ENDURANCE,
    )

    def __init__(self, params: dict | None = None) -> None:
        super().__init__(params)
        if not self.param("f_up_full") < self.param("f_up_start") <= self.param("f_down_start") \
                < self.param("f_down_full"):
            raise ValueError("grid support FcrD: needs f_up_full < f_up_start <= f_down_start < f_down_full")

    def response(self, f: float) -> float:
        """kW at frequency `f` (> 0 discharging), before the SOC endurance."""
        up = self.param("capacity_up") * droop(f, self.param("f_up_start"), self.param("f_up_full"))
        down = self.param("capacity_down") * droop(f, self.param("f_down_start"), self.param("f_down_full"))
        return up - down

    def full_power(self) -> tuple[float, float]:
        return self.param("capacity_up"), self.param("capacity_down")

    def run(self, ctx: CycleContext) -> None:
        f = ctx.number("frequency")
        if f is None:
            return
        ctx.support("battery_power", self.endurance(ctx, self.response(f)))
