"""The SCPI driver's text handling: answers decoded case by case (tests/cases/scpi/decode/*/case.yaml), write
templates, the error queue's entries and their statuses, and what a site is refused for."""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from asyncua import ua

from gateway.drivers.scpi import answers
from gateway.drivers.scpi.driver import parse_connection
from gateway.drivers.scpi.simulator import ScpiInstrument
from gateway.nodeset.model import NodesetError
from gateway.nodeset.yaml_build import compile_text

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted(p for p in (ROOT / "tests" / "cases" / "scpi" / "decode").iterdir() if p.is_dir())


@pytest.mark.parametrize("folder", CASES, ids=[c.name for c in CASES])
def test_answer_decodes_as_the_case_says(folder: Path) -> None:
    case = yaml.safe_load((folder / "case.yaml").read_text(encoding="utf-8"))
    assert set(case) <= {"answer", "field_type", "index", "expected", "error"}, folder.name
    assert ("expected" in case) != ("error" in case), folder.name
    if "error" in case:
        with pytest.raises(answers.AnswerError) as err:
            answers.decode(case["answer"], case["field_type"], case.get("index"))
        assert case["error"] in str(err.value)
        return
    got = answers.decode(case["answer"], case["field_type"], case.get("index"))
    expected = case["expected"]
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("template", "value", "command"), [
    ("VOLT {value}", 12.5, "VOLT 12.5"),
    ("OUTP {value}", True, "OUTP 1"),
    ("OUTP {value}", False, "OUTP 0"),
    ("SOUR:CURR {value:.3f}", 2.0, "SOUR:CURR 2.000"),
    ("MODE {value}", "CC", "MODE CC"),
])
def test_write_templates_render_values(template: str, value: object, command: str) -> None:
    answers.check_template(template)
    assert answers.render(template, value) == command


@pytest.mark.parametrize(("template", "message"), [
    ("VOLT", "must contain {value}"),
    ("VOLT {v}", "must contain {value} and no other field"),
    ("VOLT {value} {other}", "no other field"),
    ("VOLT {value", "is malformed"),
    ("VOLT {value:q}", "Unknown format code"),
])
def test_bad_write_templates_are_named(template: str, message: str) -> None:
    with pytest.raises(ValueError, match="write template") as err:
        answers.check_template(template)
    assert message in str(err.value)


@pytest.mark.parametrize(("answer", "code", "status"), [
    ('-222,"Data out of range"', -222, ua.StatusCodes.BadOutOfRange),
    ('-113,"Undefined header"', -113, ua.StatusCodes.BadConfigurationError),
    ('-221,"Settings conflict"', -221, ua.StatusCodes.BadInvalidState),
    ('+301,"Output protection tripped"', 301, ua.StatusCodes.BadDeviceFailure),
])
def test_error_queue_entries_and_their_statuses(answer: str, code: int, status: int) -> None:
    got, _ = answers.error_entry(answer)
    assert got == code and answers.error_status(code) == status
    assert answers.error_entry('0,"No error"') == (0, "No error")
    with pytest.raises(answers.AnswerError, match="not an error queue entry"):
        answers.error_entry("ready")


def test_resources_and_options_of_a_connection() -> None:
    tcp = parse_connection(urlsplit("visa://TCPIP0::10.0.0.5::5025::SOCKET?read_termination=crlf&timeout_ms=500"))
    assert (tcp.resource, tcp.interface, tcp.read_termination, tcp.write_termination, tcp.timeout_ms, tcp.serial) == \
        ("TCPIP0::10.0.0.5::5025::SOCKET", "TCPIP", "\r\n", "\n", 500, {})
    serial = parse_connection(urlsplit("visa://ASRL/dev/ttyUSB0::INSTR?baud=115200&parity=even"))
    assert serial.resource == "ASRL/dev/ttyUSB0::INSTR" and serial.serial["baud_rate"] == 115200
    assert parse_connection(urlsplit("visa://TCPIP0::10.0.0.5::inst0::INSTR")).interface == "TCPIP"
    for url, message in [("visa://", "no resource"), ("visa://COM1", "not a VISA resource name"),
                         ("visa://TCPIP0::h::5025::SOCKET?read_termination=eol", "must be lf, cr, crlf or none"),
                         ("visa://TCPIP0::h::5025::SOCKET?error_query=SYST:ERR", "is not a query"),
                         ("visa://TCPIP0::h::5025::SOCKET?visa_library=@sim", "VISA library '@sim' is not installed")]:
        with pytest.raises(ValueError, match=message):
            parse_connection(urlsplit(url))


def test_a_site_is_refused_for_bad_queries_templates_and_a_shared_instrument() -> None:
    site = """site: {namespace: "urn:t", name: S}
devices:
  - name: Psu
    connection: "visa://TCPIP0::127.0.0.1::5025::SOCKET"
    variables:
      - {name: A, writable: true, address: "VOLT?"}
      - {name: B, writable: true, address: "VOLT?", write: "VOLT {val}"}
      - {name: C, address: "MEAS:VOLT"}
      - {name: D, address: "MEAS:VOLT?", write: "VOLT {value}"}
  - name: Twin
    connection: "visa://TCPIP0::127.0.0.1::5025::SOCKET?timeout_ms=100"
    variables:
      - {name: E, address: "MEAS:VOLT?"}
"""
    with pytest.raises(NodesetError) as err:
        compile_text(site, "site.yaml")
    text = "\n".join(str(p) for p in err.value.problems)
    assert "Psu.A: bad binding for visa: a writable SCPI variable needs a Write template (VOLT {value})" in text
    assert "write template 'VOLT {val}' must contain {value}" in text
    assert "the address is the query that reads the value, with its '?' (MEAS:VOLT?), not 'MEAS:VOLT'" in text
    assert "Write is given but the variable is not writable" in text
    assert "one device per instrument" in text


def test_the_simulated_supply_keeps_an_error_queue_as_scpi_does() -> None:
    psu = ScpiInstrument()
    assert psu.handle("*IDN?") == ["OPCUA-GATEWAY,SIM-DCS60-100,SN0001,1.0"]
    assert psu.handle("VOLTage 12;SOURce:CURRent:LEVel:IMMediate:AMPLitude 30;OUTPut:STATe ON") == []
    assert (psu.voltage_set, psu.current_set, psu.output) == (12.0, 30.0, True)
    assert psu.handle("MEAS:VOLT?;MEAS:CURR?;MEAS:POW?") == ["1.20000E+01", "2.40000E+01", "2.88000E+02"]
    assert psu.handle("VOLT 61;FOO 1;VOLT abc;CURR;BAR?") == []
    assert [psu.handle("SYST:ERR?")[0] for _ in range(6)] == [
        '-222,"Data out of range"', '-113,"Undefined header"', '-104,"Data type error"',
        '-109,"Missing parameter"', '-113,"Undefined header"', '0,"No error"']
    for _ in range(25):
        psu.handle("FOO")
    entries = [psu.handle("SYST:ERR?")[0] for _ in range(21)]
    assert entries[-2:] == ['-350,"Queue overflow"', '0,"No error"']

