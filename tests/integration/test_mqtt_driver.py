"""The MQTT driver against Mosquitto: instruments publish with mosquitto_pub (an independent client), an OPC UA
client reads through the gateway, writes go out as commands with a response, and a broker that goes away
and returns, a silent topic and garbage payloads turn values Bad and Good again."""

from __future__ import annotations

import asyncio
import getpass
import json
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from field_client import wait_for

from gateway.nodeset.yaml_build import compile_text
from gateway.security.roles import Role
from gateway.security.users import UserStore
from gateway.server import Gateway, GatewayConfig

pytestmark = pytest.mark.integration
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
ROOT = Path(__file__).resolve().parents[2]

_SITE = """site: {{namespace: "urn:test:mqtt", name: Lab}}
devices:
  - name: Psu
    connection: "mqtt://127.0.0.1:{port}/?client_id=gw-test&stale_ms=1500&credentials={credentials}"
    variables:
      - {{name: Voltage, unit: V, address: "Relay/Data/PSU1#/voltage"}}
      - {{name: Current, unit: A, address: "Relay/Data/PSU1#/readings/1"}}
      - {{name: Mode, datatype: String, address: "Relay/Data/PSU1#/mode"}}
      - {{name: Output, datatype: Boolean, address: "Relay/Data/PSU1#/output"}}
      - {{name: Setpoint, unit: V, range: [0, 60], writable: true, address: "Relay/Data/PSU1#/setpoint",
         command_topic: Relay/Request/PSU1, command_key: setpoint, response_topic: Relay/Response/PSU1,
         response_timeout_ms: 1500}}
  - name: Thermo
    connection: "mqtt://127.0.0.1:{port}/?credentials={credentials}"
    variables:
      - {{name: Temperature, unit: °C, address: lab/thermo/t1}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """Mosquitto on a free loopback port with a password file; stop() and start() again on the same port."""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.tmp = tmp
        passwords = tmp / "passwords"
        passwords.write_text("")
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), "gateway", "s3cret"], check=True,
                       capture_output=True)
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), "instrument", "pub-pass"], check=True,
                       capture_output=True)
        self.conf = tmp / "mosquitto.conf"
        # Run as root, Mosquitto would drop to user mosquitto, who cannot read the test's 0700 directory.
        user = f"user {getpass.getuser()}\n"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
                             f"persistence false\n{user}")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                subprocess.run(["sleep", "0.05"])
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None

    def publish(self, topic: str, message: Any) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-u", "instrument", "-P", "pub-pass",
                        "-q", "1", "-t", topic, "-m", text], check=True, capture_output=True, timeout=5)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if MOSQUITTO is None or shutil.which("mosquitto_pub") is None:
        pytest.skip("mosquitto and mosquitto-clients are not installed (tests/run.sh installs them)")
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
async def lab(tmp_path: Path, free_port: int, broker: Broker) -> AsyncIterator[Gateway]:
    credentials = tmp_path / "mqtt-credentials.yaml"
    credentials.write_text("username: gateway\npassword: s3cret\n")
    credentials.chmod(0o600)
    site = tmp_path / "lab.xml"
    site.write_bytes(compile_text(_SITE.format(port=broker.port, credentials=credentials), "lab.yaml"))
    UserStore(tmp_path / "data" / "users.yaml").add("operator1", "op-secret-1", Role.operator)
    gw = Gateway(GatewayConfig(nodesets=[site], endpoint=f"opc.tcp://127.0.0.1:{free_port}",
                               data_dir=tmp_path / "data", insecure=True))
    await gw.load()
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


DOC = {"voltage": 24.5, "readings": [0.1, 1.25], "mode": "CV", "output": True, "setpoint": 24.0}


async def test_json_members_and_plain_payloads_are_read(lab: Gateway, broker: Broker) -> None:
    async with Client(lab.config.endpoint) as client:
        ns = await client.get_namespace_index("urn:test:mqtt")

        def dv(name: str) -> Any:
            return lambda: client.get_node(ua.NodeId(name, ns)).read_data_value(raise_on_bad_status=False)

        async def published_and_good(name: str) -> ua.DataValue:
            broker.publish("Relay/Data/PSU1", DOC)
            broker.publish("lab/thermo/t1", "21.75")
            return await dv(name)()

        got = await wait_for(lambda: published_and_good("Psu.Voltage"), lambda d: d.StatusCode.is_good(),
                              what="first message")
        assert got.Value.Value == 24.5
        assert (await dv("Psu.Current")()).Value.Value == 1.25
        assert (await dv("Psu.Mode")()).Value.Value == "CV"
        assert (await dv("Psu.Output")()).Value.Value is True
        temp = await wait_for(dv("Thermo.Temperature"), lambda d: d.StatusCode.is_good())
        assert temp.Value.Value == 21.75
        broker.publish("Relay/Data/PSU1", {**DOC, "voltage": 12.0})
        await wait_for(dv("Psu.Voltage"), lambda d: d.Value.Value == 12.0, what="second message")

        broker.publish("Relay/Data/PSU1", "not json {")  # garbage: Bad, and the next good message cures it
        bad = await wait_for(dv("Psu.Voltage"), lambda d: d.StatusCode.value == ua.StatusCodes.BadDataEncodingInvalid,
                              what="garbage payload")
        assert bad.Value.Value == 12.0
        broker.publish("Relay/Data/PSU1", {**DOC, "voltage": 13.0})
        await wait_for(dv("Psu.Voltage"), lambda d: d.StatusCode.is_good() and d.Value.Value == 13.0)

        # Silent: nothing on the topic for longer than stale_ms (1.5 s) turns it Bad, the device Disconnected.
        await wait_for(dv("Psu.Voltage"), lambda d: d.StatusCode.value == ua.StatusCodes.BadCommunicationError,
                        what="silent topic")
        state = client.get_node(ua.NodeId("Psu.Diagnostics.ConnectionState", ns))
        await wait_for(state.read_value, lambda s: s == "Disconnected", what="silent device")
        broker.publish("Relay/Data/PSU1", DOC)
        await wait_for(dv("Psu.Voltage"), lambda d: d.StatusCode.is_good(), what="topic speaks again")
        await wait_for(state.read_value, lambda s: s == "Connected")


async def test_a_write_is_a_command_answered_on_the_response_topic(lab: Gateway, broker: Broker,
                                                                   tmp_path: Path) -> None:
    received = tmp_path / "requests.txt"
    # stdbuf: mosquitto_sub writes each request at once, not when its stdout buffer fills.
    sub = subprocess.Popen(["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port),  # noqa: ASYNC220
                            "-u", "instrument", "-P", "pub-pass", "-t", "Relay/Request/PSU1", "-C", "2"],
                           stdout=received.open("w"), stderr=subprocess.DEVNULL)
    try:
        await asyncio.sleep(0.5)  # subscribed before the first write
        url = lab.config.endpoint.replace("opc.tcp://", "opc.tcp://operator1:op-secret-1@")
        async with Client(url) as client:
            ns = await client.get_namespace_index("urn:test:mqtt")
            setpoint = client.get_node(ua.NodeId("Psu.Setpoint", ns))
            await wait_for(lambda: client.get_node(ua.NodeId("Psu.Diagnostics.ConnectionState", ns)).read_value(),
                            lambda s: s in ("Connected", "Connecting"))
            await asyncio.sleep(0.5)  # the driver subscribed

            async def answer_once() -> None:
                for _ in range(100):  # the instrument answers the first request it sees
                    if received.read_text().strip():
                        broker.publish("Relay/Response/PSU1", {"ok": True})
                        return
                    await asyncio.sleep(0.05)

            responder = asyncio.create_task(answer_once())
            await setpoint.write_value(ua.DataValue(ua.Variant(30.5, ua.VariantType.Double)))
            await responder
            assert json.loads(received.read_text().splitlines()[0]) == {"setpoint": 30.5}
            with pytest.raises(ua.UaStatusCodeError) as err:  # nobody answers this one
                await setpoint.write_value(ua.DataValue(ua.Variant(31.0, ua.VariantType.Double)))
            assert err.value.code == ua.StatusCodes.BadTimeout
            assert json.loads(received.read_text().splitlines()[1]) == {"setpoint": 31.0}
    finally:
        sub.kill()
        sub.wait(5)


async def test_broker_gone_and_back_turns_values_bad_and_good(lab: Gateway, broker: Broker) -> None:
    async with Client(lab.config.endpoint) as client:
        ns = await client.get_namespace_index("urn:test:mqtt")
        temp = client.get_node(ua.NodeId("Thermo.Temperature", ns))

        async def publish_and_read() -> ua.DataValue:
            broker.publish("lab/thermo/t1", "20.5")
            return await temp.read_data_value(raise_on_bad_status=False)

        await wait_for(publish_and_read, lambda d: d.StatusCode.is_good(), what="first reading")
        broker.stop()
        bad = await wait_for(lambda: temp.read_data_value(raise_on_bad_status=False),
                              lambda d: d.StatusCode.value == ua.StatusCodes.BadCommunicationError, what="broker gone")
        assert bad.Value.Value == 20.5
        state = client.get_node(ua.NodeId("Thermo.Diagnostics.ConnectionState", ns))
        assert await state.read_value() == "Disconnected"
        broker.start()
        got = await wait_for(publish_and_read, lambda d: d.StatusCode.is_good(), within=15, what="broker back")
        assert got.Value.Value == 20.5
        assert await state.read_value() == "Connected"


def test_the_example_site_is_built_from_its_yaml() -> None:
    yaml_text = (ROOT / "nodesets/examples/mqtt-lab.yaml").read_text(encoding="utf-8")
    assert compile_text(yaml_text, "mqtt-lab.yaml") == (ROOT / "nodesets/examples/mqtt-lab.xml").read_bytes()


async def test_the_example_site_under_simulate_reads_and_writes_through_the_simulated_relay(
        simulated_gateway: Any) -> None:
    from gateway.drivers.mqtt.simulator import MqttSimulation

    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (tests/run.sh installs it)")
    gw = await simulated_gateway(ROOT / "nodesets/examples/mqtt-lab.xml")
    sim = next(s for s in gw.simulations if isinstance(s, MqttSimulation))
    url = gw.config.endpoint.replace("opc.tcp://", "opc.tcp://operator1:op-secret-1@")
    async with Client(url) as client:
        ns = await client.get_namespace_index("urn:opcua-gateway:examples:mqtt-lab")

        def dv(name: str) -> Any:
            return lambda: client.get_node(ua.NodeId(name, ns)).read_data_value(raise_on_bad_status=False)

        voltage = await wait_for(dv("PowerSupply.Voltage"), lambda d: d.StatusCode.is_good(), what="Voltage")
        assert 0 <= voltage.Value.Value <= 60
        assert (await wait_for(dv("Hygrometer.DewPoint"), lambda d: d.StatusCode.is_good())).Value.Value > 0
        await client.get_node(ua.NodeId("PowerSupply.VoltageSetpoint", ns)).write_value(
            ua.DataValue(ua.Variant(42.0, ua.VariantType.Double)))  # answered by the relay, else BadTimeout
        assert sim.requests[-1] == ("Relay/Request/PSU1", {"voltage_setpoint": 42.0})
        await wait_for(dv("PowerSupply.VoltageSetpoint"), lambda d: d.Value.Value == 42.0, what="held setpoint")
