"""Start a site's control engine inside the gateway: its nodes, its process image on the change feed."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from asyncua import Server, ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.control.engine import ControlEngine
from gateway.control.mode_code import bind_mode_code
from gateway.control.outputs import AddressSpaceNodes
from gateway.control.schedule.service import ScheduleService
from gateway.control.site import read_control, site_variables
from gateway.control.state_machine import SystemStateBridge
from gateway.nodeset.loader import LoadedSite
from gateway.statemachines.service import StateMachineService
from gateway.values.aspace_io import read_value
from gateway.values.feed import ChangeFeed
from gateway.values.runners import DeviceRunner
from gateway.values.writepath import WritePath

log = logging.getLogger(__name__)


async def start_control(server: Server, site: LoadedSite | None, feed: ChangeFeed, write_path: WritePath,
                        runners: Mapping[ua.NodeId, DeviceRunner], gw_ns: int,
                        clock: Clock = SYSTEM_CLOCK) -> ControlEngine | None:
    """The site's control engine, running; None when the site configures no control."""
    if site is None:
        return None
    aspace = server.iserver.aspace
    control_id, config, problems = read_control(aspace, site.new_nodes, gw_ns)
    if control_id is None or config is None:
        return None
    if problems:  # load_site refused such a site already; kept as a guard for callers that skip it
        raise ValueError("control: " + "; ".join(problems))
    # An input bound to a device is current while its device answers (LastSuccess changes on every good scan).
    for runner in runners.values():
        if runner.diagnostics is None:
            continue
        last_success = runner.diagnostics.nodes.get("LastSuccess")
        for var in runner.cfg.variables:
            if last_success is not None:
                config.confirmed_by[var.nodeid] = last_success
    engine = ControlEngine(config, write_path.write, clock, AddressSpaceNodes(server, control_id, gw_ns, feed, clock))
    engine.image.attach(feed, lambda node: read_value(aspace, node))
    await engine.start()
    bind_mode_code(engine, write_path)
    log.info("control: mode %s, %d setpoint(s), %d interlock(s), period %g ms", config.mode, len(config.setpoints),
             len(config.interlocks), config.period_s * 1000)
    return engine


async def start_schedule(server: Server, engine: ControlEngine, write_path: WritePath, data_dir: Path | None,
                         clock: Clock = SYSTEM_CLOCK) -> ScheduleService:
    """The control engine's schedule, running: the site's entries, or those kept under the data dir."""
    aspace = server.iserver.aspace
    control_id = engine.nodes.parent if isinstance(engine.nodes, AddressSpaceNodes) else None
    lookup, to_node = site_variables(aspace, control_id.NamespaceIndex if control_id is not None else 0)

    def writable(name: str) -> bool | None:
        found = lookup(name)
        return None if found is None else found[0]

    def node_of(name: str) -> tuple[ua.NodeId, ua.VariantType] | None:
        found = lookup(name)
        return None if found is None else (to_node(name), found[1])

    def parameter_node(mode: str, name: str) -> ua.NodeId | None:
        return engine.config.mode_parameters.get(mode, {}).get(name)

    store = data_dir / "control" / "schedule.json" if data_dir is not None else None
    schedule = ScheduleService(list(engine.config.schedule), write_path.write, engine.go_to_mode, writable, node_of,
                               parameter_node, store, clock)
    await schedule.start()
    log.info("control: %d schedule entr%s", len(schedule.entries), "y" if len(schedule.entries) == 1 else "ies")
    return schedule


async def serve_system_state(engine: ControlEngine, machines: StateMachineService | None) -> SystemStateBridge | None:
    """The site's Part 16 machine showing the engine's system state (`state_machine:`), following it."""
    name = engine.config.state_machine
    if name is None:
        return None
    if machines is None:
        raise ValueError(f"control: state_machine {name}: the site serves no state machines")
    try:
        machine = machines.machine(name)
    except KeyError as exc:
        raise ValueError(f"control: state_machine: {exc.args[0]}") from None
    bridge = SystemStateBridge(engine, machine)
    await bridge.start()
    return bridge
