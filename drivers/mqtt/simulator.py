"""MQTT instruments for `gateway --simulate`: a Mosquitto broker on loopback, and instruments on it.

Every bound topic is published once a second: a JSON document built from the variables' pointers
(`Relay/Data/PSU1#/voltage` makes `{"voltage": ...}`), or the bare value. Numbers move slowly inside
the variable's EURange (20 +- 2 without one), Booleans are true, Strings "OK". A message on a
variable's CommandTopic sets what the instrument holds for it, and is answered `{"ok": true}` on its
ResponseTopic, as a relay answers for its instrument. Devices are pointed at the broker with their
credentials and TLS options left out (it takes anonymous clients on 127.0.0.1 only).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import math
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, parse_qsl, urlencode

import aiomqtt
from asyncua import ua

from gateway.drivers.mqtt import payload

if TYPE_CHECKING:
    from gateway.bindings import BoundVariable, DeviceConfig

log = logging.getLogger(__name__)
PUBLISH_EVERY_S = 1.0
START_WITHIN_S = 5.0
STOP_WITHIN_S = 2.0
_DROPPED_OPTIONS = {"credentials", "tls", "ca"}


def _mosquitto() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if found is None:
        raise NotImplementedError("simulating MQTT devices needs Mosquitto (Debian package mosquitto)")
    return found


def _set(document: dict[str, Any], pointer: str, value: Any) -> None:
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]
    node: Any = document
    for token, following in zip(tokens, [*tokens[1:], None], strict=True):
        if following is None:
            if isinstance(node, list):
                node.extend([0] * (int(token) + 1 - len(node)))
                node[int(token)] = value
            else:
                node[token] = value
            return
        child: Any = [] if following.isdigit() else {}
        if isinstance(node, list):
            node.extend([None] * (int(token) + 1 - len(node)))
            node[int(token)] = node[int(token)] if isinstance(node[int(token)], list | dict) else child
            node = node[int(token)]
        else:
            node = node.setdefault(token, child)


class MqttSimulation:
    def __init__(self, devices: Sequence[DeviceConfig]) -> None:
        self.devices = devices
        self.urls: dict[ua.NodeId, SplitResult] = {}
        self.port = 0
        self.held: dict[ua.NodeId, Any] = {}  # written values, by variable
        self.requests: list[tuple[str, Any]] = []  # (command topic, payload) received, newest last
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="gateway-mqtt-sim-")
        self._t0 = time.monotonic()

    async def start(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = Path(self._dir.name) / "mosquitto.conf"
        # The user line keeps Mosquitto as the gateway's user: as root it would switch to user mosquitto.
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        f"user {getpass.getuser()}\n", encoding="utf-8")
        self._proc = await asyncio.create_subprocess_exec(_mosquitto(), "-c", str(conf),
                                                          stdout=asyncio.subprocess.DEVNULL,
                                                          stderr=asyncio.subprocess.DEVNULL)
        deadline = time.monotonic() + START_WITHIN_S
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                break
            except OSError:
                if time.monotonic() > deadline or self._proc.returncode is not None:
                    await self.stop()
                    raise ValueError(f"the simulated MQTT broker did not start on 127.0.0.1:{self.port}") from None
                await asyncio.sleep(0.05)
        for dev in self.devices:
            query = urlencode([(k, v) for k, v in parse_qsl(dev.url.query) if k not in _DROPPED_OPTIONS])
            self.urls[dev.nodeid] = SplitResult("mqtt", f"127.0.0.1:{self.port}", "/", query, "")
        self._task = asyncio.create_task(self._instruments(), name="MQTT instruments")

    def _value(self, var: BoundVariable) -> Any:
        if var.nodeid in self.held:
            return self.held[var.nodeid]
        if var.vtype == ua.VariantType.Boolean:
            return True
        if var.vtype == ua.VariantType.String:
            return "OK"
        low, high = var.eurange or (18.0, 22.0)
        middle, swing = (low + high) / 2, (high - low) / 10
        value = middle + swing * math.sin((time.monotonic() - self._t0) / 30.0 + hash(var.name) % 7)
        return value if var.vtype in (ua.VariantType.Float, ua.VariantType.Double) else round(value)

    def _documents(self) -> dict[str, Any]:
        docs: dict[str, Any] = {}
        for dev in self.devices:
            for var in dev.variables:
                topic, pointer = payload.split_address(var.binding.address)
                if pointer:
                    doc = docs.setdefault(topic, {})
                    if isinstance(doc, dict):
                        _set(doc, pointer, self._value(var))
                else:
                    docs[topic] = self._value(var)
        return docs

    async def _instruments(self) -> None:
        commands = {(v.binding.options.get("command_topic") or payload.split_address(v.binding.address)[0]): v
                    for d in self.devices for v in d.variables if v.writable}
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier="gateway-sim-instruments") as client:
                    for topic in commands:
                        await client.subscribe(topic)
                    listener = asyncio.create_task(self._answer(client, commands))
                    try:
                        while True:
                            for topic, doc in self._documents().items():
                                await client.publish(topic, json.dumps(doc))
                            await asyncio.sleep(PUBLISH_EVERY_S)
                    finally:
                        listener.cancel()
            except aiomqtt.MqttError as exc:
                log.warning("simulated MQTT instruments: %s; again in 1 s", exc)
                await asyncio.sleep(1.0)

    async def _answer(self, client: aiomqtt.Client, commands: dict[str, Any]) -> None:
        async for message in client.messages:
            topic = message.topic.value
            var = commands.get(topic)
            if var is None or not isinstance(message.payload, bytes | bytearray):
                continue
            try:
                body = json.loads(bytes(message.payload))
            except ValueError:
                continue
            self.requests.append((topic, body))
            del self.requests[:-100]
            key = var.binding.options.get("command_key")
            self.held[var.nodeid] = body.get(key) if key and isinstance(body, dict) else body
            response = var.binding.options.get("response_topic")
            if response:
                await client.publish(response, json.dumps({"ok": True}))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(STOP_WITHIN_S):
                    await self._task
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                async with asyncio.timeout(STOP_WITHIN_S):
                    await self._proc.wait()
            except TimeoutError:
                self._proc.kill()
        self._dir.cleanup()
