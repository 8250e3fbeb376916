"""Manual: no mode steers; the setpoints are an operator's (or a client's), written through the write path.
The charge limiter and the interlocks still hold: a value outside the limits is brought back inside them."""

from __future__ import annotations

from gateway.control.modes import CycleContext, Mode, register


@register
class Manual(Mode):
    name = "Manual"
    code = 1

    def run(self, ctx: CycleContext) -> None:
        return None
