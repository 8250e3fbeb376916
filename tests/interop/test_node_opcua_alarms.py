"""Alarms operated by node-opcua's own alarm helpers, as a SCADA client would: installAlarmMonitoring
(ConditionRefresh into a ClientAlarmList), acknowledgeCondition and confirmCondition with the alarm's
EventId, a stale EventId refused, a viewer's acknowledge refused, and a plain event subscription's
refresh bracket after a reconnect showing exactly the retained conditions."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncua import ua

from gateway.nodeset.yaml_build import compile_text

from .nodeua import node_client_available, run_node_client

pytestmark = [pytest.mark.interop, pytest.mark.integration]

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "alarm_site.yaml"
GOOD = 0


@pytest.fixture
async def gateway(simulated_gateway, tmp_path: Path):
    node_client_available()
    site = tmp_path / "alarm-site.xml"
    site.write_bytes(compile_text(FIXTURE.read_text(encoding="utf-8"), str(FIXTURE)))
    return await simulated_gateway(site)


def _script(gw, tmp_path: Path, ops: list[dict], user: str | None = "operator1") -> dict:
    script = {"endpoint": gw.config.endpoint, "pkiDir": str(tmp_path / "node-pki"), "securityMode": "None",
              "securityPolicy": "None", "timeoutMs": 40000, "ops": ops}
    if user:
        script |= {"user": user, "password": "op-secret-1"}
    return script


def _ok(result: dict) -> list[dict]:
    assert result.get("session"), result
    for op in result["ops"]:
        assert "error" not in op, op
    return result["ops"]


async def test_client_alarm_list_follows_an_alarm_through_acknowledge_and_confirm(gateway, tmp_path: Path) -> None:
    ns = gateway.site.namespaces["urn:test:alarm-site"]
    cond = f"ns={ns};s=Rack1.TemperatureHigh"
    temp = f"ns={ns};s=Rack1.Temperature"
    ops = _ok(await run_node_client(_script(gateway, tmp_path, [
        {"op": "installAlarms"},
        {"op": "write", "nodeId": temp, "dataType": "Double", "value": 57.5},
        {"op": "waitAlarm", "conditionId": cond, "where": {"active": True}, "save": "raised"},
        {"op": "acknowledge", "conditionId": cond, "saved": "raised", "comment": "on it"},
        {"op": "waitAlarm", "conditionId": cond, "where": {"acked": True}},
        {"op": "acknowledge", "conditionId": cond, "saved": "raised", "comment": "stale"},
        {"op": "write", "nodeId": temp, "dataType": "Double", "value": 30.0},
        {"op": "waitAlarm", "conditionId": cond, "where": {"active": False, "confirmed": False}, "save": "cleared"},
        {"op": "confirm", "conditionId": cond, "saved": "cleared", "comment": "checked the fan"},
        {"op": "waitAlarm", "conditionId": cond, "where": {"confirmed": True, "retain": False}},
    ]), within_s=90))
    assert ops[0]["alarms"] == []  # nothing retained at start
    raised = ops[2]["alarm"]
    assert ops[2]["found"] and raised["severity"] == 700 and raised["retain"] is True
    assert raised["message"] == "Rack1 cell temperature 57.5 °C above high limit 55 °C"
    assert raised["eventType"] == f"ns=0;i={ua.ObjectIds.ExclusiveLimitAlarmType}"
    assert ops[3]["status"]["value"] == GOOD
    assert ops[4]["found"] and ops[4]["alarm"]["active"] is True
    assert ops[5]["status"]["value"] == ua.StatusCodes.BadEventIdUnknown  # the EventId of an older state
    assert ops[7]["found"] and ops[7]["alarm"]["retain"] is True  # cleared, but still to confirm
    assert ops[8]["status"]["value"] == GOOD
    assert ops[9]["found"]


async def test_a_viewer_cannot_acknowledge_and_a_new_session_refreshes_exactly_the_retained(
        gateway, tmp_path: Path) -> None:
    ns = gateway.site.namespaces["urn:test:alarm-site"]
    fault_cond = f"ns={ns};s=Rack1.Fault"
    ops = _ok(await run_node_client(_script(gateway, tmp_path, [
        {"op": "installAlarms"},
        {"op": "write", "nodeId": f"ns={ns};s=Rack1.FaultCode", "dataType": "Double", "value": 4.0},
        {"op": "waitAlarm", "conditionId": fault_cond, "where": {"active": True}},
    ]), within_s=60))
    event_id = ops[2]["alarm"]["eventId"]
    viewer = _ok(await run_node_client(_script(gateway, tmp_path, [
        {"op": "acknowledge", "conditionId": fault_cond, "eventIdHex": event_id, "comment": "viewer"},
        {"op": "rawRefresh", "ofType": "AlarmConditionType"},
        {"op": "installAlarms"},
    ], user=None), within_s=60))
    assert viewer[0]["status"]["value"] == ua.StatusCodes.BadUserAccessDenied
    refresh = viewer[1]
    assert refresh["status"]["value"] == GOOD
    kinds = [e["eventType"] for e in refresh["events"]]
    start, end = f"ns=0;i={ua.ObjectIds.RefreshStartEventType}", f"ns=0;i={ua.ObjectIds.RefreshEndEventType}"
    # The bracket arrives although the where clause (OfType AlarmConditionType) would not pass it.
    assert kinds[0] == start and kinds[-1] == end, kinds
    inside = refresh["events"][1:-1]
    assert [e["conditionId"] for e in inside] == [fault_cond]
    assert inside[0]["retain"] is True and "FaultCode is 4" in inside[0]["message"]
    assert [a["conditionId"] for a in viewer[2]["alarms"]] == [fault_cond]
