"""Q(U) volt-var: reactive power against the grid voltage, on the site's `reactive_power` setpoint.

The curve in per unit of `u_nominal_v`: `q_max_kvar` injected (over-excited, > 0) at and below `v1`,
falling linearly to 0 at `v2`; nothing between `v2` and `v3`; absorbing linearly from `v3` to
`q_max_kvar` at and beyond `v4`. With `time_constant_s` > 0 the response follows the curve through a
first-order lag (grid codes ask for a settling time rather than a jump, so that several plants on one
feeder do not hunt). A voltage that is Bad or stale gives no response. Reactive power costs no energy:
no SOC endurance.
"""

from __future__ import annotations

from gateway.control.grid_support import CycleContext, GridSupport, Param, register

SETPOINT = "reactive_power"


@register
class VoltVar(GridSupport):
    name = "VoltVar"
    inputs = ("voltage",)
    setpoints = (SETPOINT,)
    PARAMETERS = (
        Param("q_max_kvar", 0.0, "kvar", 0.0, 1e6, "Reactive power at and beyond the curve's ends."),
        Param("u_nominal_v", 230.0, "V", 1.0, 1e6, "The voltage the curve's per-unit points refer to."),
        Param("v1", 0.92, "", 0.5, 1.5, "Full injection at and below (per unit)."),
        Param("v2", 0.98, "", 0.5, 1.5, "Injection ends (per unit)."),
        Param("v3", 1.02, "", 0.5, 1.5, "Absorption starts (per unit)."),
        Param("v4", 1.08, "", 0.5, 1.5, "Full absorption at and above (per unit)."),
        Param("time_constant_s", 0.0, "s", 0.0, 600.0, "First-order lag of the response (0: none)."),
    )

    def __init__(self, params: dict | None = None) -> None:
        super().__init__(params)
        if not self.param("v1") < self.param("v2") <= self.param("v3") < self.param("v4"):
            raise ValueError("grid support VoltVar: needs v1 < v2 <= v3 < v4")
        self.q = 0.0

    def curve(self, u: float) -> float:
        """kvar at voltage `u` (V), > 0 injecting."""
        pu, q = u / self.param("u_nominal_v"), self.param("q_max_kvar")
        v1, v2, v3, v4 = (self.param(k) for k in ("v1", "v2", "v3", "v4"))
        if pu <= v1:
            return q
        if pu < v2:
            return q * (v2 - pu) / (v2 - v1)
        if pu <= v3:
            return 0.0
        if pu < v4:
            return -q * (pu - v3) / (v4 - v3)
        return -q

    def run(self, ctx: CycleContext) -> None:
        u = ctx.number("voltage")
        target = 0.0 if u is None else self.curve(u)
        tau = self.param("time_constant_s")
        self.q = target if tau <= 0 else self.q + (target - self.q) * min(1.0, ctx.dt / tau)
        ctx.support(SETPOINT, self.q)
