"""`gateway nodeset import-instruments`: instrument files of the 000 seed's format turned into a site, for every
Communication kind (case folders in tests/cases/instruments/import)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.nodeset.instruments import instruments_to_site
from gateway.nodeset.model import NodesetError
from gateway.nodeset.yaml_build import build

CASES = Path(__file__).resolve().parents[1] / "cases" / "instruments"


def test_vfd_and_flow_meter_become_devices_with_bindings() -> None:
    result = instruments_to_site([CASES / "VFD_1.json", CASES / "Alicat_FT_203_N2.json"], "urn:t", "Lab")
    devices = {d["name"]: d for d in result.site["devices"]}
    assert set(devices) == {"VFD_1", "Alicat_FT_203_N2"}
    vfd = devices["VFD_1"]
    assert vfd["connection"] == "modbus+tcp://192.168.0.155:502/1?byte_order=big&word_order=big"
    by_name = {v["name"]: v for v in vfd["variables"]}
    assert by_name["RUN_STOP"] == {"name": "RUN_STOP", "datatype": "Boolean", "field_type": "xsd:boolean",
                                   "address": "holding/8192", "writable": True, "scan": "MediumSpeed",
                                   "historize": True}
    setpoint = by_name["FREQUENCY_SETPT"]
    assert (setpoint["datatype"], setpoint["field_type"], setpoint["scale"], setpoint["unit"], setpoint["scan"]) == (
        "Double", "xsd:short", 0.01, "Hz", "LowSpeed")
    assert setpoint["writable"] is True
    assert "writable" not in by_name["OUTPUT_CURRENT"]


def test_cli_writes_a_site_that_passes_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, as_yaml = tmp_path / "lab.xml", tmp_path / "lab.yaml"
    code = main(["nodeset", "import-instruments", str(CASES / "VFD_1.json"), str(CASES / "Alicat_FT_203_N2.json"),
                 "-o", str(out), "--yaml", str(as_yaml), "--name", "Lab"])
    assert code == 0, capsys.readouterr().err
    assert main(["nodeset", "check", str(out)]) == 0
    assert "2 devices" in capsys.readouterr().out
    # The YAML form builds to the same site.
    rebuilt = tmp_path / "rebuilt.xml"
    assert main(["nodeset", "build", str(as_yaml), "-o", str(rebuilt)]) == 0
    assert rebuilt.read_bytes() == out.read_bytes()


def test_bad_channels_are_named_and_nothing_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(NodesetError) as err:
        instruments_to_site([CASES / "broken_type.json"], "urn:t", "Lab")
    messages = [str(p) for p in err.value.problems]
    assert any("broken_type.json" in m and "Broken.BAD_TYPE" in m and "DataType 'decimal'" in m for m in messages)
    assert any("Broken.BAD_TABLE" in m and "register Type 'Memory'" in m for m in messages)
    out = tmp_path / "site.xml"
    assert main(["nodeset", "import-instruments", str(CASES / "broken_type.json"), "-o", str(out)]) != 0
    assert not out.exists()
    assert "BAD_TYPE" in capsys.readouterr().err


IMPORT_CASES = sorted(p for p in (CASES / "import").iterdir() if p.is_dir())


@pytest.mark.parametrize("folder", IMPORT_CASES, ids=[p.name for p in IMPORT_CASES])
def test_import_case(folder: Path) -> None:
    """A folder of instrument files (every Communication kind) and what importing them gives: `expected.yaml` (the
    devices, which must also build into a site) and notes, or `errors` (every problem, by file, instrument and
    channel; none left unlisted)."""
    case = yaml.safe_load((folder / "case.yaml").read_text(encoding="utf-8"))
    assert set(case) <= {"expected", "notes", "errors", "mqtt_broker"}, folder.name
    files = sorted(folder.glob("*.json"))
    try:
        result = instruments_to_site(files, "urn:t", "Lab", case.get("mqtt_broker"))
        build(result.site, ", ".join(str(f) for f in files))
    except NodesetError as exc:
        problems = [str(p) for p in exc.problems]
        assert "errors" in case, f"{folder.name}: {problems}"
        for expected in case["errors"]:
            assert any(expected in p for p in problems), f"{expected!r} not in {problems}"
        assert len(problems) == len(case["errors"]), problems
        return
    assert "errors" not in case, f"{folder.name}: imported although errors were expected"
    expected = yaml.safe_load((folder / case["expected"]).read_text(encoding="utf-8"))
    assert result.site["devices"] == expected
    for note in case.get("notes", []):
        assert any(note in n for n in result.notes), f"{note!r} not in {result.notes}"


def test_the_command_line_names_the_mqtt_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chiller = str(CASES / "import" / "mqtt-broker-from-command-line" / "Chiller.json")
    out = tmp_path / "site.xml"
    assert main(["nodeset", "import-instruments", chiller, "-o", str(out)]) == 1
    assert "give --mqtt-broker HOST[:PORT]" in capsys.readouterr().err and not out.exists()
    as_yaml = tmp_path / "site.yaml"
    assert main(["nodeset", "import-instruments", chiller, "-o", str(out), "--yaml", str(as_yaml),
                 "--mqtt-broker", "broker.lab:1884"]) == 0
    assert yaml.safe_load(as_yaml.read_text())["devices"][0]["connection"] == "mqtt://broker.lab:1884/"
