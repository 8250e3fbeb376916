"""The interlocks of a site together: evaluated on their inputs' changes and every cycle; reset by name."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from asyncua import ua

from gateway.control.image import ProcessImage
from gateway.control.safety.interlock import Interlock
from gateway.events.audit import Writer
from gateway.security.roles import Role

log = logging.getLogger(__name__)
audit = logging.getLogger("gateway.audit")

TripListener = Callable[[Interlock], None]


class SafetySupervisor:
    def __init__(self, interlocks: Iterable[Interlock], image: ProcessImage) -> None:
        self.interlocks = {i.name: i for i in interlocks}
        self.image = image
        self.trip_listeners: list[TripListener] = []
        self.reset_listeners: list[TripListener] = []
        # Disarmed while the engine starts (inputs still waiting for their first value; setpoints are safe
        # then anyway); armed at the first Run, or when the start-up grace ends with an input still missing.
        self.armed = False
        for interlock in self.interlocks.values():
            image.track(interlock.nodes)
            for node in interlock.nodes:
                image.on_change(node, self._hook(interlock))

    def _hook(self, interlock: Interlock) -> Callable[[ua.NodeId], None]:
        def changed(_node: ua.NodeId) -> None:
            if self.armed:
                self._evaluate(interlock)
        return changed

    @property
    def tripped(self) -> list[Interlock]:
        return [i for i in self.interlocks.values() if i.tripped]

    def add(self, interlock: Interlock) -> None:
        """An interlock the engine evaluates itself (its stall watchdog)."""
        self.interlocks[interlock.name] = interlock

    def waiting(self) -> list[str]:
        """Interlock inputs without a usable value yet (the engine's start-up check)."""
        return [f"{i.name}: {why}" for i in self.interlocks.values() for node in i.nodes
                if (why := self.image.get(node).why_not(i.max_age))]

    def evaluate_all(self) -> None:
        if not self.armed:
            return
        for interlock in self.interlocks.values():
            self._evaluate(interlock)

    def trip(self, interlock: Interlock, cause: str) -> None:
        """Trip an interlock whose cause the engine found itself."""
        if interlock.tripped:
            return
        interlock.tripped, interlock.cause = True, cause
        interlock.trips += 1
        log.error("interlock %s tripped: %s", interlock.name, cause)
        self._tell(interlock, self.trip_listeners)

    def _evaluate(self, interlock: Interlock) -> None:
        if interlock.evaluate(self.image):
            self._tell(interlock, self.trip_listeners)

    def _tell(self, interlock: Interlock, listeners: list[TripListener]) -> None:
        for listener in listeners:
            try:
                listener(interlock)
            except Exception:  # one listener's bug must not keep the others from the trip
                log.exception("listener of interlock %s failed", interlock.name)

    def reset(self, name: str, writer: Writer) -> tuple[ua.StatusCode, str]:
        """An operator's reset of one interlock (or "" / "*": every tripped one). Returns status and text."""
        if not writer.role.allows(Role.operator):
            status, text = ua.StatusCode(ua.StatusCodes.BadUserAccessDenied), "resetting needs an operator"
        elif name not in ("", "*") and name not in self.interlocks:
            status = ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
            text = f"no interlock {name!r} (known: {', '.join(self.interlocks)})"
        else:
            targets = self.tripped if name in ("", "*") else [self.interlocks[name]]
            refusals = []
            for interlock in targets:
                was = interlock.tripped
                why = interlock.reset(self.image)
                if why:
                    refusals.append(why)
                elif was:
                    log.warning("interlock %s reset by %s", interlock.name, writer.name)
                    self._tell(interlock, self.reset_listeners)
            status = ua.StatusCode(ua.StatusCodes.BadInvalidState if refusals else ua.StatusCodes.Good)
            text = "; ".join(refusals)
        audit.info("%s reset of interlock %s by %s (%s): %s%s", "accepted" if status.is_good() else "refused",
                   name or "*", writer.name, writer.role.name, status.name, f": {text}" if text else "")
        return status, text
