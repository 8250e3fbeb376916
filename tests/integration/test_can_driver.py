"""The CAN driver end to end: BMS racks on a bus, read and written by an OPC UA client through the gateway.

Under --simulate the racks of nodesets/examples/can-bms.xml send on a python-can virtual bus from the
battery physics; a second site runs on udp_multicast (real sockets) with frames the test sends itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import can
import cantools
import pytest
from asyncua import Client, ua
from field_client import wait_for

from gateway.drivers.canbus.dbc import SHIPPED
from gateway.drivers.canbus.simulators.bms import BmsSimulation
from gateway.nodeset.yaml_build import compile_text
from gateway.security.roles import Role
from gateway.security.users import UserStore
from gateway.server import Gateway, GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "nodesets" / "examples" / "can-bms.xml"
NS = "urn:opcua-gateway:examples:can-bms"
DB = cantools.database.load_file(str(SHIPPED / "bms_rack.dbc"))
pytestmark = pytest.mark.integration


async def _dv(client: Client, ns: int, name: str) -> ua.DataValue:
    return await client.get_node(ua.NodeId(name, ns)).read_data_value(raise_on_bad_status=False)


@pytest.fixture
async def racks(simulated_gateway: Any) -> Gateway:
    return await simulated_gateway(SITE)


def _sim(gw: Gateway) -> BmsSimulation:
    return next(s for s in gw.simulations if isinstance(s, BmsSimulation))


def test_the_example_site_is_built_from_its_yaml() -> None:
    assert compile_text((ROOT / "nodesets/examples/can-bms.yaml").read_text(), "can-bms.yaml") == SITE.read_bytes()


async def test_racks_are_read_with_the_dbc_scaling_value_tables_multiplexing_and_fd(racks: Gateway) -> None:
    sim = _sim(racks)
    async with Client(racks.config.endpoint) as client:
        ns = await client.get_namespace_index(NS)
        for rack in ("Rack1", "Rack2", "Rack3", "Rack4"):
            battery = sim.racks[rack].battery
            soc = await wait_for(lambda r=rack: _dv(client, ns, f"{r}.StateOfCharge"),
                                  lambda dv: dv.StatusCode.is_good(), what=f"{rack} SOC")
            assert soc.Value.Value == pytest.approx(battery.soc, abs=0.1)  # 0.1 % per count in the DBC
            raw = await wait_for(lambda r=rack: _dv(client, ns, f"{r}.StateOfChargeRaw"),
                                  lambda dv: dv.StatusCode.is_good(), what=f"{rack} raw SOC")
            assert raw.Value.Value == round(soc.Value.Value * 10)
            state = await wait_for(lambda r=rack: _dv(client, ns, f"{r}.State"), lambda dv: dv.StatusCode.is_good())
            assert state.Value.Value == "Idle" and state.Value.VariantType == ua.VariantType.String
            voltage = (await _dv(client, ns, f"{rack}.Voltage")).Value.Value
            module = await wait_for(lambda r=rack: _dv(client, ns, f"{r}.Module0Voltage"),
                                     lambda dv: dv.StatusCode.is_good(), what="multiplexed module 0")
            assert module.Value.Value == pytest.approx(voltage / 4, abs=0.1)
            temp3 = await wait_for(lambda r=rack: _dv(client, ns, f"{r}.Module3Temperature"),
                                    lambda dv: dv.StatusCode.is_good(), what="multiplexed module 3")
            assert temp3.Value.Value == pytest.approx(battery.temperature - 1.5, abs=1.0)
            cell24 = await wait_for(lambda r=rack: _dv(client, ns, f"{r}.CellVoltage24"),
                                     lambda dv: dv.StatusCode.is_good(), what="CAN FD frame")
            assert cell24.Value.Value == pytest.approx(voltage / 216 + 0.001 * (24 % 7) - 0.003, abs=0.002)
        socs = [(await _dv(client, ns, f"Rack{i}.StateOfCharge")).Value.Value for i in range(1, 5)]
        assert socs == pytest.approx([60, 55, 50, 45], abs=0.2)  # each rack its own frames (id_offset)
        state = await client.get_node(ua.NodeId("Rack2.Diagnostics.ConnectionState", ns)).read_value()
        assert state == "Connected"


async def test_a_setpoint_is_sent_periodically_and_drives_the_rack(racks: Gateway) -> None:
    sim = _sim(racks)
    rack = sim.racks["Rack3"]
    url = racks.config.endpoint.replace("opc.tcp://", "opc.tcp://operator1:op-secret-1@")
    async with Client(url) as client:
        ns = await client.get_namespace_index(NS)
        setpoint = client.get_node(ua.NodeId("Rack3.PowerSetpoint", ns))
        await setpoint.write_value(ua.DataValue(ua.Variant(40.0, ua.VariantType.Double)))
        await wait_for(lambda: asyncio.sleep(0, rack.commands[-1:]),
                        lambda c: bool(c) and c[-1]["PowerSetpoint"] == pytest.approx(40.0), what="command frame")
        seen = len(rack.commands)
        await asyncio.sleep(0.6)
        assert len(rack.commands) >= seen + 3, "the setpoint is not repeated at the DBC cycle time (100 ms)"
        current = await wait_for(lambda: _dv(client, ns, "Rack3.Current"),
                                  lambda dv: dv.StatusCode.is_good() and dv.Value.Value > 40.0, what="rack current")
        assert current.Value.Value == pytest.approx(rack.battery.power * 1000 / (720 + rack.battery.soc
                                                                                - 0.3 * rack.battery.power), rel=0.1)
        await wait_for(lambda: _dv(client, ns, "Rack3.State"), lambda dv: dv.Value.Value == "Discharging",
                        what="state (RackAlarms, a 500 ms cycle)")
        assert (await _dv(client, ns, "Rack1.Current")).Value.Value == pytest.approx(0.0, abs=0.1)
        with pytest.raises(ua.UaStatusCodeError) as err:  # outside the EURange
            await setpoint.write_value(ua.DataValue(ua.Variant(500.0, ua.VariantType.Double)))
        assert err.value.code == ua.StatusCodes.BadOutOfRange
        await setpoint.write_value(ua.DataValue(ua.Variant(-20.0, ua.VariantType.Double)))  # modifies the task
        await wait_for(lambda: asyncio.sleep(0, rack.commands[-1]["PowerSetpoint"]),
                        lambda v: v == pytest.approx(-20.0), what="modified periodic command")


async def test_silent_rack_garbage_and_return_turn_values_bad_and_good(racks: Gateway) -> None:
    sim = _sim(racks)
    async with Client(racks.config.endpoint) as client:
        ns = await client.get_namespace_index(NS)
        soc = lambda: _dv(client, ns, "Rack2.StateOfCharge")  # noqa: E731
        state = lambda: client.get_node(ua.NodeId("Rack2.Diagnostics.ConnectionState", ns)).read_value()  # noqa: E731
        good = await wait_for(soc, lambda dv: dv.StatusCode.is_good())
        sim.racks["Rack2"].silent = True  # unplugged
        bad = await wait_for(soc, lambda dv: dv.StatusCode.value == ua.StatusCodes.BadCommunicationError,
                              what="silent rack")
        assert bad.Value.Value == good.Value.Value  # the last value stays
        await wait_for(state, lambda s: s == "Disconnected", within=8, what="silent rack's state")
        assert (await _dv(client, ns, "Rack1.StateOfCharge")).StatusCode.is_good()  # the others go on
        sim.racks["Rack2"].silent = False
        await wait_for(soc, lambda dv: dv.StatusCode.is_good(), what="rack back")
        await wait_for(state, lambda s: s == "Connected", what="rack back")
        sim.racks["Rack2"].garbage = True  # frames too short for their DBC message
        await wait_for(soc, lambda dv: dv.StatusCode.value == ua.StatusCodes.BadDataEncodingInvalid,
                        what="garbage frames")
        sim.racks["Rack2"].garbage = False
        await wait_for(soc, lambda dv: dv.StatusCode.is_good(), what="good frames again")


# -- a real socket bus: udp_multicast, frames from the test -----------------------------------
_UDP_SITE = """site: {{namespace: "urn:test:can-udp", name: Udp}}
devices:
  - name: Rack
    connection: "can://udp_multicast/239.74.163.2?dbc=bms_rack.dbc&port={port}&id_offset=64"
    variables:
      - {{name: StateOfCharge, unit: "%", address: "0x100/StateOfCharge"}}
      - {{name: AlarmLevel, datatype: String, address: RackAlarms/AlarmLevel}}
      - {{name: Contactor, datatype: String, writable: true, address: RackCommand/ContactorRequest}}
