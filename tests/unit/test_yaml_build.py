"""`gateway nodeset build`: YAML sites compiled to NodeSet2, broken ones refused with file and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from asyncua import Server, ua

from gateway.nodeset.commands import check_files
from gateway.nodeset.model import NodesetError
from gateway.nodeset.units import eu_information
from gateway.nodeset.yaml_build import build_file
from gateway.site import load_site

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted((ROOT / "tests" / "cases" / "yaml").iterdir())
EXAMPLE = ROOT / "nodesets" / "examples" / "sim-site.yaml"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_broken_yaml_site_is_refused_naming_file_line_and_node(case: Path, tmp_path: Path) -> None:
    out = tmp_path / "site.xml"
    with pytest.raises(NodesetError) as err:
        build_file(case / "site.yaml", out)
    expected = (case / "expected_error.txt").read_text().strip()
    messages = [str(p).replace(str(case) + "/", "") for p in err.value.problems]
    assert any(m.startswith(expected) for m in messages), messages
    assert not out.exists()  # nothing half-written
    count = case / "problem_count.txt"
    if count.exists():  # a mistyped connection scheme is one problem, not one per variable
        assert len(messages) == int(count.read_text()), messages


async def test_example_builds_checks_and_carries_units_ranges_access_and_bindings(tmp_path: Path) -> None:
    out = tmp_path / "site.xml"
    build_file(EXAMPLE, out)
    summary = await check_files([out])
    assert "3 devices, 12 bound variables" in summary and "Fast=250ms" in summary
    server = Server()
    await server.init()
    site, bindings = await load_site(server, [out])
    ns = site.namespaces["urn:opcua-gateway:examples:sim-site"]
    setpoint = server.get_node(ua.NodeId("Battery1.ActivePowerSetpoint", ns))
    assert await setpoint.read_attribute(ua.AttributeIds.AccessLevel) is not None
    access = (await setpoint.read_attribute(ua.AttributeIds.AccessLevel)).Value.Value
    assert access & ua.AccessLevel.CurrentWrite.mask and access & ua.AccessLevel.HistoryRead.mask
    assert (await setpoint.read_attribute(ua.AttributeIds.Historizing)).Value.Value is True
    rng = await (await setpoint.get_child("0:EURange")).read_value()
    assert (rng.Low, rng.High) == (-100.0, 100.0)
    eu = await (await setpoint.get_child("0:EngineeringUnits")).read_value()
    assert eu == eu_information("kW") and eu.UnitId == 4937556  # UNECE "KWT"
    battery = next(d for d in bindings.devices if d.name == "Battery1")
    assert battery.url.geturl() == "sim://battery1"
    power = next(v for v in battery.variables if v.name.endswith("ActivePower"))
    assert power.binding.scan_class == "HighSpeed" and power.binding.deadband == 0.1
    limit = server.get_node(ua.NodeId("ExportLimit", ns))
    assert await limit.read_value() == 100.0


def test_shipped_example_xml_is_what_the_yaml_builds(tmp_path: Path) -> None:
    out = tmp_path / "site.xml"
    build_file(EXAMPLE, out)
    assert out.read_bytes() == EXAMPLE.with_suffix(".xml").read_bytes(), \
        "rebuild: gateway nodeset build nodesets/examples/sim-site.yaml -o nodesets/examples/sim-site.xml"


def test_build_command_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "gateway.cli", "nodeset", "build", str(EXAMPLE), "-o",
                         str(tmp_path / "a.xml")], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "gateway.cli", "nodeset", "build",
                          str(ROOT / "tests/cases/yaml/unknown-unit/site.yaml"), "-o", str(tmp_path / "b.xml")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "unknown unit 'kWatt'" in bad.stderr and not (tmp_path / "b.xml").exists()
