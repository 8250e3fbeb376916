"""One condition's Part 9 state and the event that reports it.

State: EnabledState, ActiveState (with the limit sub-state of limit alarms), AckedState, ConfirmedState
(when the alarm asks for confirmation), Retain, Quality, Severity/LastSeverity, Comment, ClientUserId,
ShelvingState and SuppressedOrShelved. Every change makes a new event with a new EventId; Acknowledge,
Confirm and AddComment must name the EventId of the latest one. Only the latest state is kept per
condition (no branches for earlier unacknowledged states).

The latest event is not kept as an object: its EventId and Time are, and `latest_event()` builds it again
from the state (which only changes with a new event). Ten thousand kept events were some 300,000 objects
that every full garbage collection walked while the event loop waited.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from asyncua import ua

from gateway.alarms.config import AlarmConfig
from gateway.alarms.evaluate import states as limit_states_of
from gateway.events.event import GatewayEvent, Path, base_fields, path, shared

_TEXT = ua.VariantType.LocalizedText
_BOOL = ua.VariantType.Boolean
_PROCESS = ua.NodeId(ua.ObjectIds.ProcessConditionClassType)
_SYSTEM = ua.NodeId(ua.ObjectIds.SystemConditionClassType)
_SHELVING_STATES = {
    "Unshelved": ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_Unshelved),
    "TimedShelved": ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_TimedShelved),
    "OneShotShelved": ua.NodeId(ua.ObjectIds.ShelvedStateMachineType_OneShotShelved),
}
LIMIT_STATES = {
    "HighHigh": ua.NodeId(ua.ObjectIds.ExclusiveLimitStateMachineType_HighHigh),
    "High": ua.NodeId(ua.ObjectIds.ExclusiveLimitStateMachineType_High),
    "Low": ua.NodeId(ua.ObjectIds.ExclusiveLimitStateMachineType_Low),
    "LowLow": ua.NodeId(ua.ObjectIds.ExclusiveLimitStateMachineType_LowLow),
}


def _time(t: datetime | None) -> ua.Variant:
    return ua.Variant(t, ua.VariantType.DateTime) if t is not None else ua.Variant()


_FLAG = {True: shared(True, _BOOL), False: shared(False, _BOOL)}
_ENABLED_TEXT = {True: shared(ua.LocalizedText("Enabled"), _TEXT), False: shared(ua.LocalizedText("Disabled"), _TEXT)}
_ACKED_TEXT = {True: shared(ua.LocalizedText("Acknowledged"), _TEXT),
               False: shared(ua.LocalizedText("Unacknowledged"), _TEXT)}
_CONFIRMED_TEXT = {True: shared(ua.LocalizedText("Confirmed"), _TEXT),
                   False: shared(ua.LocalizedText("Unconfirmed"), _TEXT)}
_ACTIVE_TEXT = {True: shared(ua.LocalizedText("Active"), _TEXT), False: shared(ua.LocalizedText("Inactive"), _TEXT)}
_SHELVING_TEXT = {name: shared(ua.LocalizedText(name), _TEXT) for name in _SHELVING_STATES}
_SHELVING_ID = {name: shared(nid, ua.VariantType.NodeId) for name, nid in _SHELVING_STATES.items()}
_LIMIT_STATE = path("LimitState", "CurrentState")
_LIMIT_STATE_ID = path("LimitState", "CurrentState", "Id")
_LIMIT_TEXT = {state: shared(ua.LocalizedText(state or ""), _TEXT) for state in (None, *LIMIT_STATES)}
_LIMIT_ID = {None: shared(ua.NodeId(), ua.VariantType.NodeId),
             **{state: shared(nid, ua.VariantType.NodeId) for state, nid in LIMIT_STATES.items()}}
_STATE_TEXT = {(state, on): shared(ua.LocalizedText(state if on else ""), _TEXT)
               for state in LIMIT_STATES for on in (True, False)}
_NO_BRANCH = shared(ua.NodeId(), ua.VariantType.NodeId)
_NO_COMMENT = shared(ua.LocalizedText(""), _TEXT)
_EFFECTIVE = {None: shared(ua.LocalizedText("Inactive"), _TEXT), "": shared(ua.LocalizedText("Active"), _TEXT),
              **{state: shared(ua.LocalizedText(f"{state} active"), _TEXT) for state in LIMIT_STATES}}


class ConditionError(Exception):
    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or ua.StatusCode(status).name)
        self.status = status


class Condition:
    def __init__(self, cfg: AlarmConfig, notifiers: tuple[ua.NodeId, ...], system: bool = False) -> None:
        self.cfg = cfg
        self.notifiers = notifiers
        self.condition_class = _SYSTEM if system else _PROCESS
        self.enabled = True
        self.active = False
        self.limit_state: str | None = None  # exclusive limit alarms: HighHigh | High | Low | LowLow
        self.limit_states: frozenset[str] = limit_states_of()  # non-exclusive limit alarms
        self.acked = True
        self.confirmed = True
        self.quality = ua.StatusCode(ua.StatusCodes.Good)
        self.quality_time: datetime | None = None
        self.severity = cfg.severity
        self.last_severity = cfg.severity
        self.comment = ""
        self.comment_time: datetime | None = None
        self.client_user_id = ""
        self.shelving = "Unshelved"
        self.unshelve_at: datetime | None = None
        self.max_time_shelved_s = 8 * 3600.0
        self.message = ""
        self.value: Any = None
        self.active_time: datetime | None = None
        self.event_id: bytes | None = None  # the latest event's
        self.event_time: datetime | None = None
        self._static: dict[Path, ua.Variant] | None = None

    @property
    def nodeid(self) -> ua.NodeId:
        return self.cfg.nodeid

    @property
    def retain(self) -> bool:
        if not self.enabled:
            return False
        return self.active or not self.acked or (self.cfg.confirm and not self.confirmed)

    @property
    def shelved(self) -> bool:
        return self.shelving != "Unshelved"

    def _static_fields(self) -> dict[Path, ua.Variant]:
        """The fields that never change for this condition, built once and shared by all its events."""
        cfg = self.cfg
        f = {
            path("ConditionClassId"): shared(self.condition_class, ua.VariantType.NodeId),
            path("ConditionClassName"): shared(ua.LocalizedText(
                "System" if self.condition_class == _SYSTEM else "Process"), _TEXT),
            path("ConditionName"): shared(cfg.name, ua.VariantType.String),
            path("BranchId"): _NO_BRANCH,
            path("InputNode"): shared(cfg.input, ua.VariantType.NodeId),
            path("MaxTimeShelved"): shared(self.max_time_shelved_s * 1000.0, ua.VariantType.Double),
        }
        for name, value in cfg.limits.items():
            f[path(name)] = shared(value, ua.VariantType.Double)
        if cfg.normal_state is not None:
            f[path("NormalState")] = shared(cfg.normal_state, ua.VariantType.NodeId)
        if cfg.setpoint is not None:
            f[path("SetpointNode")] = shared(cfg.setpoint, ua.VariantType.NodeId)
        return f

    def event(self, message: str, now: datetime, event_type: ua.NodeId | None = None,
              event_id: bytes | None = None) -> GatewayEvent:
        """The event reporting the current state; without `event_type` it becomes the condition's latest.

        Events of a flood are built by the thousand: what never changes for a condition and the state
        texts and flags are shared Variants (built once; their encoding is cached by the history writer),
        only the times, message, quality, comment and user are new per event.
        """
        self.message = message
        cfg = self.cfg
        if self._static is None:
            self._static = self._static_fields()
        f = base_fields(event_type or cfg.type_id, cfg.source, cfg.source_name, message, self.severity, now,
                        event_id=event_id)
        f.update(self._static)
        active_key = (self.limit_state or "") if self.active else None
        f.update({
            path("Retain"): _FLAG[self.retain],
            path("EnabledState"): _ENABLED_TEXT[self.enabled],
            path("EnabledState", "Id"): _FLAG[self.enabled],
            path("Quality"): ua.Variant(self.quality, ua.VariantType.StatusCode),
            path("Quality", "SourceTimestamp"): ua.Variant(self.quality_time or now, ua.VariantType.DateTime),
            path("LastSeverity"): ua.Variant(self.last_severity, ua.VariantType.UInt16),
            path("Comment"): ua.Variant(ua.LocalizedText(self.comment), _TEXT) if self.comment else _NO_COMMENT,
            path("Comment", "SourceTimestamp"): _time(self.comment_time),
            path("ClientUserId"): ua.Variant(self.client_user_id, ua.VariantType.String),
            path("AckedState"): _ACKED_TEXT[self.acked],
            path("AckedState", "Id"): _FLAG[self.acked],
            path("ActiveState"): _ACTIVE_TEXT[self.active],
            path("ActiveState", "Id"): _FLAG[self.active],
            path("ActiveState", "EffectiveDisplayName"): _EFFECTIVE[active_key],
            path("ActiveState", "TransitionTime"): _time(self.active_time),
            path("SuppressedOrShelved"): _FLAG[self.shelved],
            path("ShelvingState", "CurrentState"): _SHELVING_TEXT[self.shelving],
            path("ShelvingState", "CurrentState", "Id"): _SHELVING_ID[self.shelving],
            path("ShelvingState", "UnshelveTime"): ua.Variant(
                (self.unshelve_at - now).total_seconds() * 1000.0 if self.unshelve_at else 0.0,
                ua.VariantType.Double),
        })
        if cfg.confirm:
            f[path("ConfirmedState")] = _CONFIRMED_TEXT[self.confirmed]
            f[path("ConfirmedState", "Id")] = _FLAG[self.confirmed]
        if cfg.kind == "exclusive":
            state = self.limit_state if self.active else None
            f[_LIMIT_STATE] = _LIMIT_TEXT[state]
            f[_LIMIT_STATE_ID] = _LIMIT_ID[state]
        elif cfg.kind == "nonexclusive":
            for state in ("HighHigh", "High", "Low", "LowLow"):
                if f"{state}Limit" in cfg.limits:
                    on = state in self.limit_states
                    f[path(f"{state}State")] = _STATE_TEXT[(state, on)]
                    f[path(f"{state}State", "Id")] = _FLAG[on]
        event = GatewayEvent(event_type or cfg.type_id, f, self.notifiers, condition=cfg.nodeid)
        if event_type is None and event_id is None:
            self.event_id, self.event_time = event.event_id, now
        return event

    def latest_event(self) -> GatewayEvent | None:
        """The latest event again (same EventId and Time) for a refresh, or None before the first."""
        if self.event_id is None or self.event_time is None:
            return None
        return self.event(self.message, self.event_time, event_id=self.event_id)

    # -- operator actions (the method handlers check roles; these check the state) ----------------------

    def _check_event_id(self, event_id: Any) -> None:
        if not isinstance(event_id, bytes) or self.event_id is None or event_id != self.event_id:
            raise ConditionError(ua.StatusCodes.BadEventIdUnknown, "EventId is not the condition's latest event")

    def acknowledge(self, event_id: Any, comment: str, user: str, now: datetime) -> None:
        if not self.enabled:
            raise ConditionError(ua.StatusCodes.BadConditionDisabled)
        self._check_event_id(event_id)
        if self.acked:
            raise ConditionError(ua.StatusCodes.BadConditionBranchAlreadyAcked)
        self.acked = True
        if self.cfg.confirm:
            self.confirmed = False
        self._comment(comment, user, now)

    def confirm(self, event_id: Any, comment: str, user: str, now: datetime) -> None:
        if not self.enabled:
            raise ConditionError(ua.StatusCodes.BadConditionDisabled)
        if not self.cfg.confirm:
            raise ConditionError(ua.StatusCodes.BadMethodInvalid, "this alarm is not confirmed")
        self._check_event_id(event_id)
        if self.confirmed:
            raise ConditionError(ua.StatusCodes.BadConditionBranchAlreadyConfirmed)
        self.confirmed = True
        self._comment(comment, user, now)

    def add_comment(self, event_id: Any, comment: str, user: str, now: datetime) -> None:
        if not self.enabled:
            raise ConditionError(ua.StatusCodes.BadConditionDisabled)
        self._check_event_id(event_id)
        self._comment(comment, user, now, always=True)

    def _comment(self, comment: str, user: str, now: datetime, always: bool = False) -> None:
        if comment or always:
            self.comment = comment
            self.comment_time = now
        self.client_user_id = user

    def set_enabled(self, enabled: bool) -> None:
        if self.enabled == enabled:
            raise ConditionError(ua.StatusCodes.BadConditionAlreadyEnabled if enabled
                                 else ua.StatusCodes.BadConditionAlreadyDisabled)
        self.enabled = enabled

    def shelve(self, how: str, now: datetime, seconds: float | None = None) -> None:
        if how == "Unshelved":
            if not self.shelved:
                raise ConditionError(ua.StatusCodes.BadConditionNotShelved)
            self.shelving, self.unshelve_at = "Unshelved", None
            return
        if how == "TimedShelved":
            if seconds is None or seconds <= 0 or seconds > self.max_time_shelved_s:
                raise ConditionError(ua.StatusCodes.BadShelvingTimeOutOfRange)
            if self.shelving == "TimedShelved":
                raise ConditionError(ua.StatusCodes.BadConditionAlreadyShelved)
            self.unshelve_at = now + timedelta(seconds=seconds)
        else:
            if self.shelving == "OneShotShelved":
                raise ConditionError(ua.StatusCodes.BadConditionAlreadyShelved)
            self.unshelve_at = now + timedelta(seconds=self.max_time_shelved_s)
        self.shelving = how
