"""The control engine's methods and alarms in the address space.

Under the site's Control object: `GoToMode_<Mode>()` for each mode, `ResetInterlock(Name)` (a name or
"*" for all) and `RequestState(State)` (Run, Sleep, Maintenance), bound in the gateway's method
registry for operators, each calling the engine's API with the caller as writer. Each interlock's
`Tripped` node gets an alarm (severity from the site), so a trip reaches every alarm client.
"""

from __future__ import annotations

from typing import Any

from asyncua import Server, ua

from gateway.alarms.service import AlarmService
from gateway.control.engine import ControlEngine
from gateway.control.outputs import AddressSpaceNodes
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


async def _method(server: Server, parent: ua.NodeId, name: str, gw_ns: int, args: list[ua.Argument]) -> ua.NodeId:
    aspace = server.iserver.aspace
    node = await server.get_node(parent).add_method(derived_nodeid(aspace, parent, name, gw_ns),
                                                    ua.QualifiedName(name, gw_ns), _unused, args, [])
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
