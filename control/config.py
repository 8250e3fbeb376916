"""The control configuration of a site, as the engine uses it (read from the site's nodes: site.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asyncua import ua

from gateway.control.safety.interlock import InterlockSpec
from gateway.control.schedule.entries import ScheduleEntry

DEFAULT_PERIOD_S = 1.0
MIN_PERIOD_S = 0.1
DEFAULT_MAX_AGE_S = 5.0
DEFAULT_STALL_PERIODS = 5


@dataclass
class SetpointSpec:
    name: str  # its role: "battery_power", "pv_curtailment"
    node: ua.NodeId
    safe: float  # what it is forced to on a trip, a stall, in Error, Sleep and Maintenance
    ramp_per_s: float = 0.0  # 0: no ramp limit
    resolution: float = 0.0  # > 0: outputs are rounded to a multiple (a scaled integer register takes no more)
    vtype: ua.VariantType = ua.VariantType.Double


EXTERNAL_CONTROL = "ExternalControl"
LOCAL_CONTROL = "LocalControl"


@dataclass
class ControlConfig:
    period_s: float = DEFAULT_PERIOD_S
    max_age_s: float = DEFAULT_MAX_AGE_S
    stall_periods: int = DEFAULT_STALL_PERIODS
    mode: str = "Passive"
    setpoints: dict[str, SetpointSpec] = field(default_factory=dict)
    signals: dict[str, ua.NodeId] = field(default_factory=dict)  # role -> input node
    modes: dict[str, dict[str, Any]] = field(default_factory=dict)  # mode -> parameters (fixed values)
    mode_parameters: dict[str, dict[str, ua.NodeId]] = field(default_factory=dict)  # mode -> param -> node
    interlocks: list[InterlockSpec] = field(default_factory=list)
    charge_limiter: dict[str, Any] | None = None
    grid_support: dict[str, dict[str, Any]] = field(default_factory=dict)  # service -> parameters (enabled)
    service_parameters: dict[str, dict[str, ua.NodeId]] = field(default_factory=dict)  # service -> param -> node
    confirmed_by: dict[ua.NodeId, ua.NodeId] = field(default_factory=dict)  # input -> its device's LastSuccess
    # (signal, mode): ExternalControl hands over to `mode` while the Boolean signal is true or not Good
    # (the SCADA's watchdog expired, as a hybrid plant controller falls back to its local mode); any mode
    # whose `hand_over` gives a reason (LocalControl's missed heartbeat) hands over to `mode` too.
    fallback: tuple[str | None, str] | None = None
    schedule: list[ScheduleEntry] = field(default_factory=list)  # the site's entries (control/schedule)
    state_machine: str | None = None  # the site's Part 16 machine (Device/Machine) that shows the system state

    def problems(self) -> list[str]:
        out = []
        if not MIN_PERIOD_S <= self.period_s <= 60.0:
            out.append(f"period must be {MIN_PERIOD_S * 1000:g} ms .. 60 s, got {self.period_s * 1000:g} ms")
        if self.max_age_s <= 0:
            out.append("max_input_age must be > 0")
        if self.stall_periods < 1:
            out.append("stall_periods must be >= 1")
        return out
