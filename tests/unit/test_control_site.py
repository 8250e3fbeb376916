"""The `control:` section of a site: compiled to nodes, read back, and refused when it binds a controller to
a setpoint that is missing or not writable (YAML build and `nodeset check` alike)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.nodeset.commands import check_site
from gateway.nodeset.model import NodesetError
from gateway.nodeset.yaml_build import compile_text

DEMO = Path(__file__).resolve().parents[2] / "nodesets" / "demo" / "demo-site.yaml"


def test_the_demo_site_compiles_with_its_control_section_and_checks(tmp_path) -> None:
    xml = compile_text(DEMO.read_text(encoding="utf-8"), str(DEMO))
    assert b"ControlConfiguration" in xml and b"DemoSite.Control.Modes.PeakShaving.import_limit" in xml
    site = tmp_path / "demo.xml"
    site.write_bytes(xml)


@pytest.mark.parametrize(("edit", "message"), [
    ("battery_power: {node: Battery1.ActivePowerSetpoint", "battery_power: {node: Battery1.ActivePower"),
    ("battery_power: {node: Battery1.ActivePowerSetpoint", "battery_power: {node: Battery1.NoSuchVariable"),
])
def test_yaml_build_refuses_a_setpoint_missing_or_not_writable(edit, message) -> None:
    text = DEMO.read_text(encoding="utf-8").replace(edit, message)
    with pytest.raises(NodesetError) as err:
        compile_text(text, "site.yaml")
    text = "\n".join(str(p) for p in err.value.problems)
    assert "is not writable" in text or "is no variable of the site" in text


async def test_nodeset_check_refuses_a_compiled_site_whose_setpoint_is_not_writable(tmp_path) -> None:
    xml = compile_text(DEMO.read_text(encoding="utf-8"), str(DEMO)).decode()
    site = tmp_path / "site.xml"
    bad = xml.replace('"node": "Battery1.ActivePowerSetpoint"', '"node": "Battery1.ActivePower"')
    assert bad != xml
    site.write_text(bad, encoding="utf-8")
    with pytest.raises(NodesetError) as err:
        await check_site([site])
    assert any("setpoint battery_power: Battery1.ActivePower is not writable" in str(p) for p in err.value.problems)
    good = tmp_path / "good.xml"
    good.write_text(xml, encoding="utf-8")
    summary, _warnings = await check_site([good])
    assert summary.startswith("ok:")


@pytest.mark.parametrize(("fallback", "problem"), [
    ("{mode: PeakShaving}", None),  # no signal: only modes that hand over themselves (LocalControl) fall back
    ("{signal: external_lost, mode: MaxSelfConsumption}", None),
    ("{signal: external_lost}", "fallback must be"),
    ("{mode: LocalControl}", "not a mode a supervised mode can fall back to"),
    ("{mode: NoSuchMode}", "not a mode a supervised mode can fall back to"),
])
def test_the_fallback_mode_with_or_without_a_signal(fallback: str, problem: str | None) -> None:
    text = DEMO.read_text(encoding="utf-8").replace("fallback: {signal: external_lost, mode: MaxSelfConsumption}",
                                                    f"fallback: {fallback}")
    if problem is None:
        assert b"ControlConfiguration" in compile_text(text, "site.yaml")
        return
    with pytest.raises(NodesetError) as err:
        compile_text(text, "site.yaml")
    assert any(problem in str(p) for p in err.value.problems), err.value.problems


@pytest.mark.parametrize(("machine", "problem"), [
    ("Battery1/NoSuchMachine", "'Battery1/NoSuchMachine' is no state machine of the site "
                               "(machines: Battery1/SystemState)"),
    ("Battery1/SystemState", None),
])
def test_the_state_machine_showing_the_system_state_must_exist(machine: str, problem: str | None) -> None:
    text = DEMO.read_text(encoding="utf-8").replace("state_machine: Battery1/SystemState",
                                                    f"state_machine: {machine}")
    if problem is None:
        compile_text(text, "site.yaml")
        return
    with pytest.raises(NodesetError) as err:
        compile_text(text, "site.yaml")
    assert any(problem in str(p) for p in err.value.problems), err.value.problems


def test_the_state_machine_showing_the_system_state_needs_its_states() -> None:
    text = DEMO.read_text(encoding="utf-8")  # the demo's machine with its Sleep state renamed
    text = text.replace("{name: Sleep,", "{name: Dormant,").replace("from: Sleep", "from: Dormant")
    text = text.replace("to: Sleep", "to: Dormant")
    with pytest.raises(NodesetError) as err:
        compile_text(text, "site.yaml")
    assert any("(BessSystemStateMachineType) has no state Sleep of the control system state" in str(p)
               for p in err.value.problems), err.value.problems
