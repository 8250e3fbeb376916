"""CostSaving (time of use): charge while energy is cheap, discharge while it is dear, from a tariff.

The present price is the `price` input (per kWh, in the tariff's currency): a site variable that the
schedule service sets at each tariff window (control/schedule), a SCADA or a price feed writes. A price
holds until the next one, so its age does not matter; a Bad price idles the battery.

At or below `charge_below` the battery charges at `charge_power` up to `soc_target`; at or above
`discharge_above` it discharges down to `reserve_soc`, covering the site's own import (grid power plus
what the battery gives now; at most `discharge_power`) so the dear energy is not bought and none is
exported; without a grid meter it discharges at `discharge_power`. Between the two prices it idles.
"""

from __future__ import annotations

import math

from gateway.control.modes import CycleContext, Mode, Param, register


@register
class CostSaving(Mode):
    name = "CostSaving"
    code = 7
    inputs = ("price", "soc", "grid_power", "battery_power")
    setpoints = ("battery_power",)
    PARAMETERS = (
        Param("charge_below", 0.10, "", -1000.0, 1000.0, "Charge at or below this price (the price signal's unit)."),
        Param("discharge_above", 0.30, "", -1000.0, 1000.0, "Discharge at or above this price."),
        Param("charge_power", 50.0, "kW", 0.0, 100000.0, "Charge power while cheap."),
        Param("discharge_power", 100.0, "kW", 0.0, 100000.0, "Most discharge power while dear."),
        Param("soc_target", 90.0, "%", 0.0, 100.0, "Charge up to this SOC."),
        Param("reserve_soc", 20.0, "%", 0.0, 100.0, "Discharge down to this SOC."),
    )

    def run(self, ctx: CycleContext) -> None:
        price = ctx.input("price").number(math.inf)  # a tariff holds until the next one: any age
        soc = ctx.number("soc")
        if price is None:
            ctx.constrain("battery_power", "=", 0.0, f"price not usable: {ctx.input('price').why_not(math.inf)}")
        elif soc is None:
            ctx.constrain("battery_power", "=", 0.0, "SOC not usable")
        elif price <= self.param("charge_below"):
            if soc >= self.param("soc_target"):
                ctx.constrain("battery_power", "=", 0.0, f"price {price:g}: SOC {soc:g} % reached the target")
            else:
                ctx.constrain("battery_power", "=", -self.param("charge_power"), f"price {price:g}: charging")
        elif price >= self.param("discharge_above"):
            ctx.constrain("battery_power", "=", self._discharge(ctx, soc), f"price {price:g}: discharging")
        else:
            ctx.constrain("battery_power", "=", 0.0, f"price {price:g} between the thresholds")

    def _discharge(self, ctx: CycleContext, soc: float) -> float:
        if soc <= self.param("reserve_soc"):
            return 0.0
        most = self.param("discharge_power")
        if "grid_power" not in ctx.signals:
            return most
        grid = ctx.number("grid_power")
        if grid is None:
            return 0.0  # a meter it cannot read: it cannot know what would be exported
        battery = ctx.number("battery_power") if "battery_power" in ctx.signals else None
        if battery is None:
            battery = (ctx.output("battery_power") or 0.0) + ctx.supported.get("battery_power", 0.0)
        return min(max(grid + battery, 0.0), most)
