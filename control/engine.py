"""The control engine: the cycle, the safety interlocks' immediate action, the stall watchdog, the API.

Each cycle (the site's period, 100 ms .. 60 s): every interlock is evaluated; unless the system is in Run
every setpoint is pinned to its safe value at safety priority; otherwise the charge limiter and the
active mode add their constraints. Per setpoint the constraints are arbitrated, the ramp limit applied
(not to a safe value forced by safety: that one is applied at once), clamped into the bounds that held,
and written when changed. Interlocks also run on every change of their inputs (a change-feed listener)
and force the safe setpoints right there, without waiting for the cycle.

The API the methods bind to: `go_to_mode(name, writer)`, `reset(name, writer)`, `request_state(...)`.
"""

from __future__ import annotations

import asyncio
import logging
import math

from asyncua import ua

from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.control.arbitration import Constraint, Decision, arbitrate, describe_drop, drop_key
from gateway.control.channel import SetpointChannel, WriteFn
from gateway.control.charge_limiter import ChargeLimiter
from gateway.control.config import EXTERNAL_CONTROL, ControlConfig
from gateway.control.controller import SAFETY, Controller, CycleContext
from gateway.control.grid_support import GridSupport, make_service
from gateway.control.image import ProcessImage
from gateway.control.modes import Mode, load_modes
from gateway.control.outputs import StatusNodes
from gateway.control.ramp import RampLimiter
from gateway.control.safety import Interlock, InterlockSpec, SafetySupervisor, make_interlock
from gateway.control.state import SystemState, SystemStateMachine
from gateway.events.audit import Writer
from gateway.security.roles import Role, ServiceRole

log = logging.getLogger(__name__)
audit = logging.getLogger("gateway.audit")

STALL = "EngineStall"


class StallInterlock(Interlock):
    """Trips when the cycle has not run for more than `stall_periods` periods; clears once it runs."""

    def __init__(self, engine: ControlEngine) -> None:
        super().__init__(InterlockSpec(STALL, "comm_loss", {}), math.inf)
        self.engine = engine

    def present_cause(self, image: ProcessImage) -> str:
        return self.engine.stalled_for()

    def evaluate(self, image: ProcessImage) -> bool:
        return False  # tripped by the watchdog, never by an input


