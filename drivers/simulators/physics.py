"""Physical models of the simulated plant: battery, PV inverter, site load, grid meter (pure, stepped).

Sign convention (as OpenEMS): battery power > 0 discharges, grid power > 0 imports. Each model reads
its inputs and writes its outputs as engineering values keyed by variable name; the site simulation
maps those names onto the registers a site binds (simulators/site.py). A model is chosen for a
device by its `Simulator` property: "battery?capacity_kwh=200&max_power_kw=100", "pv?peak_kw=80",
"load?base_kw=60", "meter". `time_scale` speeds a model's clock up (60: a minute per second) so a
demo shows a day's irradiance or a full charge in minutes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


@dataclass
class Model:
    kind: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ()
    state: ClassVar[frozenset[str]] = frozenset()  # fields that are the model's state, not parameters
    time_scale: float = 1.0

    def set_input(self, name: str, value: Any) -> None:
        raise KeyError(name)

    def step(self, dt: float, plant: Plant) -> None:
        raise NotImplementedError

    def outputs(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class Battery(Model):
    """SOC integrates power; the charge and discharge limits derate to 0 within `derate_band` % of the SOC
    limits and above 45 °C; the cell temperature follows losses (I²R ~ P²) with a first-order lag.

    Reactive power follows its setpoint at once, within what the inverter's apparent power rating
    (`apparent_power_kva`, 0: the power rating) leaves beside the active power: |Q| <= sqrt(S² - P²),
    active power first, as grid codes ask of a battery inverter."""

    kind: ClassVar[str] = "battery"
    inputs: ClassVar[tuple[str, ...]] = ("ActivePowerSetpoint", "ReactivePowerSetpoint", "GridFormingSetpoint")
    state: ClassVar[frozenset[str]] = frozenset({"setpoint", "power", "fault", "q_setpoint", "reactive_power",
                                                 "grid_forming"})
    capacity_kwh: float = 200.0
    max_power_kw: float = 100.0
    soc: float = 50.0
    soc_min: float = 5.0
    soc_max: float = 95.0
    derate_band: float = 10.0
    efficiency: float = 0.95  # one-way; charging stores P * efficiency, discharging draws P / efficiency
    ramp_kw_per_s: float = 50.0
    ambient_c: float = 25.0
    temperature: float = 25.0
    heat_k_at_max: float = 15.0  # steady-state rise at max power
    thermal_tau_s: float = 900.0
    setpoint: float = 0.0
    power: float = 0.0
    apparent_power_kva: float = 0.0  # the inverter's rating S; 0: max_power_kw
    q_setpoint: float = 0.0  # kvar, > 0 injecting (over-excited)
    reactive_power: float = 0.0
    fault: int = 0  # 0 = none; see inject_fault
    grid_forming: bool = False  # forming the grid: on an island its power follows the load, not the setpoint

    OVER_TEMPERATURE: ClassVar[int] = 1

    def set_input(self, name: str, value: Any) -> None:
        if name == "ActivePowerSetpoint":
            self.setpoint = float(value)
        elif name == "ReactivePowerSetpoint":
            self.q_setpoint = float(value)
        elif name == "GridFormingSetpoint":
            self.grid_forming = bool(value)
        else:
            raise KeyError(name)

    def limits(self) -> tuple[float, float]:
        """(max charge, max discharge) in kW, both >= 0."""
        thermal = _clamp((55.0 - self.temperature) / 10.0, 0.0, 1.0)
        dis = self.max_power_kw * _clamp((self.soc - self.soc_min) / self.derate_band, 0.0, 1.0) * thermal
        chg = self.max_power_kw * _clamp((self.soc_max - self.soc) / self.derate_band, 0.0, 1.0) * thermal
        return chg, dis

    def q_limit(self) -> float:
        """The reactive power (kvar, either sign) the rating leaves at the present active power."""
        rating = self.apparent_power_kva or self.max_power_kw
        return math.sqrt(max(0.0, rating * rating - self.power * self.power))

    def inject_fault(self, code: int) -> None:
        """A fault trips the battery: power goes to 0 and stays there until `clear_fault`."""
        self.fault = code

    def clear_fault(self) -> None:
        self.fault = 0

    def step(self, dt: float, plant: Plant) -> None:
        dt *= self.time_scale
        chg, dis = self.limits()
        if plant.islanded():
            # An island: forming the grid, the battery gives what the island's load takes, at once; following
            # the grid it stops (anti-islanding), as a grid-following inverter must on a dead grid.
            demand = plant.island_demand() if self.grid_forming and not self.fault else 0.0
            self.power = _clamp(demand, -chg, dis)
        else:
            target = 0.0 if self.fault else _clamp(self.setpoint, -chg, dis)
            ramp = self.ramp_kw_per_s * dt
            self.power += _clamp(target - self.power, -ramp, ramp)
        self.reactive_power = 0.0 if self.fault else _clamp(self.q_setpoint, -self.q_limit(), self.q_limit())
        energy_kwh = self.power * dt / 3600.0
        drawn = energy_kwh / self.efficiency if energy_kwh > 0 else energy_kwh * self.efficiency
        self.soc = _clamp(self.soc - drawn / self.capacity_kwh * 100.0, 0.0, 100.0)
        rise = self.heat_k_at_max * (self.power / self.max_power_kw) ** 2
        self.temperature += (self.ambient_c + rise - self.temperature) * min(1.0, dt / self.thermal_tau_s)
        if self.temperature >= 60.0 and not self.fault:
            self.fault = self.OVER_TEMPERATURE

    def outputs(self) -> dict[str, Any]:
        chg, dis = self.limits()
        return {
            "StateOfCharge": self.soc, "ActivePower": self.power, "MaxChargePower": chg, "MaxDischargePower": dis,
            "CellTemperatureMax": self.temperature, "DcVoltage": 720.0 + 1.0 * self.soc - 0.3 * self.power,
            "Running": not self.fault, "FaultCode": self.fault, "ActivePowerSetpoint": self.setpoint,
            "ReactivePower": self.reactive_power, "ReactivePowerSetpoint": self.q_setpoint,
            "GridFormingSetpoint": self.grid_forming,
        }


@dataclass
class PvInverter(Model):
    """Irradiance follows the sun over an accelerated day (seeded clouds); output = min(available, curtailment)."""

    kind: ClassVar[str] = "pv"
    inputs: ClassVar[tuple[str, ...]] = ("CurtailmentSetpoint",)
    peak_kw: float = 80.0
    start_hour: float = 10.0
    sunrise: float = 6.0
    sunset: float = 20.0
    seed: float = 1.0
    curtailment: float = 100.0  # % of peak
    hours: float = field(init=False, default=0.0)
    irradiance: float = field(init=False, default=0.0)
    power: float = field(init=False, default=0.0)
    energy_kwh: float = field(init=False, default=0.0)
    _cloud: float = field(init=False, default=1.0)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.hours = self.start_hour
        self._rng = random.Random(int(self.seed))
        self._update_sun()

    def set_input(self, name: str, value: Any) -> None:
        if name != "CurtailmentSetpoint":
            raise KeyError(name)
        self.curtailment = _clamp(float(value), 0.0, 100.0)

    def _update_sun(self) -> None:
        h = self.hours % 24.0
        day = self.sunset - self.sunrise
        sun = math.sin(math.pi * (h - self.sunrise) / day) if self.sunrise < h < self.sunset else 0.0
        self.irradiance = 1000.0 * sun * self._cloud
        self.power = min(self.peak_kw * self.irradiance / 1000.0, self.peak_kw * self.curtailment / 100.0)

    def step(self, dt: float, plant: Plant) -> None:
        dt *= self.time_scale
        before = int(self.hours * 60)
        self.hours += dt / 3600.0
        for _ in range(min(int(self.hours * 60) - before, 60)):  # clouds move once per simulated minute
            self._cloud = _clamp(self._cloud + self._rng.uniform(-0.08, 0.08), 0.55, 1.0)
        self._update_sun()
        self.energy_kwh += self.power * dt / 3600.0

    def outputs(self) -> dict[str, Any]:
        return {"ActivePower": self.power, "Irradiance": self.irradiance, "DailyEnergy": self.energy_kwh,
                "CurtailmentSetpoint": self.curtailment, "Running": self.power > 0.0}


@dataclass
class Load(Model):
    """Site consumption: a base, a midday bump and seeded noise (a random walk of at most `noise_kw` per
    step, within +/-5 `noise_kw`; 0: a steady load). A test steps the load by changing `base_kw`.
    `sheddable_kw` of it are non-priority loads, off while `ShedSetpoint` is set; on an island nobody
    forms, the load is dark (0). Its reactive power is that of an inductive load at `power_factor`:
    Q = P x tan(acos(pf))."""

    kind: ClassVar[str] = "load"
    inputs: ClassVar[tuple[str, ...]] = ("ShedSetpoint",)
    state: ClassVar[frozenset[str]] = frozenset({"shed"})
    base_kw: float = 60.0
    peak_kw: float = 40.0
    start_hour: float = 10.0
    seed: float = 2.0
    noise_kw: float = 1.0
    sheddable_kw: float = 0.0
    shed: bool = False
    power_factor: float = 0.95  # lagging; 1: a purely resistive load
    hours: float = field(init=False, default=0.0)
    power: float = field(init=False, default=0.0)
    _noise: float = field(init=False, default=0.0)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.hours = self.start_hour
        self._rng = random.Random(int(self.seed))
        self.step(0.0, Plant([]))

    def step(self, dt: float, plant: Plant) -> None:
        self.hours += dt * self.time_scale / 3600.0
        if dt:
            n = self.noise_kw
            self._noise = _clamp(self._noise + self._rng.uniform(-n, n), -5.0 * n, 5.0 * n)
        bump = max(0.0, math.sin(math.pi * ((self.hours % 24.0) - 7.0) / 12.0))
        self.power = self.base_kw + self.peak_kw * bump + self._noise - (self.sheddable_kw if self.shed else 0.0)
        if plant.islanded() and not any(b.grid_forming and not b.fault for b in plant.of(Battery)):
            self.power = 0.0  # a blackout

    def set_input(self, name: str, value: Any) -> None:
        if name != "ShedSetpoint":
            raise KeyError(name)
        self.shed = bool(value)

    @property
    def reactive_power(self) -> float:
        pf = _clamp(self.power_factor, 0.1, 1.0)
        return self.power * math.tan(math.acos(pf))

    def outputs(self) -> dict[str, Any]:
        return {"ActivePower": self.power, "ReactivePower": self.reactive_power, "ShedSetpoint": self.shed}


@dataclass
class GridMeter(Model):
    """Grid power = load - PV - battery of the whole simulated site; energies integrate it. Reactive
    power likewise: the loads' minus the batteries' (> 0 drawn from the grid; the PV runs at cos phi 1).

    The grid frequency wanders by at most `frequency_noise_hz` per step within +/-0.05 Hz of
    `frequency_target_hz`; a changed target is approached at `frequency_ramp_hz_per_s` (0: at once), so a
    test or a demo drives frequency steps and ramps for the grid-support services (`set_frequency`).
    `grid_up` 0 is a grid outage (the meter, on the grid side of the site's breaker, reads 0 V and 0 Hz);
    with the grid down or the breaker open (`GridConnectSetpoint` 0) the site is an island: no power flows
    through the meter.
    """

    kind: ClassVar[str] = "meter"
    inputs: ClassVar[tuple[str, ...]] = ("GridConnectSetpoint",)
    state: ClassVar[frozenset[str]] = frozenset({"breaker_closed"})
    base_load_kw: float = 60.0  # used when the site has no simulated load device
    seed: float = 3.0
    frequency_target_hz: float = 50.0
    frequency_ramp_hz_per_s: float = 0.0
    frequency_noise_hz: float = 0.004
    voltage_offset_v: float = 0.0  # added to the voltage (230 V, moving with the frequency): a voltage step
    grid_up: float = 1.0  # 0: the grid is lost
    breaker_closed: bool = True
    power: float = field(init=False, default=0.0)
    reactive_power: float = field(init=False, default=0.0)
    frequency: float = field(init=False, default=50.0)
    _base_hz: float = field(init=False, default=50.0)  # where the frequency ramps, before the wander
    _wander: float = field(init=False, default=0.0)
    import_kwh: float = field(init=False, default=0.0)
    export_kwh: float = field(init=False, default=0.0)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(int(self.seed))
        self._base_hz = self.frequency = self.frequency_target_hz

    def _towards(self, hz: float, dt: float) -> float:
        rate = self.frequency_ramp_hz_per_s
        if rate <= 0:
            return self.frequency_target_hz
        most = rate * dt * self.time_scale
        return hz + _clamp(self.frequency_target_hz - hz, -most, most)

    def set_frequency(self, target_hz: float, ramp_hz_per_s: float = 0.0, noise_hz: float | None = None) -> None:
        """Move the grid frequency to `target_hz` (at `ramp_hz_per_s`, 0: at the next step)."""
        self.frequency_target_hz, self.frequency_ramp_hz_per_s = float(target_hz), float(ramp_hz_per_s)
        if noise_hz is not None:
            self.frequency_noise_hz = float(noise_hz)

    @property
    def islanded(self) -> bool:
        return self.grid_up < 0.5 or not self.breaker_closed

    def set_input(self, name: str, value: Any) -> None:
        if name != "GridConnectSetpoint":
            raise KeyError(name)
        self.breaker_closed = bool(value)

    def step(self, dt: float, plant: Plant) -> None:
        loads = plant.of(Load)
        load = sum(m.power for m in loads) if loads else self.base_load_kw
        self.power = 0.0 if self.islanded else \
            load - sum(m.power for m in plant.of(PvInverter)) - sum(m.power for m in plant.of(Battery))
        load_q = sum(m.reactive_power for m in loads) if loads else 0.0
        self.reactive_power = 0.0 if self.islanded else load_q - sum(m.reactive_power for m in plant.of(Battery))
        if dt:
            self._base_hz = self._towards(self._base_hz, dt)
            n = self.frequency_noise_hz
            self._wander = _clamp(self._wander + self._rng.uniform(-n, n), -0.05, 0.05) if n else 0.0
            self.frequency = self._base_hz + self._wander
        energy = self.power * dt * self.time_scale / 3600.0
        if energy > 0:
            self.import_kwh += energy
        else:
            self.export_kwh -= energy

    def outputs(self) -> dict[str, Any]:
        up = self.grid_up >= 0.5
        return {"ActivePower": self.power, "ReactivePower": self.reactive_power,
                "Frequency": self.frequency if up else 0.0,
                "ImportEnergy": self.import_kwh, "ExportEnergy": self.export_kwh,
                "Voltage": 230.0 + (self.frequency - 50.0) * 20.0 + self.voltage_offset_v if up else 0.0,
                "GridConnectSetpoint": self.breaker_closed}


MODELS: dict[str, type[Model]] = {m.kind: m for m in (Battery, PvInverter, Load, GridMeter)}


def parse_model(spec: str) -> Model:
    """'battery?capacity_kwh=200' -> Battery(capacity_kwh=200.0); ValueError names what is wrong."""
    parts = urlsplit(spec)
    kind = parts.path.strip("/")
    cls = MODELS.get(kind)
    if cls is None:
        raise ValueError(f"unknown simulator '{kind}' (known: {', '.join(MODELS)})")
    allowed = {f.name: f for f in fields(cls) if f.init and f.name not in cls.state}
    kwargs: dict[str, float] = {}
    for key, raw in parse_qsl(parts.query, keep_blank_values=True):
        if key not in allowed:
            raise ValueError(f"simulator '{kind}' has no parameter '{key}' (has: {', '.join(sorted(allowed))})")
        try:
            kwargs[key] = float(raw)
        except ValueError:
            raise ValueError(f"simulator parameter {key}='{raw}' is not a number") from None
    return cls(**kwargs)  # type: ignore[arg-type]


class Plant:
    """The models of one simulated site, stepped together: producers and storage first, the meter last."""

    def __init__(self, models: list[Model]) -> None:
        self.models = models

    def of(self, cls: type[Model]) -> list[Any]:
        return [m for m in self.models if isinstance(m, cls)]

    def islanded(self) -> bool:
        """Cut off from the grid (lost, or its breaker open): the site's own sources must serve its load."""
        return any(m.islanded for m in self.of(GridMeter))

    def island_demand(self) -> float:
        """What the island's load takes beyond its PV, kW."""
        return sum(m.power for m in self.of(Load)) - sum(m.power for m in self.of(PvInverter))

    def step(self, dt: float) -> None:
        for m in sorted(self.models, key=lambda m: isinstance(m, GridMeter)):
            m.step(dt, self)
