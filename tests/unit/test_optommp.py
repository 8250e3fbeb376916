"""OptoMMP as data: packets built and parsed (tests/cases/optommp/packets), memory-map locations and values
(tests/cases/optommp/values), read planning, and the simulated controller's answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.drivers.optommp import memory, packets
from gateway.drivers.optommp.driver import parse_connection
from gateway.drivers.optommp.simulator import MmpController
from gateway.nodeset.model import NodesetError
from gateway.nodeset.yaml_build import compile_text

ROOT = Path(__file__).resolve().parents[2] / "tests" / "cases" / "optommp"
PACKETS = sorted(p for p in (ROOT / "packets").iterdir() if p.is_dir())
VALUES = sorted(p for p in (ROOT / "values").iterdir() if p.is_dir())


def _case(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "case.yaml").read_text(encoding="utf-8"))


def _hex(text: str) -> bytes:
    return bytes.fromhex(text)


@pytest.mark.parametrize("folder", PACKETS, ids=[p.name for p in PACKETS])
def test_packet_case(folder: Path) -> None:
    case = _case(folder)
    raw = _hex(case["bytes"])
    if "build" in case:
        args = dict(case["build"])
        kind = args.pop("kind")
        if "data" in args:
            args["data"] = _hex(args["data"])
        assert getattr(packets, kind)(**args) == raw
        parsed = packets.parse(raw)  # and a request parses back to what built it
        assert (parsed.tlabel, parsed.address) == (args["tlabel"], args["address"])
        assert parsed.data == args.get("data", b"") and parsed.length == args.get("length", 0)
        return
    if "error" in case:
        with pytest.raises(packets.PacketError) as err:
            packets.remaining(raw[:packets.HEAD], raw[packets.HEAD:])
            packets.parse(raw)
        assert case["error"] in str(err.value)
        return
    assert packets.remaining(raw[:packets.HEAD], raw[packets.HEAD:]) == 0
    got = packets.parse(raw)
    want = case["parsed"]
    assert (got.tcode, got.tlabel, got.rcode, got.data) == (want["tcode"], want["tlabel"], want["rcode"],
                                                             _hex(want["data"]))


@pytest.mark.parametrize("folder", VALUES, ids=[p.name for p in VALUES])
def test_value_case(folder: Path) -> None:
    case = _case(folder)
    if "error" in case:
        with pytest.raises(ValueError) as err:
            memory.locate(case["address"], case["field_type"], case.get("length"))
        assert case["error"] in str(err.value)
        return
    loc = memory.locate(case["address"], case["field_type"], case.get("length"))
    assert (loc.read, loc.write) == (case["read"], case["write"])
    raw = _hex(case["bytes"])
    value = memory.decode(raw, loc)
    assert value == case["expected"] and type(value) is type(case["expected"])
    assert memory.encode(value, loc) == raw


def test_packets_are_delimited_from_their_first_bytes() -> None:
    block = packets.read_block_response(5, b"abcdefgh")
    assert packets.remaining(block[:12]) == 4  # the length field first
    assert packets.remaining(block[:12], block[12:16]) == 8  # then the data it announces
    assert packets.remaining(packets.write_response(1)) == 0
    assert packets.remaining(packets.read_quadlet_response(1, b"\0\0\0\1")[:12]) == 4
    with pytest.raises(packets.PacketError, match="transaction label 64"):
        packets.read_quadlet(64, 0)


@pytest.mark.parametrize(("value", "field_type", "message"), [
    (2**31, "xsd:int", "outside"), (1.5, "xsd:int", "not a whole number"), ("x" * 20, "xsd:string", "do not fit")])
def test_values_that_do_not_fit_are_refused(value: Any, field_type: str, message: str) -> None:
    address = "0xF0D83000" if field_type == "xsd:string" else "scratchpad/int/0"
    loc = memory.locate(address, field_type, 16 if field_type == "xsd:string" else None)
    with pytest.raises(ValueError, match=message):
        memory.encode(value, loc)


def test_reads_join_neighbours_within_the_gap_and_block_size() -> None:
    spans = [(k, memory.locate(f"scratchpad/int/{k}", "xsd:int")) for k in (0, 1, 2, 5)]
    assert [(b.start - memory.SCRATCHPAD_INT, b.size) for b in memory.plan(spans, 0, 1024)] == [(0, 12), (20, 4)]
    assert [(b.start - memory.SCRATCHPAD_INT, b.size) for b in memory.plan(spans, 8, 1024)] == [(0, 24)]
    assert [b.size for b in memory.plan(spans, 8, 8)] == [8, 4, 4]
    points = [(c, memory.locate(f"analog/0/{c}", "xsd:double")) for c in range(4)]
    assert len(memory.plan(points, 0, 1024)) == 4
    module = memory.plan(points, 64, 1024)  # gap 64 joins a module's points: one block, each at its offset
    assert len(module) == 1 and [off for _, off, _ in module[0].items] == [0, 0x40, 0x80, 0xC0]


def test_connections_and_sites_are_checked() -> None:
    assert parse_connection(urlsplit("optommp://10.0.0.9"))[:2] == ("10.0.0.9", 2001)
    assert parse_connection(urlsplit("optommp://10.0.0.9:2002?gap=64"))[2]["gap"] == 64
    for url, message in [("optommp://", "no host"), ("optommp://h/x", "takes no path"),
                         ("optommp://h?block=1", "unknown OptoMMP option 'block'")]:
        with pytest.raises(ValueError, match=message):
            parse_connection(urlsplit(url))
    site = """site: {namespace: "urn:t", name: S}
devices:
  - name: Epic
    connection: "optommp://127.0.0.1?max_block=8"
    variables:
      - {name: A, address: analog/0/0, length: 4}
      - {name: B, datatype: String, address: "0xF0D83000", length: 64}
      - {name: C, address: digital/0}
"""
    with pytest.raises(NodesetError) as err:
        compile_text(site, "site.yaml")
    text = "\n".join(str(p) for p in err.value.problems)
    assert "Length applies to a String at a raw address only" in text
    assert "64 bytes do not fit one read of max_block=8" in text
    assert "'digital/0' is not analog/MODULE/POINT" in text


def test_the_simulated_controller_answers_and_refuses_as_a_brain_does() -> None:
    brain = MmpController()
    answer = packets.parse(brain.answer(packets.parse(packets.write_quadlet(1, memory.DIGITAL_WRITE + 0x40,
                                                                           b"\0\0\0\1"))))
    assert (answer.tcode, answer.rcode) == (packets.WRITE_RESPONSE, packets.ACK)
    assert brain.get_int(memory.DIGITAL_READ + 0x40) == 1  # an output written shows in the read area
    refused = packets.parse(brain.answer(packets.parse(packets.read_block(2, 0xE0000000, 8))))
    assert (refused.tcode, refused.rcode, refused.data) == (packets.READ_BLOCK_RESPONSE, 7, b"")
    assert brain.get_int(memory.LAST_ERROR) == 0xE005


def test_variables_that_bind_the_same_bytes_are_warned_about() -> None:
    from gateway.drivers.base import Binding, Point
    from gateway.drivers.optommp.driver import OptoMmpDriver

    points = [Point(0, "Whole", Binding("0xF0D82000"), "xsd:double", False),
              Point(1, "Half", Binding("scratchpad/float/1"), "xsd:float", False),
              Point(2, "Apart", Binding("scratchpad/float/2"), "xsd:float", False)]
    warnings = OptoMmpDriver.point_warnings(urlsplit("optommp://h"), points)
    assert warnings == [(1, "scratchpad/float/1 overlaps Whole (0xF0D82000): the same bytes bound twice")]