class ControlEngine:
    def __init__(self, config: ControlConfig, write: WriteFn, clock: Clock = SYSTEM_CLOCK,
                 nodes: StatusNodes | None = None, image: ProcessImage | None = None) -> None:
        problems = config.problems()
        if problems:
            raise ValueError("control: " + "; ".join(problems))
        self.config = config
        self.clock = clock
        self.period = config.period_s
        self.nodes = nodes or StatusNodes()
        self.image = image or ProcessImage(clock)
        self.state = SystemStateMachine()
        self.channels = {name: SetpointChannel(spec, write) for name, spec in config.setpoints.items()}
        self.ramps = {name: RampLimiter(spec.ramp_per_s) for name, spec in config.setpoints.items()}
        self.outputs: dict[str, float | None] = dict.fromkeys(config.setpoints)
        # Each output before rounding to its resolution: what the controllers see as the present output.
        # A PID tracking the rounded value would lose up to one resolution step of integral every cycle,
        # a dead band of resolution / (ki * period) around its setpoint (0.8 kW at 0.1 kW, ki 0.6, 200 ms).
        self.exact: dict[str, float | None] = dict.fromkeys(config.setpoints)
        # What the grid-support services added to each output last cycle (outside the ramp limit): the modes
        # see the output without it, so a PID does not take the service's power for its own.
        self.support: dict[str, float] = dict.fromkeys(config.setpoints, 0.0)
        self.services: list[GridSupport] = [make_service(n, p) for n, p in config.grid_support.items()]
        self.modes: dict[str, Mode] = {name: cls(config.modes.get(name)) for name, cls in load_modes().items()}
        if config.mode not in self.modes:
            raise ValueError(f"control: unknown mode {config.mode!r} (known: {', '.join(sorted(self.modes))})")
        self.mode = config.mode
        self.limiter: Controller | None = ChargeLimiter(config.charge_limiter) \
            if config.charge_limiter is not None else None
        self.safety = SafetySupervisor([make_interlock(s, config.max_age_s) for s in config.interlocks], self.image)
        self.stall = StallInterlock(self)
        self.safety.add(self.stall)
        self.safety.trip_listeners.append(self._on_trip)
        self.safety.reset_listeners.append(self._on_reset)
        self.image.track(config.signals.values(), config.confirmed_by)
        self.image.track((n for spec in config.interlocks for n in spec.inputs.values()), config.confirmed_by)
        self.image.track(spec.node for spec in config.setpoints.values())
        self.image.track(n for params in config.mode_parameters.values() for n in params.values())
        self.image.track(n for params in config.service_parameters.values() for n in params.values())
        self.service_outputs: dict[str, float] = {s.name: 0.0 for s in self.services}
        self.cycles = 0
        self.overruns = 0
        self.controller_failures = 0
        self.dropped: list[str] = []
        self._drop_keys: set[tuple[str, str, str, str]] = set()
        self.decisions: dict[str, Decision] = {}
        self._activate = True  # the active mode starts bumpless on the next cycle in Run
        self._last_start: float | None = None
        self._started_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._failed_controllers: set[str] = set()
        self._publish_state()

    # -- the cycle ----------------------------------------------------------------------------
    async def cycle(self) -> None:
        now = self.clock.monotonic()
        dt = self.period if self._last_start is None else now - self._last_start
        self._last_start = now
        self.cycles += 1
        if self._started_at is None:
            self._started_at = now
        if self.state.state is SystemState.Init and not self.safety.armed:
            # Start-up: stay safe (not latched) until every interlock input has a good value; an input
            # still missing after the maximum input age trips as any other.
            if not self.safety.waiting() or now - self._started_at > self.config.max_age_s:
                self.safety.armed = True
        self.safety.evaluate_all()
        if self.state.state is SystemState.Init and self.safety.armed and not self.safety.tripped:
            self.state.go(SystemState.Run, "inputs ready")
        self._refresh_mode_parameters()
        present = {name: self._base(name) for name in self.channels}
        ctx = CycleContext(self.image, self.config.signals, self.clock.now(), dt, self.config.max_age_s, present,
                           supported=dict(self.support))
        self._fall_back(ctx)
        forced = not self.state.controlling
        if forced:
            self.service_outputs = dict.fromkeys(self.service_outputs, 0.0)
            why = ", ".join(i.name for i in self.safety.tripped) or self.state.state.name
            ctx.source, ctx.priority = why, SAFETY
            for name, spec in self.config.setpoints.items():
                ctx.constrain(name, "=", spec.safe, "safe setpoint")
        controllers: list[Controller] = [self.limiter] if self.limiter is not None else []
        if not forced:
            mode = self.modes[self.mode]
            if self._activate:
                self._activate = False
                mode.activate(self._ctx_for(ctx, mode))
            controllers.append(mode)
            controllers += self.services
        for controller in controllers:
            self._run(controller, ctx)
        self._decide(ctx.constraints, {} if forced else ctx.supports, dt, forced)
        self._publish_state()
        await self.nodes.flush()

    def _fall_back(self, ctx: CycleContext) -> None:
        """Hand over to the site's fallback mode: ExternalControl while its fallback signal is true or not Good,
        any started mode that says it must (`Mode.hand_over`: LocalControl's missed heartbeat)."""
        if self.config.fallback is None:
            return
        signal, target = self.config.fallback
        if self.mode == target:
            return
        why = ""
        if self.mode == EXTERNAL_CONTROL and signal is not None:
            inp = ctx.input(signal)
            if not (inp.good and inp.value is False):
                why = f"{signal} " + ("is true" if inp.good else f"is not Good ({inp.why_not(float('inf'))})")
        if not why and not self._activate:  # a mode not started yet has nothing to judge its supervisor by
            why = self.modes[self.mode].hand_over(ctx)
        if why:
            log.warning("control: %s; %s falls back to %s", why, self.mode, target)
            self.mode, self._activate = target, True

    def _ctx_for(self, ctx: CycleContext, controller: Controller) -> CycleContext:
        ctx.source, ctx.priority = controller.name, controller.priority
        return ctx

    def _run(self, controller: Controller, ctx: CycleContext) -> None:
        self._ctx_for(ctx, controller)
        before = len(ctx.constraints)
        supports = dict(ctx.supports)
        try:
            controller.run(ctx)
            if controller.name in self.service_outputs:
                self.service_outputs[controller.name] = sum(ctx.supports.values()) - sum(supports.values())
        except Exception:
            # A failing controller adds nothing this cycle (what it added is withdrawn); the others still run.
            del ctx.constraints[before:]
            ctx.supports.clear()
            ctx.supports.update(supports)
            if controller.name in self.service_outputs:
                self.service_outputs[controller.name] = 0.0
            self.controller_failures += 1
            if controller.name not in self._failed_controllers:
                self._failed_controllers.add(controller.name)
                log.exception("controller %s failed; its constraints are withdrawn while it fails", controller.name)
            return
        if controller.name in self._failed_controllers:
            self._failed_controllers.discard(controller.name)
            log.warning("controller %s runs again", controller.name)

    def _base(self, name: str) -> float | None:
        """A setpoint's present output without the grid support in it (what the modes steer)."""
        channel = self.channels[name]
        out = channel.written if channel.failed else self.exact[name]
        return None if out is None else out - self.support[name]

    def _decide(self, constraints: list[Constraint], supports: dict[str, float], dt: float, forced: bool) -> None:
        dropped: list[tuple[tuple[str, str, str, str], str]] = []
        for name, spec in self.config.setpoints.items():
            channel = self.channels[name]
            # A refused write is not in the plant: the next decision starts from what was accepted.
            present = channel.written if channel.failed else self.exact[name]
            if present is None:  # first decision: from what the device holds, else from the safe value
                present = self.image.get(spec.node).number(math.inf)
                if present is None:
                    present = spec.safe
            mine = [c for c in constraints if c.setpoint == name]
            held = None
            if not any(c.op == "=" for c in mine):
                # Bounds only: what the device holds (perhaps an operator's value) stays unless it breaks them.
                held = self.image.get(spec.node).number(math.inf)
                present = held if held is not None else present
            decision = arbitrate(name, mine, present)
            self.decisions[name] = decision
            dropped += [(drop_key(c, bound), describe_drop(c, bound)) for c, bound in decision.dropped]
            support, last = supports.get(name, 0.0), self.support[name]
            if not support and not last and (decision.target is None or (held is not None and decision.target == held)):
                self.outputs[name] = held if held is not None else self.outputs[name]
                self.exact[name] = held if held is not None else self.exact[name]
                continue  # nobody constrains it, or what it holds is inside the bounds: left alone
            base_present = present - last
            target = base_present if decision.target is None or held is not None else decision.target
            # The ramp smooths the mode's part only: a grid service's response time is the grid code's.
            base = target if forced else self.ramps[name].step(base_present, target, dt)
            out = min(max(base + support, decision.low), decision.high)  # a bound that held beats the ramp
            self.support[name] = support
            self.exact[name] = out
            if spec.resolution > 0:  # towards zero: never more power than decided
                out = math.trunc(out / spec.resolution) * spec.resolution
            self.outputs[name] = out
            who = decision.decided_by or "engine"
            channel.want(out, Writer(f"control:{who}", ServiceRole.control,
                                     reason=f"{name} {out:g}" + (" (safe)" if forced else "")))
        # Logged once per conflict (who against whom), not per cycle while its values move.
        for key, text in dropped:
            if key not in self._drop_keys:
                log.warning("control conflict: %s", text)
        self._drop_keys = {key for key, _ in dropped}
        self.dropped = [text for _, text in dropped]

    def _refresh_mode_parameters(self) -> None:
        services = {s.name: s for s in self.services}
        for name, params in self.config.service_parameters.items():
            for pname, node in params.items():
                value = self.image.get(node).number(math.inf)
                if value is not None and name in services:
                    services[name].params[pname] = value
        for mode_name, params in self.config.mode_parameters.items():
            mode = self.modes.get(mode_name)
            if mode is None:
                continue
            for pname, node in params.items():
                value = self.image.get(node).number(math.inf)
                if value is not None:
                    mode.params[pname] = value

    # -- safety acting at once ----------------------------------------------------------------
    def _on_trip(self, interlock: Interlock) -> None:
        self.state.go(SystemState.Error, f"{interlock.name}: {interlock.cause}")
        self.force_safe(f"control:{interlock.name}", interlock.cause)

    def _on_reset(self, interlock: Interlock) -> None:
        if not self.safety.tripped and self.state.state is SystemState.Error:
            self.state.go(SystemState.Run, f"{interlock.name} reset")
            self._activate = True
        self._publish_state()

    def force_safe(self, who: str, why: str) -> None:
        """Write every safe setpoint now (from a change listener: no waiting for the cycle)."""
        for name, spec in self.config.setpoints.items():
            self.outputs[name] = self.exact[name] = spec.safe
            self.support[name] = 0.0
            self.channels[name].want(spec.safe, Writer(who, ServiceRole.control, reason=f"safe setpoint: {why}"))
        self._publish_state()
        self._flush_soon()

    def _flush_soon(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.nodes.flush(), name="control nodes")
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    def stalled_for(self) -> str:
        """Why the engine counts as stalled now ("" when it is not)."""
        if self._last_start is None:
            return ""
        late = self.clock.monotonic() - self._last_start
        limit = (self.config.stall_periods + 1) * self.period
        return f"no control cycle for {late:.2f} s (more than {self.config.stall_periods} periods late)" \
            if late > limit else ""

    # -- the API methods bind to ----------------------------------------------------------------
    def go_to_mode(self, name: str, writer: Writer) -> tuple[ua.StatusCode, str]:
        """Switch the active mode (bumpless: it starts from the present outputs)."""
        if not writer.role.allows(Role.operator):
            status, text = ua.StatusCode(ua.StatusCodes.BadUserAccessDenied), "switching modes needs an operator"
        elif name not in self.modes:
            status = ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
            text = f"no mode {name!r} (known: {', '.join(sorted(self.modes))})"
        else:
            if name != self.mode:
                log.info("control mode %s -> %s by %s", self.mode, name, writer.name)
                self.mode, self._activate = name, True
            status, text = ua.StatusCode(ua.StatusCodes.Good), ""
            self._publish_state()
        audit.info("%s GoToMode %s by %s (%s): %s%s", "accepted" if status.is_good() else "refused", name,
                   writer.name, writer.role.name, status.name, f": {text}" if text else "")
        return status, text

    def reset(self, name: str, writer: Writer) -> tuple[ua.StatusCode, str]:
        """An operator's reset of a tripped interlock (once its cause is gone); "*" resets every one."""
        result = self.safety.reset(name, writer)
        self._publish_state()
        return result

    def request_state(self, target: str, writer: Writer) -> tuple[ua.StatusCode, str]:
        """Sleep, Maintenance or Run on request (Error only by a trip; left by a reset)."""
        try:
            state = SystemState[target]
        except KeyError:
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument), f"no state {target!r}"
        if not writer.role.allows(Role.operator):
            return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied), "changing the state needs an operator"
        if state is SystemState.Error or (state is SystemState.Run and self.safety.tripped):
            return ua.StatusCode(ua.StatusCodes.BadInvalidState), "Error is entered by a trip and left by a reset"
        if state is not self.state.state and not self.state.go(state, f"requested by {writer.name}"):
            return ua.StatusCode(ua.StatusCodes.BadInvalidState), f"no transition {self.state.state.name} -> {target}"
        self._activate = True
        audit.info("accepted state %s by %s (%s)", target, writer.name, writer.role.name)
        self._publish_state()
        return ua.StatusCode(ua.StatusCodes.Good), ""

    # -- what is shown ------------------------------------------------------------------------
    def _publish_state(self) -> None:
        n, V = self.nodes, ua.VariantType
        n.set("State", int(self.state.state), V.Int32)
        n.set("StateName", self.state.state.name, V.String)
        n.set("Mode", self.mode, V.String)
        n.set("ModeCode", self.modes[self.mode].code, V.UInt16)
        n.set("Cycles", self.cycles, V.UInt64)
        n.set("CycleOverruns", self.overruns, V.UInt32)
        n.set("DroppedConflicts", list(self.dropped), V.String)
        for interlock in self.safety.interlocks.values():
            n.set(f"Interlocks.{interlock.name}.Tripped", interlock.tripped, V.Boolean)
            n.set(f"Interlocks.{interlock.name}.Cause", interlock.cause, V.String)
            n.set(f"Interlocks.{interlock.name}.Severity", interlock.spec.severity, V.UInt16)
        for name, channel in self.channels.items():
            out = self.outputs[name]
            n.set(f"Setpoints.{name}.Output", float(out) if out is not None else math.nan, V.Double)
            n.set(f"Setpoints.{name}.WriteStatus", channel.status.name, V.String)
            decision = self.decisions.get(name)
            n.set(f"Setpoints.{name}.DecidedBy", decision.decided_by if decision else "", V.String)
            n.set(f"Setpoints.{name}.Constraints", [str(c) for c in decision.kept] if decision else [], V.String)
            n.set(f"Setpoints.{name}.GridSupport", float(self.support[name]), V.Double)
        for service, out in self.service_outputs.items():
            n.set(f"GridSupport.{service}.Output", float(out), V.Double)

    # -- running ------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.nodes.ensure()
        await self.nodes.flush()
        self._tasks.append(asyncio.create_task(self._loop(), name="control cycle"))
        self._tasks.append(asyncio.create_task(self._watchdog(), name="control watchdog"))

    async def _loop(self) -> None:
        deadline = self.clock.monotonic()
        while True:
            try:
                await self.cycle()
            except Exception:
                log.exception("control cycle failed")
            deadline += self.period
            now = self.clock.monotonic()
            if deadline < now:  # overran: count it, skip the missed periods rather than burst
                self.overruns += 1
                deadline = now + self.period - ((now - deadline) % self.period)
            await self.clock.sleep(deadline - now)

    async def _watchdog(self) -> None:
        while True:
            await self.clock.sleep(self.period)
            cause = self.stalled_for()
            if cause and not self.stall.tripped:
                self.safety.trip(self.stall, cause)

    async def stop(self, within_s: float = 0.5) -> None:
        """Stop cycling and leave the plant safe: every safe setpoint written (bounded by `within_s`)."""
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not self.channels:
            return
        for name, spec in self.config.setpoints.items():
            if self.outputs[name] is not None:
                self.channels[name].want(spec.safe, Writer("control:stop", ServiceRole.control,
                                                           reason="gateway stopping"))
        try:
            async with asyncio.timeout(within_s):
                for channel in self.channels.values():
                    await channel.settle()
        except TimeoutError:
            log.error("control: safe setpoints not confirmed within %g s of the stop", within_s)
        for channel in self.channels.values():
            channel.cancel()

    async def settle(self) -> None:
        """Wait for every write in flight (tests)."""
        for channel in self.channels.values():
            await channel.settle()
        self._publish_state()
        await self.nodes.flush()
