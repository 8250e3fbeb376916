"""The facade's register map in a site: YAML `facade:` compiled to properties, `nodeset check` refusing
overlaps, writable mappings of read-only nodes and values that cannot fit, and `gateway facade map`."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from asyncua import ua

from gateway.nodeset.commands import check_site
from gateway.nodeset.model import NodesetError
from gateway.nodeset.yaml_build import build_file, compile_text

ROOT = Path(__file__).resolve().parents[2]
SITE_YAML = ROOT / "tests" / "fixtures" / "facade_site.yaml"


def _site(**facade_changes: object) -> dict:
    doc = yaml.safe_load(SITE_YAML.read_text())
    doc["facade"].update(facade_changes)
    return doc


def _compile(doc: dict, tmp_path: Path) -> Path:
    out = tmp_path / "site.xml"
    out.write_bytes(compile_text(yaml.safe_dump(doc, sort_keys=False), "site.yaml"))
    return out


async def _problems(xml: Path) -> list[str]:
    with pytest.raises(NodesetError) as err:
        await check_site([xml])
    return [str(p) for p in err.value.problems]


async def test_fixture_site_builds_checks_and_resolves_every_mapping(tmp_path: Path) -> None:
    from asyncua import Server

    from gateway.site import load_site

    out = tmp_path / "site.xml"
    build_file(SITE_YAML, out)
    summary, _ = await check_site([out])
    assert "a Modbus facade of 13 mapping(s) on port 1502" in summary
    server = Server()
    await server.init()
    _, bindings = await load_site(server, [out])
    facade = bindings.facade
    assert (facade.host, facade.port, facade.unit) == ("127.0.0.1", 1502, 1)
    assert facade.write_role is not None and facade.write_role.name == "operator"
    assert facade.watchdog is not None and str(facade.watchdog) == "holding/900"
    assert facade.watchdog_timeout_s == 1.5 and facade.idle_timeout_s == 2.0 and facade.max_connections == 20
    by_name = {m.name.split("/")[-1]: m for m in facade.mappings}
    sp = by_name["ActivePowerSetpoint"]
    assert (sp.table, sp.offset, sp.count, sp.scale, sp.writable, sp.fallback) == ("holding", 0, 1, 0.1, True, 0.0)
    assert by_name["Unsigned64"].byte_order == "little" and by_name["Unsigned64"].word_order == "little"
    assert by_name["Tag"].count == 4 and by_name["Tag"].vtype == ua.VariantType.String
    assert by_name["StateOfCharge"].status is not None and str(by_name["StateOfCharge"].status[0]) == "input/100"
    assert by_name["Running"].table == "discrete" and by_name["Level"].field_type == "xsd:short"
    assert facade.allows("127.0.0.1") and not facade.allows("10.0.0.1")


@pytest.mark.parametrize(("change", "expected"), [
    # two values on the same registers
    (lambda d: d["facade"]["map"][6].update(address="holding/2"),
     r"ns=1;s=Counter32: facade map: FacadeSite/Counter32 at holding/2 overlaps FacadeSite/ExportLimit at holding/1"),
    # the status register placed over a value
    (lambda d: d["facade"]["map"][0].update(status="input/1"), r"overlaps"),
    # the watchdog over a setpoint
    (lambda d: d["facade"].update(watchdog={"address": "holding/0", "timeout_ms": 1000}), r"overlaps"),
    # a range that an int16 at scale 1 cannot show
    (lambda d: d["facade"]["map"][4].update(type="xsd:byte"),
     r"ns=1;s=ExportLimit: facade mapping: the EURange end 500 cannot be shown in xsd:byte"),
    # a fallback outside the variable's range
    (lambda d: d["facade"]["map"][3].update(fallback=150),
     r"ns=1;s=Battery1.ActivePowerSetpoint: facade mapping: FacadeFallback 150.0 is outside the EURange"),
    # a sentinel an unsigned register cannot hold
    (lambda d: d["facade"].update(bad_value=-1), r"the facade's BadValue -1 cannot be shown in xsd:unsignedShort"),
    # a type that does not fit the DataType
    (lambda d: d["facade"]["map"][5].update(type="xsd:float"), r"FieldType 'xsd:float' does not fit DataType Boolean"),
    # two values on one status bit
    (lambda d: d["facade"]["map"][1].update(status_bit=0), r"status bit 0 of input/100 already shows"),
    # the watchdog in an input register
    (lambda d: d["facade"].update(watchdog={"address": "input/900", "timeout_ms": 1000}),
     r"WatchdogAddress: the watchdog is a holding register"),
    (lambda d: d["facade"].update(endpoint="modbus+tcp://127.0.0.1:1502/1?timeout_ms=5"),
     r"option 'timeout_ms' does not apply to the facade"),
])
async def test_check_refuses_a_bad_map_naming_file_line_and_node(change, expected: str, tmp_path: Path) -> None:
    doc = _site()
    change(doc)
    try:
        xml = _compile(doc, tmp_path)
    except NodesetError as err:  # what the YAML build can see alone, it refuses with the YAML line
        problems = [str(p) for p in err.problems]
    else:
        problems = await _problems(xml)
    assert any(re.search(expected, p) for p in problems), problems
    # `file:line: node: problem`
    assert all(re.match(r"^\S*site\.(xml|yaml):\d+: \S+: ", p) for p in problems), problems


async def test_check_refuses_a_writable_mapping_of_a_read_only_node(tmp_path: Path) -> None:
    doc = _site()
    # The YAML build refuses it with the YAML line ...
    doc["facade"]["map"].append({"node": "Battery1.ActivePower", "address": "holding/50", "writable": True})
    with pytest.raises(NodesetError) as err:
        compile_text(yaml.safe_dump(doc, sort_keys=False), "site.yaml")
    assert any("a writable mapping of a read-only node" in str(p) and str(p).startswith("site.yaml:")
               for p in err.value.problems), err.value.problems
    # ... and `nodeset check` refuses the same in hand-written XML.
    doc["facade"]["map"].pop()
    xml = _compile(doc, tmp_path)
    text = xml.read_text()
    text = text.replace('NodeId="ns=1;s=Level" BrowseName="1:Level" ParentNodeId="ns=1;s=FacadeSite" DataType="i=4" '
                        'AccessLevel="3" UserAccessLevel="3"',
                        'NodeId="ns=1;s=Level" BrowseName="1:Level" ParentNodeId="ns=1;s=FacadeSite" DataType="i=4" '
                        'AccessLevel="1" UserAccessLevel="1"')
    xml.write_text(text)
    problems = await _problems(xml)
    assert any("ns=1;s=Level: facade mapping: a writable mapping of a read-only node" in p for p in problems), problems


async def test_a_mapping_without_a_facade_is_refused(tmp_path: Path) -> None:
    xml = _compile(_site(), tmp_path)
    text = xml.read_text().replace("FacadeEndpoint", "NotAnEndpoint")
    xml.write_text(text)
    problems = await _problems(xml)
    assert any("has a FacadeAddress but the site declares no facade" in p for p in problems), problems


def test_yaml_facade_problems_name_the_yaml_line() -> None:
    text = SITE_YAML.read_text().replace("node: Tag,", "node: NoSuchVar,").replace("write_role: operator",
                                                                                   "write_role: superuser")
    with pytest.raises(NodesetError) as err:
        compile_text(text, "site.yaml")
    shown = [str(p) for p in err.value.problems]
    assert any(re.match(r"site\.yaml:\d+: facade\.map\.NoSuchVar: node 'NoSuchVar' is no variable", s)
               for s in shown), shown
    assert any(re.match(r"site\.yaml:\d+: facade: write_role: unknown role 'superuser'", s) for s in shown), shown


def test_facade_map_command_prints_markdown_and_csv(tmp_path: Path) -> None:
    out = tmp_path / "site.xml"
    build_file(SITE_YAML, out)
    md = subprocess.run([sys.executable, "-m", "gateway.cli", "facade", "map", str(out)], capture_output=True,
                        text=True, timeout=60)
    assert md.returncode == 0, md.stderr
    assert "| holding | 0 | 40001 | 1 | FacadeSite/Battery1/ActivePowerSetpoint | xsd:short |" in md.stdout
    assert "watchdog: change within 1.5 s" in md.stdout
    plain = subprocess.run([sys.executable, "-m", "gateway.cli", "facade", "map", str(out), "--format", "csv"],
                           capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0, plain.stderr
    table = list(csv.DictReader(io.StringIO(plain.stdout)))
    rows = {(r["table"], r["offset"]): r for r in table}
    assert rows[("input", "1")]["type"] == "xsd:float" and rows[("input", "1")]["unit"] == "kW"
    assert rows[("holding", "1")]["word order"] == "little" and rows[("holding", "1")]["access"] == "read/write"
    assert rows[("holding", "40000")]["registers"] == "72"


def test_the_demo_map_is_current_and_shows_q_the_mode_and_its_codes(tmp_path: Path) -> None:
    demo = ROOT / "nodesets" / "demo"
    out = tmp_path / "demo-site.xml"
    build_file(demo / "demo-site.yaml", out)
    assert out.read_bytes() == (demo / "demo-site.xml").read_bytes(), "rebuild nodesets/demo/demo-site.xml"
    plain = subprocess.run([sys.executable, "-m", "gateway.cli", "facade", "map", str(out), "--format", "csv"],
                           capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0, plain.stderr
    rows = {(r["table"], r["offset"]): r for r in csv.DictReader(io.StringIO(plain.stdout))}
    assert rows[("input", "7")]["node"] == "DemoSite/GridMeter/ReactivePower" and rows[("input", "7")]["unit"] == "kvar"
    assert rows[("input", "8")]["node"] == "DemoSite/Battery1/ReactivePower"
    mode = rows[("holding", "3")]
    assert mode["node"] == "DemoSite/Control/ModeCode" and mode["access"] == "read/write"
    assert mode["range"] == ("0 Passive, 1 Manual, 2 MaxSelfConsumption, 3 PeakShaving, 4 ChargeOnly, "
                             "5 ExternalControl, 6 LoadMatching, 7 CostSaving, 8 LocalControl, 9 Backup")
    q = rows[("holding", "4")]
    assert q["node"] == "DemoSite/Battery1/ReactivePowerSetpoint" and q["watchdog fallback"] == "0.0"
