"""LoadMatching: the battery delivers what the site's load draws (the `load_power` sub-meter), never charging.

Feed-forward on the measured load rather than a PID on the grid: the battery's output follows the load
in one cycle, and PV the site makes is left to the grid (exported) instead of charging the battery,
which is what sets it apart from MaxSelfConsumption. At most `max_power`; at or below `reserve_soc` it
idles (the reserve is kept for backup). A load meter that is Bad or stale idles the battery.
"""

from __future__ import annotations

from gateway.control.modes import CycleContext, Mode, Param, register


@register
class LoadMatching(Mode):
    name = "LoadMatching"
    code = 6
    inputs = ("load_power", "soc")
    setpoints = ("battery_power",)
    PARAMETERS = (
        Param("reserve_soc", 20.0, "%", 0.0, 100.0, "SOC kept for backup: no discharge at or below it."),
        Param("max_power", 100000.0, "kW", 0.0, 100000.0, "Most the battery gives to the load."),
    )

    def run(self, ctx: CycleContext) -> None:
        load = ctx.number("load_power")
        soc = ctx.number("soc")
        if load is None:
            ctx.constrain("battery_power", "=", 0.0, "load power not usable")
        elif soc is None or soc <= self.param("reserve_soc"):
            ctx.constrain("battery_power", "=", 0.0, "SOC at or below the reserve" if soc is not None
                          else "SOC not usable")
        else:
            target = min(max(load, 0.0), self.param("max_power"))
            ctx.constrain("battery_power", "=", target, f"load {load:g} kW")
