"""Load a site: the gateway's types plus the site's nodesets, then its bindings. Shared by start-up and `check`."""

from __future__ import annotations

from pathlib import Path

from asyncua import Server

from gateway.alarms.config import read_alarms
from gateway.bindings import SiteBindings, resolve_bindings
from gateway.facade.resolve import resolve_facade
from gateway.nodeset.loader import LoadedSite, load_nodesets
from gateway.nodeset.model import NodesetError, Problem
from gateway.nodesets import GATEWAY_NAMESPACE, GATEWAY_TYPES
from gateway.statemachines.config import read_state_machines


async def load_site(server: Server, nodesets: list[Path]) -> tuple[LoadedSite, SiteBindings]:
    """Load into an initialised, not yet started server; raise NodesetError listing every problem."""
    own = GATEWAY_TYPES.resolve()
    files = [GATEWAY_TYPES, *(p for p in nodesets if Path(p).resolve() != own)]
    site = await load_nodesets(server, files)
    gw_ns = site.namespaces[GATEWAY_NAMESPACE]
    bindings, problems = resolve_bindings(server.iserver.aspace, site, gw_ns)
    bindings.alarms, alarm_problems = read_alarms(server.iserver.aspace, site, gw_ns)
    problems += alarm_problems
    bindings.facade, facade_problems = resolve_facade(server.iserver.aspace, site, gw_ns)
    problems += facade_problems
    problems += control_problems(server, site)
    bindings.state_machines, machine_problems = read_state_machines(server.iserver.aspace, site, gw_ns)
    problems += machine_problems
    if problems:
        raise NodesetError(problems)
    return site, bindings


def control_problems(server: Server, site: LoadedSite) -> list[Problem]:
    """The site's control configuration checked against its nodes (a setpoint missing or not writable...)."""
    from gateway.control.site import read_control

    control_id, _config, messages = read_control(server.iserver.aspace, site.new_nodes,
                                                 site.namespaces[GATEWAY_NAMESPACE])
    if control_id is None:
        return []
    file, line, written = site.origins.get(control_id, ("site", None, control_id.to_string()))
    return [Problem(file, line, written, message) for message in messages]
