"""ExternalControl: the battery follows an external active power setpoint (SCADA over OPC UA, the Modbus
facade, a schedule), given as the `external_power` input. A setpoint that is Bad, or older than the
site's maximum input age (a SCADA that stopped refreshing it), idles the battery."""

from __future__ import annotations

from gateway.control.modes import CycleContext, Mode, register


@register
class ExternalControl(Mode):
    name = "ExternalControl"
    code = 5
    inputs = ("external_power",)
    setpoints = ("battery_power",)

    def run(self, ctx: CycleContext) -> None:
        p = ctx.number("external_power")
        if p is None:
            ctx.constrain("battery_power", "=", 0.0, f"external setpoint not usable: "
                                                     f"{ctx.input('external_power').why_not(ctx.max_age)}")
        else:
            ctx.constrain("battery_power", "=", p, "external setpoint")
