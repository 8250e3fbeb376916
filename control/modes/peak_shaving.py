"""PeakShaving: keep grid import below `import_limit` and export below `export_limit`.

The site's own net demand is the grid power plus what the battery gives now (measured, or the last
output when no measurement is bound); the battery covers what is beyond the limits and idles inside
them. Computing from the net demand, not stepping on the grid error, answers a load step in one cycle.
"""

from __future__ import annotations

from gateway.control.modes import CycleContext, Mode, Param, register


@register
class PeakShaving(Mode):
    name = "PeakShaving"
    code = 3
    inputs = ("grid_power", "battery_power")
    setpoints = ("battery_power",)
    PARAMETERS = (
        Param("import_limit", 100.0, "kW", 0.0, 100000.0, "Most grid import allowed."),
        Param("export_limit", 100.0, "kW", 0.0, 100000.0, "Most grid export allowed."),
    )

    def run(self, ctx: CycleContext) -> None:
        grid = ctx.number("grid_power")
        if grid is None:
            ctx.constrain("battery_power", "=", 0.0, "grid power not usable")
            return
        battery = ctx.number("battery_power") if "battery_power" in ctx.signals else None
        if battery is None:  # what it was given, with what a grid service added
            battery = (ctx.output("battery_power") or 0.0) + ctx.supported.get("battery_power", 0.0)
        net = grid + battery
        import_limit, export_limit = self.param("import_limit"), self.param("export_limit")
        if net > import_limit:
            target, why = net - import_limit, f"import {net:g} kW over the limit {import_limit:g} kW"
        elif net < -export_limit:
            target, why = net + export_limit, f"export {-net:g} kW over the limit {export_limit:g} kW"
        else:
            target, why = 0.0, "inside the limits"
        ctx.constrain("battery_power", "=", target, why)
