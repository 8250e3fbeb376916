"""Passive: the battery idles (0 kW); nothing else is steered."""

from __future__ import annotations

from gateway.control.modes import CycleContext, Mode, register


@register
class Passive(Mode):
    name = "Passive"
    code = 0
    setpoints = ("battery_power",)

    def run(self, ctx: CycleContext) -> None:
        ctx.constrain("battery_power", "=", 0.0, "passive")
