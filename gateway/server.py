"""The gateway: one asyncua server serving a site, with its devices, write path, history and security.

`load()` does everything that can fail on a bad site (parsing, validation, bindings) before
anything listens; `start()` opens the endpoints and starts polling; `stop()` stops the drivers,
the server, and flushes history.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from asyncua import ua

from gateway import product
from gateway.addressspace.collector import collector_paused
from gateway.alarms.service import AlarmService
from gateway.bindings import DeviceConfig, SiteBindings
from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.control.engine import ControlEngine
from gateway.control.methods import add_interlock_alarms, bind_control_methods, bind_schedule_methods
from gateway.control.outputs import AddressSpaceNodes
from gateway.control.run import serve_system_state, start_control, start_schedule
from gateway.control.schedule.service import ScheduleService
from gateway.control.state_machine import SystemStateBridge
from gateway.datadir import ensure_data_dir
from gateway.diagnostics import ensure_diagnostics
from gateway.drivers.base import Driver, Simulation
from gateway.events.audit import AuditTrail
from gateway.events.service import EventService
from gateway.facade.service import ModbusFacade
from gateway.health.monitor import GatewayHealth, HealthSources
from gateway.history.service import install_history
from gateway.history.store import HistoryStore, namespace_key
from gateway.influx.config import InfluxConfig, load_config
from gateway.methods import MethodRegistry
from gateway.nodeset.loader import LoadedSite
from gateway.nodesets import GATEWAY_NAMESPACE
from gateway.parameters import ParameterStore
from gateway.security.setup import configure_security
from gateway.session import GatewayInternalServer
from gateway.site import load_site
from gateway.statemachines.service import StateMachineService
from gateway.transport import GatewayServer
from gateway.values.feed import ChangeFeed
from gateway.values.runners import DeviceRunner
from gateway.values.tags import TagTable
from gateway.values.writepath import WritePath

if TYPE_CHECKING:  # imported when a site writes to InfluxDB: its client library takes 0.4 s to import
    from gateway.influx.service import InfluxService

log = logging.getLogger(__name__)

APP_URI = product.APPLICATION_URI
# Stop stages' deadlines (s). Their sum stays well under the 5 s the CLI's watchdog and the systemd
# unit allow, so a stop always ends in time and on the gateway's own terms.
STOP_CONTROL_S = 0.5
STOP_POLLING_S = 0.5
STOP_HISTORY_S = 1.5
STOP_DRIVERS_S = 0.5
STOP_SERVER_S = 1.0
STOP_FACADE_S = 0.5
SWITCH_INTERVAL_S = 0.001  # sys.setswitchinterval once serving (see start)


@dataclass
class GatewayConfig:
    nodesets: list[Path]
    endpoint: str = "opc.tcp://0.0.0.0:4840"
    data_dir: Path = Path("gateway-data")
    insecure: bool = False
    allow_anonymous: bool = True
    history_retention: timedelta | None = timedelta(days=30)
    device_timeout_s: float = 5.0
    simulate: bool = False  # serve every device from a simulator on loopback instead of its connection
    influx: Path | None = None  # the series writer's configuration (`--influx CONFIG`); off when None
    name: str = product.PRODUCT_NAME
    hostnames: list[str] = field(default_factory=lambda: [socket.gethostname(), "localhost", "127.0.0.1"])


class Gateway:
    def __init__(self, config: GatewayConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.clock = clock
        self.server = GatewayServer(iserver=GatewayInternalServer())
        self.site: LoadedSite | None = None
        self.bindings: SiteBindings | None = None
        self.feed: ChangeFeed | None = None
        self.methods: MethodRegistry | None = None
        self.events: EventService | None = None
        self.alarms: AlarmService | None = None
        self.state_machines: StateMachineService | None = None
        self.tags: TagTable | None = None
        self.runners: dict = {}
        self.history: HistoryStore | None = None
        self.write_path: WritePath | None = None
        self.parameters: ParameterStore | None = None
        self.simulations: list[Simulation] = []
        self.health: GatewayHealth | None = None
        self.facade: ModbusFacade | None = None
        self.influx: InfluxService | None = None
        self.control: ControlEngine | None = None
        self.schedule: ScheduleService | None = None
        self.control_state: SystemStateBridge | None = None
        self._started = False

    async def load(self) -> None:
        # The collector is off while the address space is built (gateway.addressspace.collector), and
        # what was built is frozen before it is turned on again: otherwise its first passes would walk
        # the million objects of a load once more, to find them alive (start() freezes again at its end).
        with collector_paused():
            await self._load()
            gc.freeze()

    async def _load(self) -> None:
        # Named before init(), which writes the server's identity with asyncua's defaults otherwise.
        build = product.build_info()
        self.server.product_uri = build.product_uri
        self.server.manufacturer_name = build.manufacturer
        self.server.set_server_name(self.config.name)
        await self.server.init()
        self.server.set_endpoint(self.config.endpoint)
        await self.server.set_application_uri(APP_URI)
        await self.server.set_build_info(build.product_uri, build.manufacturer, build.product_name, build.version,
                                         build.build_number, build.build_date)
        self.site, self.bindings = await load_site(self.server, self.config.nodesets)
        for warning in self.bindings.warnings:
            log.warning("site: %s", warning)
        n_vars = sum(len(d.variables) for d in self.bindings.devices)
        log.info("site loaded in %.2f s: %d nodes, %d devices, %d bound variables",
                 self.site.seconds, len(self.site.new_nodes), len(self.bindings.devices), n_vars)

    async def start(self) -> None:
        assert self.bindings is not None, "load() first"
        cfg = self.config
        # Read before anything starts: a bad file is an InfluxConfigError (ValueError) naming file and key.
        influx_config: InfluxConfig | None = load_config(cfg.influx) if cfg.influx is not None else None
        ensure_data_dir(cfg.data_dir)
        host = urlsplit(cfg.endpoint).hostname or ""
        hostnames = [*cfg.hostnames, *([host] if host and host not in ("0.0.0.0", "::") else [])]
        await configure_security(self.server, cfg.data_dir, insecure=cfg.insecure,
                                 allow_anonymous=cfg.allow_anonymous, app_uri=APP_URI, hostnames=hostnames)
        namespaces = await self.server.get_namespace_array()
        self.history = HistoryStore(cfg.data_dir / "history" / "history.sqlite3", retention=cfg.history_retention,
                                    clock=self.clock, key_of=namespace_key(namespaces))
        await self.history.start()
        install_history(self.server, self.history)
        aspace = self.server.iserver.aspace
        self.feed = ChangeFeed(aspace)
        self.tags = TagTable(aspace, self.history, self.clock, self.feed)
        gw_ns = self.site.namespaces[GATEWAY_NAMESPACE] if self.site else 0
        if cfg.simulate:
            await self._start_simulations()
        for dev in self.bindings.devices:
            diag = await ensure_diagnostics(self.server, dev.nodeid, gw_ns, self.feed, self.clock)
            self.runners[dev.nodeid] = DeviceRunner(dev, self.tags, self.bindings.scan_classes, diag, self.clock,
                                                    cfg.device_timeout_s)
        self.server.iserver.subscription_service.sampling_of = self._scan_periods().get
        self.parameters = ParameterStore(cfg.data_dir / "parameters.json", namespaces)
        self.write_path = WritePath(aspace, self.tags, self.runners, self.history, self.clock, AuditTrail(self.clock),
                                    self.parameters)
        restored = self.write_path.restore_parameters(self.parameters.load())
        if restored:
            log.info("restored %d parameter(s) from %s", restored, self.parameters.path)
        self.server.iserver.write_path = self.write_path
        self.methods = MethodRegistry(aspace)
        self.write_path.methods = self.methods
        self.events = EventService(self.server.iserver, self.clock, sink=self.history)
        self.events.canonical_method = self.methods.canonical
        self.write_path.audit.sinks.append(self.events)
        self.alarms = AlarmService(self.server.iserver, self.feed, self.events, self.methods, self.clock)
        system_alarms = [self.alarms.add_communication_alarm(dev.nodeid, dev.name, diagnostics.nodes["ConnectionState"],
                                                           gw_ns)
                       for dev in self.bindings.devices
                       if (diagnostics := self.runners[dev.nodeid].diagnostics) is not None]
        if self.bindings.facade is not None:
            self.facade = ModbusFacade(self.bindings.facade, self.server, self.write_path, self.feed, gw_ns,
                                       self.clock)
            await self.facade.prepare()
            if self.facade.expired_node is not None:
                name = self.bindings.facade.name
                system_alarms.append(self.alarms.add_system_alarm(
                    self.bindings.facade.nodeid, name, "WatchdogAlarm", self.facade.expired_node, True,
                    (f"{name}: the SCADA stopped changing the watchdog register; its setpoints are withdrawn",
                     f"{name}: the SCADA's watchdog is alive again"), gw_ns, 800))
        if influx_config is not None:
            from gateway.influx.service import queue_full_alarm

            system_alarms.append(queue_full_alarm(self.alarms, gw_ns))
        self.alarms.start(self.bindings.alarms, system_alarms)
        self.state_machines = StateMachineService(self.server.iserver, self.feed, self.events, self.methods, self.clock)
        await self.state_machines.start(self.bindings.state_machines)
        self.events.start()
        if influx_config is not None:  # before polling starts, so the first values are written too
            from gateway.influx.service import InfluxService

            self.influx = InfluxService(influx_config, cfg.nodesets[-1].stem, cfg.data_dir, self.feed, self.tags,
                                        gw_ns, self.clock, self.events)
            await self.influx.start()
        await self.server.start()
        self._started = True
        for runner in self.runners.values():
            await runner.start()
        if self.facade is not None:
            await self.facade.start()
        tags = self.tags
        self.health = GatewayHealth(self.feed, gw_ns, HealthSources(lambda: tags.stored, self.history,
                                                                 lambda: self.runners.values()), self.clock)
        await self.health.refresh()
        self.health.start()
        self.control = await start_control(self.server, self.site, self.feed, self.write_path, self.runners, gw_ns,
                                           self.clock)
        if self.control is not None and isinstance(self.control.nodes, AddressSpaceNodes):
            control_id = self.control.nodes.parent
            await bind_control_methods(self.server, self.control, control_id, gw_ns, self.methods)
            add_interlock_alarms(self.control, control_id, "Control", gw_ns, self.alarms)
            self.schedule = await start_schedule(self.server, self.control, self.write_path, cfg.data_dir, self.clock)
            await bind_schedule_methods(self.server, self.schedule, control_id, gw_ns, self.methods)
            self.control_state = await serve_system_state(self.control, self.state_machines)
        # What is loaded now (the address space: 1.5 M objects for 25,000 nodes) lives as long as the
        # gateway. Frozen, the collector's full passes no longer walk it: each took 0.4-0.7 s and, at
        # 10,000 changes/s, came every half minute (bench_history). No gc.collect() first: it found
        # nothing to free after a load and would block the loop for those same 0.4 s.
        gc.freeze()
        # Every stored value (a DataValue and its Variant) lives until the variable's next change, so at
        # 10,000 changes/s the default first threshold (700) ran a young collection every few ms and moved
        # each value into the older generations, whose collections then held the loop: 10,000 alarms at
        # 1 Hz, lateness max 57 ms, 5 full collections in 40 s. At 10,000 young collections come seldom
        # enough that most values are replaced before one sees them: max 41 ms, no full collection, 0.2 % of
        # a core in the collector (bench_alarms (A), same machine and run set-up).
        gc.set_threshold(10_000, 10, 10)
        # The history writer's thread encodes events in Python: each time it wants the GIL the event loop's
        # thread is made to give it up after a switch interval, and then waits as long for it to come
        # back. At the default 5 ms that put 10-20 ms into the loop's slices at 10,000 alarms (bench_alarms).
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        log.info("serving %s", cfg.endpoint)

    def _scan_periods(self) -> dict[ua.NodeId, float]:
        """The scan period (ms) of each polled variable: a monitored item samples it no faster."""
        assert self.bindings is not None
        periods: dict[ua.NodeId, float] = {}
        for dev in self.bindings.devices:
            if self.runners[dev.nodeid].driver.pushes:
                continue  # pushed values change by exception
            for var in dev.variables:
                periods[var.nodeid] = self.bindings.scan_classes[var.binding.scan_class]
        return periods

    async def _start_simulations(self) -> None:
        """Start each driver's simulators and point its devices at them (`gateway --simulate`)."""
        assert self.bindings is not None
        by_driver: dict[type[Driver], list[DeviceConfig]] = {}
        for dev in self.bindings.devices:
            by_driver.setdefault(dev.driver, []).append(dev)
        for driver, devices in by_driver.items():
            sim = await driver.simulate(devices, self.clock)
            self.simulations.append(sim)
            for dev in devices:
                dev.url = sim.urls.get(dev.nodeid, dev.url)

    async def stop(self) -> None:
        """Stop in stages, each with its own deadline, whatever state start() reached.

        The Modbus facade closes first (no SCADA request reaches a stopping gateway), then control
        stops, writing its safe setpoints while the drivers still write, then polling ends (nothing
        new is produced), then history is flushed (what was polled is kept), then drivers and
        simulators close, then the server's sockets and sessions. A stage that overruns is logged and
        left behind so the next one still runs: the whole stop stays within the sum of the stage
        deadlines, under the 5 s the CLI's watchdog allows.
        """
        runners = list(self.runners.values())
        if self.facade is not None:  # first: no SCADA request reaches a gateway that is stopping
            await _stage("closing the Modbus facade", STOP_FACADE_S, self.facade.stop())
        if self.schedule is not None:  # no entry fires into a stopping engine
            await _stage("stopping the schedule", STOP_CONTROL_S, self.schedule.stop())
            self.schedule = None
        if self.control_state is not None:
            await _stage("stopping the control state machine", STOP_CONTROL_S, self.control_state.stop())
            self.control_state = None
        if self.control is not None:  # while the drivers still write: the plant is left safe
            await _stage("stopping control", STOP_CONTROL_S, self.control.stop(STOP_CONTROL_S))
            self.control = None
        if self.alarms is not None:
            self.alarms.stop()
        await _stage("stopping polling", STOP_POLLING_S,
                     *(r.stop_polling(STOP_POLLING_S) for r in runners),
                     *([self.health.stop()] if self.health is not None else []),
                     *([self.events.stop()] if self.events is not None else []))
        if self.history is not None:
            await _stage("flushing history", STOP_HISTORY_S, self.history.stop(within_s=STOP_HISTORY_S),
                         *([self.influx.stop(within_s=STOP_HISTORY_S - 0.2)] if self.influx is not None else []))
        await _stage("closing drivers", STOP_DRIVERS_S,
                     *(r.close(STOP_DRIVERS_S) for r in runners), self._stop_simulations(),
                     *([asyncio.to_thread(self.parameters.close)] if self.parameters is not None else []))
        if self._started or self.server.bserver is not None:  # also a start cut short by a stop
            self._started = False
            await _stage("closing the server", STOP_SERVER_S, self._stop_server())
        # What load() and start() froze is garbage now, and frozen garbage that refers to itself is never
        # collected: a process that runs gateways one after another (the tests, an embedding application)
        # would keep every stopped one.
        gc.unfreeze()
        log.info("stopped")

    async def _stop_server(self) -> None:
        iserver = self.server.iserver
        # asyncua's clock task sleeps a second between updates and stop() waits for it: end it now.
        time_task = getattr(iserver, "time_task", None)
        if time_task is not None and not time_task.done():
            iserver._time_task_stop = True
            time_task.cancel()
            await asyncio.wait([time_task])
        iserver.time_task = None
        await self.server.stop()
        self.server.bserver = None
        # Sessions whose client vanished outlive their connection (OPC UA allows a reconnect); at stop
        # they and their subscriptions' publish tasks go too, or they would keep the loop alive.
        for session in list(iserver._external_sessions.values()):
            await session.close_session(True)

    async def _stop_simulations(self) -> None:
        for sim in self.simulations:
            await sim.stop()
        self.simulations.clear()

    async def __aenter__(self) -> Gateway:
        await self.load()
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _stage(what: str, within_s: float, *steps: Awaitable[object]) -> None:
    """Run the steps of one stop stage together; after `within_s` log what is left and move on."""
    if not steps:
        return
    tasks = [asyncio.ensure_future(step) for step in steps]
    done, pending = await asyncio.wait(tasks, timeout=within_s)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("stop: %s failed: %r", what, task.exception())
    if pending:
        log.error("stop: %s took longer than %g s; left behind", what, within_s)
        for task in pending:
            task.cancel()
