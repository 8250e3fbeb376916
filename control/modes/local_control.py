"""LocalControl: the battery follows a local operator's setpoint while the operator's panel shows life.

The operator (a local HMI, a panel on the Modbus facade) writes `local_power` (kW, > 0 discharging) and
must change `local_heartbeat` (any value: a counter, a toggling bit) at least every
`heartbeat_timeout_s`. A heartbeat that stops changing, or is Bad, hands the site over to its fallback
mode (`fallback: {mode: ...}` in the control section), as ExternalControl does when its SCADA's
watchdog expires; without a fallback mode the battery idles. The setpoint itself holds until the
operator changes it, so its age does not matter (the heartbeat says whether someone is there); a Bad
setpoint idles the battery. When the site binds `local_reactive_power` and a `reactive_power` setpoint,
the reactive power follows it too.
"""

from __future__ import annotations

import math
from datetime import datetime

from gateway.control.modes import CycleContext, Mode, Param, register


@register
class LocalControl(Mode):
    name = "LocalControl"
    code = 8
    inputs = ("local_power", "local_heartbeat", "local_reactive_power")
    setpoints = ("battery_power", "reactive_power")
    PARAMETERS = (
        Param("heartbeat_timeout_s", 10.0, "s", 0.1, 3600.0, "The heartbeat must change within this time."),
    )

    def __init__(self, params: dict | None = None) -> None:
        super().__init__(params)
        self._beat: object = None
        self._beat_at: datetime | None = None  # when the heartbeat last changed (or the mode started)

    def activate(self, ctx: CycleContext) -> None:
        self._beat, self._beat_at = ctx.input("local_heartbeat").value, ctx.now  # one timeout to show life

    def missed(self, ctx: CycleContext) -> str:
        """Why the operator counts as gone ("" while the heartbeat keeps changing)."""
        beat = ctx.input("local_heartbeat")
        if not beat.good:
            return f"local heartbeat not usable: {beat.why_not(math.inf)}"
        if self._beat_at is None or beat.value != self._beat:
            self._beat, self._beat_at = beat.value, ctx.now
            return ""
        silent = (ctx.now - self._beat_at).total_seconds()
        timeout = self.param("heartbeat_timeout_s")
        return f"local heartbeat unchanged for {silent:g} s (at most {timeout:g} s)" if silent > timeout else ""

    def hand_over(self, ctx: CycleContext) -> str:
        return self.missed(ctx)

    def run(self, ctx: CycleContext) -> None:
        why = self.missed(ctx)
        if why:
            ctx.constrain("battery_power", "=", 0.0, why)
            return
        p = ctx.input("local_power").number(math.inf)
        if p is None:
            ctx.constrain("battery_power", "=", 0.0,
                          f"local setpoint not usable: {ctx.input('local_power').why_not(math.inf)}")
        else:
            ctx.constrain("battery_power", "=", p, "local operator's setpoint")
        if "local_reactive_power" in ctx.signals:
            q = ctx.input("local_reactive_power").number(math.inf)
            ctx.constrain("reactive_power", "=", 0.0 if q is None else q, "local operator's reactive setpoint")
