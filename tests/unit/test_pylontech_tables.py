"""Pylontech console answers decoded by the driver's own decode path, case by case (tests/cases/pylontech/*/),
and the address and binding checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from asyncua import ua

from gateway.drivers.base import Binding, Point
from gateway.drivers.pylontech import tables
from gateway.drivers.pylontech.driver import PylontechDriver, parse_address

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted(p for p in (ROOT / "tests" / "cases" / "pylontech").iterdir() if p.is_dir())
URL = urlsplit("pylontech:///dev/ttyUSB0")
_XSD = {"number": "xsd:double", "text": "xsd:string", "bool": "xsd:boolean"}


def _point(key: int, address: str, options: dict[str, Any] | None = None) -> Point:
    field_type = _XSD[tables.FIELDS[parse_address(address).field][0]]
    return Point(key, address, Binding(address, options=options or {}), field_type, False)


@pytest.mark.parametrize("folder", CASES, ids=[c.name for c in CASES])
def test_console_answer_decodes_as_expected(folder: Path) -> None:
    case = yaml.safe_load((folder / "case.yaml").read_text(encoding="utf-8"))
    assert not set(case) - {"command", "expected", "problem", "options"}, folder.name
    capture = (folder / "capture.txt").read_bytes().decode("ascii", errors="replace")
    points = [_point(i, address, case.get("options")) for i, address in enumerate(case["expected"])]
    for pt in points:
        PylontechDriver.validate_point(URL, pt)
        assert parse_address(pt.binding.address).command == case["command"], pt.name
    driver = PylontechDriver(URL, {"MediumSpeed": points})
    assert driver.commands["MediumSpeed"] == [case["command"]]
    readings, problem = driver.decode(case["command"], capture)
    assert set(readings) == {pt.key for pt in points}
    for pt in points:
        want, got = case["expected"][pt.name], readings[pt.key]
        if isinstance(want, dict):
            assert got.status == getattr(ua.StatusCodes, want["status"]) and got.value is None, (pt.name, got)
        else:
            assert got.status == ua.StatusCodes.Good, (pt.name, got)
            assert got.value == want and type(got.value) is type(want), (pt.name, got.value, want)
    if "problem" in case:
        assert problem is not None and case["problem"] in problem, problem
    else:
        assert problem is None, problem


def test_every_case_folder_is_complete() -> None:
    assert len(CASES) >= 15
    for folder in CASES:
        assert (folder / "capture.txt").is_file() and (folder / "case.yaml").is_file(), folder.name


@pytest.mark.parametrize(("address", "message"), [
    ("pwr/1", "is not pwr/MODULE/FIELD or bat/MODULE/CELL/FIELD"),
    ("pwr/0/Volt", "module '0' in 'pwr/0/Volt' is not a number in 1..16"),
    ("pwr/17/Volt", "is not a number in 1..16"),
    ("pwr/1/Volts", "did you mean 'Volt'?"),
    ("pwr/1/Coulomb", "'Coulomb' is not a column of the pwr table"),
    ("bat/1/Volt", "is not pwr/MODULE/FIELD"),
    ("bat/1/32/Volt", "cell '32' in 'bat/1/32/Volt' is not a number in 0..31"),
    ("bat/1/0/Present", "'Present' is not a column of the bat table"),
    ("bms/1/Volt", "is not pwr/MODULE/FIELD"),
])
def test_a_bad_address_is_refused_with_why(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace("(", r"\(")):
        parse_address(address)


@pytest.mark.parametrize(("address", "field_type", "writable", "options", "message"), [
    ("pwr/1/BaseState", "xsd:double", False, {}, "BaseState is text: bind it to a String variable"),
    ("pwr/1/Present", "xsd:string", False, {}, "Present is a Boolean"),
    ("pwr/1/Volt", "xsd:string", False, {}, "Volt is a number"),
    ("pwr/1/Volt", "xsd:double", True, {}, "read-only"),
    ("bat/1/0/BAL", "xsd:boolean", False, {"console_units": True}, "ConsoleUnits applies to numbers"),
])
def test_a_binding_that_does_not_fit_its_column_is_refused(address: str, field_type: str, writable: bool,
                                                          options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PylontechDriver.validate_point(URL, Point(0, "V", Binding(address, options=options), field_type, writable))


@pytest.mark.parametrize(("url", "message"), [
    ("pylontech://host:4001", "is a path: pylontech:///dev/ttyUSB0"),
    ("pylontech:///dev/ttyUSB0?baud=100", "option baud='100' must be in 1200..921600"),
    ("pylontech:///dev/ttyUSB0?wakeup=sometimes", "must be auto, always or never"),
    ("pylontech:///dev/ttyUSB0?speed=9600", "unknown Pylontech option 'speed'"),
    ("pylontech+rfc2217://converter", r"a converter is pylontech\+rfc2217://HOST:PORT"),
    ("pylontech+tcp://converter:port", "the port is not a number"),
    ("pylontech+tcp://converter:4001/ttyS0", r"a converter is pylontech\+tcp://HOST:PORT"),
    ("pylontech+tcp://converter:4001?wakeup=always", "a raw TCP converter keeps its own line settings"),
])
def test_a_bad_connection_is_refused_with_why(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PylontechDriver.validate_connection(urlsplit(url))


def test_two_devices_on_one_console_are_refused() -> None:
    urls = [urlsplit("pylontech:///dev/ttyUSB0"), urlsplit("pylontech:///dev/ttyUSB1"),
            urlsplit("pylontech:///dev/ttyUSB0?timeout_ms=500"), urlsplit("pylontech+rfc2217://10.0.0.5:4001"),
            urlsplit("pylontech+tcp://10.0.0.5:4002"), urlsplit("pylontech+rfc2217://10.0.0.5:4001/?wakeup=never")]
    assert [i for i, _ in PylontechDriver.validate_devices(urls)] == [2, 5]


def test_a_scan_class_runs_pwr_once_and_bat_per_module() -> None:
    points = [_point(0, "bat/2/0/Volt"), _point(1, "pwr/1/Volt"), _point(2, "bat/10/3/Volt"),
              _point(3, "pwr/2/SOC"), _point(4, "bat/2/14/Volt"), _point(5, "bat/3/1/Tempr")]
    driver = PylontechDriver(URL, {"MediumSpeed": points[:5], "SlowSpeed": points[5:]})
    assert driver.commands == {"MediumSpeed": ["pwr", "bat 2", "bat 10"], "SlowSpeed": ["bat 3"]}
