"""Suspect but servable: overlapping register bindings are warned about by `nodeset check` and at start."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.nodeset.commands import check_site
from gateway.nodeset.yaml_build import compile_text
from gateway.server import Gateway, GatewayConfig

SITE = """
site: {namespace: "urn:test:overlap", name: Site}
devices:
  - name: Meter
    connection: modbus+tcp://10.0.0.5/1
    variables:
      - {name: Energy, datatype: UInt32, address: "holding/0"}
      - {name: EnergyLow, datatype: UInt16, address: "holding/1"}
      - {name: Alarm0, datatype: Boolean, address: "holding/10", bit: 0}
      - {name: Alarm1, datatype: Boolean, address: "holding/10", bit: 1}
      - {name: Alarm0Again, datatype: Boolean, address: "holding/10", bit: 0}
      - {name: Voltage, datatype: UInt16, address: "holding/2"}
      - {name: Trip, datatype: Boolean, address: "coil/0"}
      - {name: TripCopy, datatype: Boolean, address: "00001"}
"""


@pytest.fixture
def overlapping_site(tmp_path: Path) -> Path:
    path = tmp_path / "site.xml"
    path.write_bytes(compile_text(SITE, "site.yaml"))
    return path


async def test_check_warns_once_per_overlapping_binding_and_still_passes(overlapping_site: Path) -> None:
    summary, warnings = await check_site([overlapping_site])
    assert summary.startswith("ok: ") and "8 bound variables" in summary and "3 warning(s)" in summary
    by_node = {w.node: w.message for w in warnings}
    assert by_node == {
        "ns=1;s=Meter.EnergyLow": "holding 1 overlaps Energy (holding/0): the same field bound twice",
        "ns=1;s=Meter.Alarm0Again": "holding 10 overlaps Alarm0 (holding/10): the same field bound twice",
        "ns=1;s=Meter.TripCopy": "coil 0 overlaps Trip (coil/0): the same field bound twice",
    }
    assert all(w.file == str(overlapping_site) and w.line for w in warnings)


async def test_start_logs_the_warnings(overlapping_site: Path, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    gw = Gateway(GatewayConfig(nodesets=[overlapping_site], data_dir=tmp_path / "data"))
    with caplog.at_level(logging.WARNING, logger="gateway.server"):
        await gw.load()
    lines = [r.getMessage() for r in caplog.records if "overlaps" in r.getMessage()]
    assert len(lines) == 3 and "site.xml" in lines[0] and "ns=1;s=Meter.EnergyLow: holding 1 overlaps" in lines[0]
