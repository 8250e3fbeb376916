"""`ModeCode` under the site's Control object: the active mode as its number, and a write that switches it.

The codes are the modes' own (control/modes: 0 Passive, 1 Manual, 2 MaxSelfConsumption, 3 PeakShaving,
4 ChargeOnly, 5 ExternalControl, 6 LoadMatching, 7 CostSaving, 8 LocalControl, 9 Backup), so a Modbus
master reads and sets the mode through the facade with one register. A write takes the one write path
(access, type, audit) and then the engine's `go_to_mode` with the writer, exactly as the GoToMode
methods do: operators only, logged with the writer's name (`facade:10.0.0.5` for a SCADA).
"""

from __future__ import annotations

from asyncua import ua

from gateway.control.engine import ControlEngine
from gateway.control.outputs import AddressSpaceNodes
from gateway.events.audit import Writer
from gateway.security.roles import Role
from gateway.values.writepath import WritePath

MODE_CODE = "ModeCode"


class ModeCodeHandler:
    def __init__(self, engine: ControlEngine) -> None:
        self.engine = engine
        self.by_code = {mode.code: name for name, mode in engine.modes.items()}

    def check(self, value: ua.Variant, writer: Writer) -> ua.StatusCode | None:
        code = value.Value
        if isinstance(code, bool) or not isinstance(code, int) or code not in self.by_code:
            return ua.StatusCode(ua.StatusCodes.BadOutOfRange)
        if not writer.role.allows(Role.operator):
            return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
        return None

    async def apply(self, value: ua.Variant, writer: Writer) -> ua.StatusCode:
        status, _ = self.engine.go_to_mode(self.by_code[value.Value], writer)
        if status.is_good():
            await self.engine.nodes.flush()  # shown now, not at the end of the next cycle
        return status


def bind_mode_code(engine: ControlEngine, write_path: WritePath) -> ua.NodeId | None:
    """Route writes of the engine's ModeCode variable to the engine; its node, or None without one."""
    nodes = engine.nodes
    if not isinstance(nodes, AddressSpaceNodes) or MODE_CODE not in nodes.nodes:
        return None
    nodeid = nodes.nodes[MODE_CODE]
    write_path.handlers[nodeid] = ModeCodeHandler(engine)
    return nodeid
