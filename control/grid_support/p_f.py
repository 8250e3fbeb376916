"""P(f): active power against over- and under-frequency with a droop (LFSM-O / LFSM-U as grid codes ask).

Above `f_over` the battery charges `rated_kw` / (`droop_pct` % of 50 Hz) per Hz above it; below
`f_under` it discharges the same way; both limited to `rated_kw`. Between the two it gives nothing.
A frequency that is Bad or stale gives no response. SOC endurance as every service (control/grid_support).
"""

from __future__ import annotations

from gateway.control.grid_support import ENDURANCE, CycleContext, GridSupport, Param, register

NOMINAL_HZ = 50.0


@register
class PowerFrequency(GridSupport):
    name = "PowerFrequency"
    inputs = ("frequency", "soc")
    PARAMETERS = (
        Param("rated_kw", 0.0, "kW", 0.0, 1e6, "Power the droop refers to, and the most it gives."),
        Param("droop_pct", 5.0, "%", 0.1, 100.0, "Frequency change (% of 50 Hz) for the rated power."),
        Param("f_over", 50.2, "Hz", 45.0, 55.0, "Over-frequency response starts above this."),
        Param("f_under", 49.8, "Hz", 45.0, 55.0, "Under-frequency response starts below this."),
        *ENDURANCE,
    )

    def __init__(self, params: dict | None = None) -> None:
        super().__init__(params)
        if not self.param("f_under") <= self.param("f_over"):
            raise ValueError("grid support PowerFrequency: needs f_under <= f_over")

    def response(self, f: float) -> float:
        rated = self.param("rated_kw")
        per_hz = rated / (self.param("droop_pct") / 100.0 * NOMINAL_HZ)
        if f > self.param("f_over"):
            return -min(per_hz * (f - self.param("f_over")), rated)
        if f < self.param("f_under"):
            return min(per_hz * (self.param("f_under") - f), rated)
        return 0.0

    def full_power(self) -> tuple[float, float]:
        return self.param("rated_kw"), self.param("rated_kw")

    def run(self, ctx: CycleContext) -> None:
        f = ctx.number("frequency")
        if f is not None:
            ctx.support("battery_power", self.endurance(ctx, self.response(f)))
