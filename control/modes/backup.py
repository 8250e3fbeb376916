"""Backup (grid forming): keep the battery ready, island the site when the grid is lost, reconnect when it is back.

On the grid the battery charges at `charge_power` up to `soc_target` (the energy kept for an outage)
and idles there. The grid counts as lost when the meter's `frequency` leaves [`f_min`, `f_max`] or its
`grid_voltage` leaves [`v_min`, `v_max`] (each checked when the site binds it). Then, in that cycle,
the grid breaker opens (`grid_connect` 0) and the inverter forms the grid (`grid_forming` 1): it sets
voltage and frequency itself and its power follows the load, so the mode asks no active power of it
(`battery_power` 0, the grid-forming inverter's nominal point). Load priority: while islanded at or
below `shed_soc` the non-priority loads are shed (`load_shed` 1), so the priority loads last longer
(100: always shed while islanded; 0: never).

Reconnection waits until the grid has been within its limits for `reconnect_s` without a break; then
the breaker closes while the inverter still forms the grid (synchronised to the grid it measures) and
the shed loads come back, and one cycle later the inverter follows the grid again (`grid_forming` 0).
A meter that is Bad or stale says nothing about the grid: the mode keeps what it is doing (islanded
stays islanded; on the grid it does not island blind). Test mode: `test` 1 islands the site as a real
grid loss would (an operator's backup test); back to 0, the normal reconnection follows.

The setpoints are the site's roles `grid_connect`, `grid_forming`, `load_shed` and `battery_power`;
the mode steers those the site binds. With a Backup mode the site's `grid_loss` interlock must allow
islanding (`island_allowed: true`), otherwise the interlock trips on the same grid loss first.
"""

from __future__ import annotations

from datetime import datetime

from gateway.control.modes import CycleContext, Mode, Param, register

ON_GRID, ISLANDED, RECONNECTING = "on grid", "islanded", "reconnecting"


@register
class Backup(Mode):
    name = "Backup"
    code = 9
    inputs = ("frequency", "grid_voltage", "soc")
    setpoints = ("battery_power", "grid_connect", "grid_forming", "load_shed")
    PARAMETERS = (
        Param("f_min", 47.5, "Hz", 40.0, 70.0, "Grid lost below this frequency."),
        Param("f_max", 51.5, "Hz", 40.0, 70.0, "Grid lost above this frequency."),
        Param("v_min", 195.5, "V", 0.0, 1e6, "Grid lost below this voltage."),
        Param("v_max", 264.5, "V", 0.0, 1e6, "Grid lost above this voltage."),
        Param("reconnect_s", 60.0, "s", 0.0, 86400.0, "Grid within its limits this long before reconnecting."),
        Param("charge_power", 20.0, "kW", 0.0, 100000.0, "Charge power on the grid, up to soc_target."),
        Param("soc_target", 100.0, "%", 0.0, 100.0, "SOC kept for an outage."),
        Param("shed_soc", 30.0, "%", 0.0, 100.0, "Islanded at or below this SOC: non-priority loads shed."),
        Param("test", 0.0, "", 0.0, 1.0, "1: island as on a grid loss (a backup test); 0: normal operation."),
    )

    def __init__(self, params: dict | None = None) -> None:
        super().__init__(params)
        self.state = ON_GRID
        self.stable_since: datetime | None = None  # the grid within its limits since, while islanded

    def activate(self, ctx: CycleContext) -> None:
        """Starting (again): from the grid; a lost grid islands in this same cycle."""
        self.state, self.stable_since = ON_GRID, None

    def grid(self, ctx: CycleContext) -> tuple[bool | None, str]:
        """(grid healthy, why): None when the meter cannot say."""
        if self.param("test") >= 0.5:
            return False, "backup test"
        checks = (("frequency", "f_min", "f_max", "Hz"), ("grid_voltage", "v_min", "v_max", "V"))
        bound = [c for c in checks if c[0] in ctx.signals]
        if not bound:
            return None, "no grid measurement bound"
        for role, low, high, unit in bound:
            x = ctx.number(role)
            if x is None:
                return None, f"{role} not usable"
            if not self.param(low) <= x <= self.param(high):
                return False, f"grid {role} {x:g} {unit} outside {self.param(low):g}..{self.param(high):g} {unit}"
        return True, "grid within its limits"

    def step(self, ctx: CycleContext) -> str:
        """Advance the on-grid / islanded / reconnecting state; returns why it is where it is."""
        healthy, why = self.grid(ctx)
        if healthy is None:
            self.stable_since = None  # a grid it could not see was not seen stable
            return f"{why}: {self.state} kept"
        if self.state == RECONNECTING:
            self.state = ON_GRID if healthy else ISLANDED
        if not healthy:
            if self.state == ON_GRID:
                self.state = ISLANDED
            self.stable_since = None
            return why
        if self.state == ISLANDED:
            if self.stable_since is None:
                self.stable_since = ctx.now
            stable = (ctx.now - self.stable_since).total_seconds()
            if stable < self.param("reconnect_s"):
                return f"grid back for {stable:g} s of {self.param('reconnect_s'):g} s"
            self.state, self.stable_since = RECONNECTING, None
            return f"grid stable for {stable:g} s: reconnecting"
        return why

    def run(self, ctx: CycleContext) -> None:
        why = self.step(ctx)
        soc = ctx.number("soc")
        if self.state == ON_GRID:
            ctx.constrain("grid_connect", "=", 1.0, why)
            ctx.constrain("grid_forming", "=", 0.0, why)
            ctx.constrain("load_shed", "=", 0.0, why)
            target = self.param("soc_target")
            if soc is not None and soc < target:
                ctx.constrain("battery_power", "=", -self.param("charge_power"), f"charging to {target:g} %")
            else:
                ctx.constrain("battery_power", "=", 0.0, "SOC at the backup target" if soc is not None
                              else "SOC not usable")
            return
        # Islanded, or closing the breaker while still forming the grid (synchronised) for one cycle.
        ctx.constrain("grid_connect", "=", 1.0 if self.state == RECONNECTING else 0.0, why)
        ctx.constrain("grid_forming", "=", 1.0, why)
        shed = soc is None or soc <= self.param("shed_soc")
        ctx.constrain("load_shed", "=", 1.0 if shed and self.state == ISLANDED else 0.0,
                      f"SOC {soc:g} % islanded" if soc is not None else "SOC not usable")
        ctx.constrain("battery_power", "=", 0.0, "grid forming: the inverter's power follows the load")
