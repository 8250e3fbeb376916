"""CAN frames decoded by the CAN driver's own decode path, case by case (tests/cases/can/decode/*/case.yaml),
against the shipped BMS DBC and DBC files of real vehicles from the opendbc package."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import can
import opendbc
import pytest
import yaml
from asyncua import ua

from gateway.drivers.base import Binding, Point
from gateway.drivers.canbus.dbc import SHIPPED
from gateway.drivers.canbus.driver import CanDriver

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted(p for p in (ROOT / "tests" / "cases" / "can" / "decode").iterdir() if p.is_dir())
_XSD = {"Double": "xsd:double", "String": "xsd:string", "UInt16": "xsd:unsignedShort"}


def _dbc_path(name: str) -> Path:
    if name.startswith("opendbc:"):
        return Path(opendbc.DBC_PATH) / name.split(":", 1)[1]
    return SHIPPED / name


def _driver(case: dict[str, Any]) -> CanDriver:
    url = urlsplit(f"can://virtual/decode?dbc={quote(str(_dbc_path(case['dbc'])))}"
                   f"&id_offset={case.get('id_offset', 0)}")
    options = {"dbc_scaling": case["dbc_scaling"]} if "dbc_scaling" in case else {}
    point = Point(0, "V", Binding(case["address"], options=options), _XSD[case.get("datatype", "Double")], False)
    CanDriver.validate_point(url, point)
    return CanDriver(url, {"MediumSpeed": [point]})


@pytest.mark.parametrize("folder", CASES, ids=[c.name for c in CASES])
def test_frame_decodes_as_the_dbc_defines(folder: Path) -> None:
    case = yaml.safe_load((folder / "case.yaml").read_text(encoding="utf-8"))
    unknown = set(case) - {"dbc", "address", "datatype", "dbc_scaling", "id_offset", "frame_id", "data", "expected",
                           "absent", "status"}
    assert not unknown, f"{folder.name}: unknown keys {unknown}"
    driver = _driver(case)
    assert driver.frame_ids == {case["frame_id"]}
    msg = can.Message(arbitration_id=case["frame_id"], data=bytes.fromhex(case["data"]), timestamp=1.7e9,
                      is_extended_id=case["frame_id"] > 0x7FF)
    fid, _, readings = driver.decode(msg)
    assert fid == case["frame_id"]
    if case.get("absent"):
        assert readings == {}
        return
    reading = readings[0]
    if "status" in case:
        assert reading.status == getattr(ua.StatusCodes, case["status"]) and reading.value is None
        return
    assert reading.status == ua.StatusCodes.Good
    assert reading.source_time is not None and reading.source_time.timestamp() == pytest.approx(1.7e9)
    if isinstance(case["expected"], str):
        assert reading.value == case["expected"]
    else:
        assert reading.value == pytest.approx(case["expected"], abs=1e-9)
        assert type(reading.value) is type(case["expected"]) or isinstance(case["expected"], float)


def test_every_case_folder_is_complete() -> None:
    assert len(CASES) >= 10
    for folder in CASES:
        case = yaml.safe_load((folder / "case.yaml").read_text(encoding="utf-8"))
        assert sum(k in case for k in ("expected", "absent", "status")) == 1, folder.name


def test_a_dbc_cantools_refuses_is_one_named_problem() -> None:
    # opendbc's tesla_can.dbc has value tables of signals it no longer defines; cantools refuses the file.
    url = urlsplit(f"can://virtual/x?dbc={quote(str(_dbc_path('opendbc:tesla_can.dbc')))}")
    with pytest.raises(ValueError, match=r"^DBC file .*tesla_can\.dbc: .*unused VAL_ entries"):
        CanDriver.validate_connection(url)
