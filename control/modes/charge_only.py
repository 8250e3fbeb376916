"""ChargeOnly: charge at `charge_power` until `soc_target`, optionally only inside a daily time window.

The window is `start_hour`..`end_hour` in UTC hours of the gateway's clock (it may wrap midnight);
start = end means all day. Outside the window or at the target the battery idles.
"""

from __future__ import annotations

from gateway.control.modes import CycleContext, Mode, Param, register


@register
class ChargeOnly(Mode):
    name = "ChargeOnly"
    code = 4
    inputs = ("soc",)
    setpoints = ("battery_power",)
    PARAMETERS = (
        Param("soc_target", 90.0, "%", 0.0, 100.0, "Charge until this SOC."),
        Param("charge_power", 50.0, "kW", 0.0, 100000.0, "Charge power."),
        Param("start_hour", 0.0, "h", 0.0, 24.0, "Window start (UTC hour)."),
        Param("end_hour", 0.0, "h", 0.0, 24.0, "Window end (UTC hour); equal to the start: all day."),
    )

    def in_window(self, hour: float) -> bool:
        start, end = self.param("start_hour"), self.param("end_hour")
        if start == end:
            return True
        return start <= hour < end if start < end else hour >= start or hour < end

    def run(self, ctx: CycleContext) -> None:
        soc = ctx.number("soc")
        hour = ctx.now.hour + ctx.now.minute / 60 + ctx.now.second / 3600
        if soc is None:
            ctx.constrain("battery_power", "=", 0.0, "SOC not usable")
        elif not self.in_window(hour):
            ctx.constrain("battery_power", "=", 0.0, "outside the charge window")
        elif soc >= self.param("soc_target"):
            ctx.constrain("battery_power", "=", 0.0, f"SOC {soc:g} % reached the target")
        else:
            target = self.param("soc_target")
            ctx.constrain("battery_power", "=", -self.param("charge_power"), f"charging to {target:g} %")
