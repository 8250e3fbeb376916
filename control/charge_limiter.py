"""Charge limiter: the BMS's limits, SOC and temperature turned into bounds on the battery setpoint.

Sign convention as everywhere here: battery power > 0 discharges. Each cycle it adds
`battery_power <= discharge limit` and `battery_power >= -charge limit`, where the limits are the BMS's
(`max_charge_power`, `max_discharge_power`) narrowed by: SOC at or below `soc_min` (no discharge) or at
or above `soc_max` (no charge), and a linear derating of both between `derate_from_c` and `stop_at_c` of
`temperature`. An input it needs that is Bad or stale allows nothing (both bounds 0): limits it cannot
see are limits it must assume closed.
"""

from __future__ import annotations

from gateway.control.controller import LIMITS, Controller, CycleContext


class ChargeLimiter(Controller):
    name = "ChargeLimiter"
    priority = LIMITS
    inputs = ("max_charge_power", "max_discharge_power", "soc", "temperature")
    setpoints = ("battery_power",)

    def limits(self, ctx: CycleContext) -> tuple[float, float, str]:
        """(charge limit, discharge limit, why) in kW, both >= 0."""
        p = self.params
        chg = ctx.number("max_charge_power")
        dis = ctx.number("max_discharge_power")
        if chg is None or dis is None:
            return 0.0, 0.0, "BMS limits not usable"
        chg, dis = max(chg, 0.0), max(dis, 0.0)
        why = "BMS limits"
        if "soc" in ctx.signals:
            soc = ctx.number("soc")
            if soc is None:
                return 0.0, 0.0, "SOC not usable"
            if soc <= float(p.get("soc_min", 0.0)):
                dis, why = 0.0, f"SOC {soc:g} % at or below the minimum"
            if soc >= float(p.get("soc_max", 100.0)):
                chg, why = 0.0, f"SOC {soc:g} % at or above the maximum"
        if "temperature" in ctx.signals and "stop_at_c" in p:
            t = ctx.number("temperature")
            if t is None:
                return 0.0, 0.0, "temperature not usable"
            start, stop = float(p.get("derate_from_c", p["stop_at_c"])), float(p["stop_at_c"])
            factor = 1.0 if t <= start else 0.0 if t >= stop else (stop - t) / (stop - start)
            if factor < 1.0:
                chg, dis, why = chg * factor, dis * factor, f"derated to {factor:.0%} at {t:g} °C"
        return chg, dis, why

    def run(self, ctx: CycleContext) -> None:
        chg, dis, why = self.limits(ctx)
        ctx.constrain("battery_power", "<=", dis, why)
        ctx.constrain("battery_power", ">=", -chg, why)