"""


@pytest.fixture
async def udp_gateway(tmp_path: Path, free_port: int) -> AsyncIterator[tuple[Gateway, int]]:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        udp_port = s.getsockname()[1]
    site = tmp_path / "udp.xml"
    site.write_bytes(compile_text(_UDP_SITE.format(port=udp_port), "udp.yaml"))
    UserStore(tmp_path / "data" / "users.yaml").add("operator1", "op-secret-1", Role.operator)
    gw = Gateway(GatewayConfig(nodesets=[site], endpoint=f"opc.tcp://127.0.0.1:{free_port}",
                               data_dir=tmp_path / "data", insecure=True))
    await gw.load()
    await gw.start()
    try:
        yield gw, udp_port
    finally:
        await gw.stop()


async def test_udp_multicast_frames_are_decoded_and_writes_go_out_once(udp_gateway: tuple[Gateway, int]) -> None:
    gw, port = udp_gateway
    bus = can.Bus(interface="udp_multicast", channel="239.74.163.2", port=port)
    try:
        status, alarms, command = (DB.get_message_by_name(n) for n in ("RackStatus", "RackAlarms", "RackCommand"))
        url = gw.config.endpoint.replace("opc.tcp://", "opc.tcp://operator1:op-secret-1@")
        async with Client(url) as client:
            ns = await client.get_namespace_index("urn:test:can-udp")

            def send(soc: float) -> None:
                bus.send(can.Message(arbitration_id=0x100 + 64, is_extended_id=False, data=status.encode(
                    {"StateOfCharge": soc, "StateOfHealth": 99, "Current": 0, "Voltage": 750})))
                bus.send(can.Message(arbitration_id=0x103 + 64, is_extended_id=False, data=alarms.encode(
                    {"State": 0, "AlarmLevel": "Warning", "OverVoltage": 0, "UnderVoltage": 0, "OverTemperature": 0,
                     "UnderTemperature": 0, "OverCurrent": 0, "InsulationFault": 0, "FaultCode": 0})))

            async def read_soc() -> ua.DataValue:
                send(42.3)
                return await _dv(client, ns, "Rack.StateOfCharge")

            dv = await wait_for(read_soc, lambda dv: dv.StatusCode.is_good(), what="udp frame")
            assert dv.Value.Value == pytest.approx(42.3)
            # The alarm frame may arrive in the batch after the status frame's.
            await wait_for(lambda: _dv(client, ns, "Rack.AlarmLevel"), lambda dv: dv.Value.Value == "Warning",
                            what="value table over udp")
            while bus.recv(0) is not None:  # what the test sent itself (multicast loops back)
                pass
            await client.get_node(ua.NodeId("Rack.Contactor", ns)).write_value(
                ua.DataValue(ua.Variant("Close", ua.VariantType.String)))
            frames = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 3
            while loop.time() < deadline:
                msg = await asyncio.to_thread(bus.recv, 0.2)
                if msg is not None and msg.arbitration_id == 0x110 + 64:
                    frames.append(msg)
                if frames and loop.time() > deadline - 2.5:
                    break
            assert len(frames) == 1, "a once write is one frame"
            decoded = command.decode(frames[0].data)
            assert str(decoded["ContactorRequest"]) == "Close" and decoded["PowerSetpoint"] == 0
            with pytest.raises(ua.UaStatusCodeError) as err:  # no such entry in the value table
                await client.get_node(ua.NodeId("Rack.Contactor", ns)).write_value(
                    ua.DataValue(ua.Variant("Ajar", ua.VariantType.String)))
            assert err.value.code == ua.StatusCodes.BadOutOfRange
    finally:
        bus.shutdown()


async def test_a_bus_that_fails_turns_every_rack_bad_and_is_opened_again(racks: Gateway) -> None:
    from gateway.drivers.canbus.link import CanLink

    async with Client(racks.config.endpoint) as client:
        ns = await client.get_namespace_index(NS)
        soc = lambda: _dv(client, ns, "Rack4.StateOfCharge")  # noqa: E731
        await wait_for(soc, lambda dv: dv.StatusCode.is_good())
        (link,) = CanLink._links.values()
        bus = link.bus
        assert bus is not None
        bus.shutdown()  # the interface goes away under the receive thread (an unplugged adapter)
        await wait_for(soc, lambda dv: dv.StatusCode.value == ua.StatusCodes.BadCommunicationError,
                        what="bus gone")
        error = await client.get_node(ua.NodeId("Rack4.Diagnostics.LastError", ns)).read_value()
        assert "receiving failed" in error
        await wait_for(soc, lambda dv: dv.StatusCode.is_good(), within=10, what="bus opened again")
        assert link.bus is not None and link.bus is not bus
