"""The control engine's methods and alarms in the address space.

Under the site's Control object: `GoToMode_<Mode>()` for each mode, `ResetInterlock(Name)` (a name or
"*" for all), `RequestState(State)` (Run, Sleep, Maintenance) and the schedule's methods, bound in the gateway's method
registry for operators, each calling the engine's API with the caller as writer. Each interlock's
`Tripped` node gets an alarm (severity from the site), so a trip reaches every alarm client.
"""

from __future__ import annotations

import json
from typing import Any

from asyncua import Server, ua

from gateway.alarms.service import AlarmService
from gateway.control.engine import ControlEngine
from gateway.control.outputs import AddressSpaceNodes
from gateway.control.schedule.service import ScheduleError, ScheduleService
from gateway.diagnostics import derived_nodeid
from gateway.methods import MethodCall, MethodError, MethodRegistry
from gateway.security.roles import Role


def _string_argument(name: str, description: str) -> ua.Argument:
    arg = ua.Argument()
    arg.Name = name
    arg.DataType = ua.NodeId(ua.ObjectIds.String)
    arg.ValueRank = -1
    arg.Description = ua.LocalizedText(description)
    return arg


async def _unused(parent: Any, *args: Any) -> list[Any]:  # asyncua wants a callable; the registry answers calls
    raise ua.UaStatusCodeError(ua.StatusCodes.BadInternalError)


async def _method(server: Server, parent: ua.NodeId, name: str, gw_ns: int, args: list[ua.Argument],
                  outputs: list[ua.Argument] | None = None) -> ua.NodeId:
    aspace = server.iserver.aspace
    node = await server.get_node(parent).add_method(derived_nodeid(aspace, parent, name, gw_ns),
                                                    ua.QualifiedName(name, gw_ns), _unused, args, outputs or [])
    return node.nodeid


def _answer(result: tuple[ua.StatusCode, str]) -> list[ua.Variant]:
    status, text = result
    if not status.is_good():
        raise MethodError(status.value, text)
    return []


async def bind_control_methods(server: Server, engine: ControlEngine, control: ua.NodeId, gw_ns: int,
                               methods: MethodRegistry) -> None:
    for mode in sorted(engine.modes):
        node = await _method(server, control, f"GoToMode_{mode}", gw_ns, [])

        async def go(call: MethodCall, mode: str = mode) -> list[ua.Variant]:
            return _answer(engine.go_to_mode(mode, call.writer))

        methods.bind(node, go, Role.operator)
    reset = await _method(server, control, "ResetInterlock", gw_ns,
                          [_string_argument("Name", "the interlock to reset, or * for every one")])

    async def do_reset(call: MethodCall) -> list[ua.Variant]:
        return _answer(engine.reset(call.arg(0), call.writer))

    methods.bind(reset, do_reset, Role.operator)
    state = await _method(server, control, "RequestState", gw_ns,
                          [_string_argument("State", "Run, Sleep or Maintenance")])

    async def do_state(call: MethodCall) -> list[ua.Variant]:
        return _answer(engine.request_state(call.arg(0), call.writer))

    methods.bind(state, do_state, Role.operator)


async def bind_schedule_methods(server: Server, schedule: ScheduleService, control: ua.NodeId, gw_ns: int,
                                methods: MethodRegistry) -> None:
    """`GetSchedule() -> Entries` (JSON), `SetScheduleEntry(Entry)` (JSON; adds or replaces by name) and
    `RemoveScheduleEntry(Name)` under the Control object; editing is for operators, reading for anyone."""
    out = _string_argument("Entries", "the schedule as a JSON list, each entry with its next fire time")
    get = await _method(server, control, "GetSchedule", gw_ns, [], [out])

    async def do_get(call: MethodCall) -> list[ua.Variant]:
        return [ua.Variant(json.dumps(schedule.listing()), ua.VariantType.String)]

    methods.bind(get, do_get, Role.viewer)
    put = await _method(server, control, "SetScheduleEntry", gw_ns,
                        [_string_argument("Entry", 'a JSON entry: {"name": .., "cron": "0 22 * * *" or "at": '
                                                   '"2026-12-01T08:00:00Z", "mode"/"parameters"/"set": ..}')])

    async def do_put(call: MethodCall) -> list[ua.Variant]:
        try:
            raw = json.loads(call.arg(0))
        except json.JSONDecodeError as exc:
            raise MethodError(ua.StatusCodes.BadInvalidArgument, f"Entry is not JSON: {exc}") from None
        try:
            schedule.put(raw, call.writer)
        except PermissionError as exc:
            raise MethodError(ua.StatusCodes.BadUserAccessDenied, str(exc)) from None
        except ScheduleError as exc:
            raise MethodError(ua.StatusCodes.BadInvalidArgument, str(exc)) from None
        return []

    methods.bind(put, do_put, Role.operator)
    remove = await _method(server, control, "RemoveScheduleEntry", gw_ns,
                           [_string_argument("Name", "the entry to remove")])

    async def do_remove(call: MethodCall) -> list[ua.Variant]:
        try:
            schedule.remove(call.arg(0), call.writer)
        except PermissionError as exc:
            raise MethodError(ua.StatusCodes.BadUserAccessDenied, str(exc)) from None
        except ScheduleError as exc:
            raise MethodError(ua.StatusCodes.BadInvalidArgument, str(exc)) from None
        return []

    methods.bind(remove, do_remove, Role.operator)


def add_interlock_alarms(engine: ControlEngine, control: ua.NodeId, control_name: str, gw_ns: int,
                         alarms: AlarmService) -> None:
    nodes = engine.nodes
    if not isinstance(nodes, AddressSpaceNodes):
        return
    configs = []
    for name, interlock in engine.safety.interlocks.items():
        tripped = nodes.nodes.get(f"Interlocks.{name}.Tripped")
        if tripped is None:
            continue
        configs.append(alarms.add_system_alarm(
            control, control_name, f"{name}Trip", tripped, True,
            (f"{control_name}: interlock {name} tripped; safe setpoints forced until an operator resets it",
             f"{control_name}: interlock {name} reset"), gw_ns, interlock.spec.severity))
    alarms.add(configs, system=True)
