"""AEM, automatic emergency management: support against a sustained frequency deviation, on its 5-minute mean.

FCR-D and FFR answer the frequency of the moment; AEM answers a deviation that lasts, so it acts on the
moving average of the frequency over `window_s` (300 s: the 5-minute average), kept in fixed memory
(control/moving_average.py). It activates once the average has covered the whole window and is at or
below `f_up_activation` (discharge) or at or above `f_down_activation` (charge); while active it gives a
linear droop from 0 at the deactivation frequency to the full capacity at `f_*_full` (of the average);
it deactivates when the average is back at or beyond `f_*_deactivation` (the hysteresis keeps it from
chattering on the threshold). A frequency that is Bad or stale adds no sample and gives no response
in that cycle. SOC endurance as every service (control/grid_support).
"""

from __future__ import annotations

from gateway.control.grid_support import ENDURANCE, CycleContext, GridSupport, Param, register
from gateway.control.grid_support.fcr_d import droop
from gateway.control.moving_average import MovingAverage

IDLE, UP, DOWN = "idle", "up", "down"


@register
class Aem(GridSupport):
    name = "Aem"
    inputs = ("frequency", "soc")
    PARAMETERS = (
        Param("capacity_up", 0.0, "kW", 0.0, 1e6, "Discharge at full up-activation (0: none)."),
        Param("capacity_down", 0.0, "kW", 0.0, 1e6, "Charge at full down-activation (0: none)."),
        Param("f_up_activation", 49.8, "Hz", 45.0, 55.0, "Activate when the average is at or below this."),
        Param("f_up_deactivation", 49.9, "Hz", 45.0, 55.0, "Deactivate when the average is back at or above this."),
        Param("f_up_full", 49.5, "Hz", 45.0, 55.0, "Full up-activation at and below this average."),
        Param("f_down_activation", 50.2, "Hz", 45.0, 55.0, "Activate when the average is at or above this."),
        Param("f_down_deactivation", 50.1, "Hz", 45.0, 55.0, "Deactivate when the average is back at or below this."),
        Param("f_down_full", 50.5, "Hz", 45.0, 55.0, "Full down-activation at and above this average."),
        Param("window_s", 300.0, "s", 10.0, 3600.0, "The moving average's window."),
        *ENDURANCE,
    )

    def __init__(self, params: dict | None = None) -> None:
        super().__init__(params)
        p = self.param
        if not (p("f_up_full") < p("f_up_activation") < p("f_up_deactivation")
                <= p("f_down_deactivation") < p("f_down_activation") < p("f_down_full")):
            raise ValueError("grid support Aem: needs f_up_full < f_up_activation < f_up_deactivation <= "
                             "f_down_deactivation < f_down_activation < f_down_full")
        self.average = MovingAverage(p("window_s"), 300)
        self.state = IDLE

    def step(self, t: float, f: float | None) -> float:
        """Add the sample taken at monotonic `t` and return the power now (> 0 discharging), before endurance."""
        if self.average.window_s != self.param("window_s"):  # the window was changed: start it afresh
            self.average = MovingAverage(self.param("window_s"), 300)
            self.state = IDLE
        if f is None:
            return 0.0
        self.average.add(t, f)
        mean = self.average.value(t)
        if mean is None or self.average.span(t) < self.average.window_s - self.average.width:
            return 0.0  # not yet an average of the whole window: no sustained deviation can be told
        p = self.param
        back_up = self.state == UP and mean >= p("f_up_deactivation")
        back_down = self.state == DOWN and mean <= p("f_down_deactivation")
        if back_up or back_down:
            self.state = IDLE
        if self.state == IDLE:
            self.state = UP if mean <= p("f_up_activation") else DOWN if mean >= p("f_down_activation") else IDLE
        if self.state == UP:
            return p("capacity_up") * droop(mean, p("f_up_deactivation"), p("f_up_full"))
        if self.state == DOWN:
            return -p("capacity_down") * droop(mean, p("f_down_deactivation"), p("f_down_full"))
        return 0.0

    def full_power(self) -> tuple[float, float]:
        return self.param("capacity_up"), self.param("capacity_down")

    def run(self, ctx: CycleContext) -> None:
        power = self.step(ctx.image.clock.monotonic(), ctx.number("frequency"))
        ctx.support("battery_power", self.endurance(ctx, power))
