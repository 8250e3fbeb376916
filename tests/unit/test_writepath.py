"""The write path against a loaded site and the sim driver: the model's rights, exact field values, NaN."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
from asyncua import Server, ua

from gateway.clock import SteppableClock
from gateway.drivers.sim import SimDriver
from gateway.events.audit import CallRecord, Writer, WriteRecord
from gateway.security.roles import Role
from gateway.site import load_site
from gateway.values.runners import DeviceRunner
from gateway.values.tags import ConversionError, TagTable
from gateway.values.writepath import WritePath, access

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "write_model_site.xml"
NS = 3  # 0 UA, 1 the server, 2 the gateway types, 3 the site

VIEWER = Writer("viewer1", Role.viewer, client="test")
OPERATOR = Writer("operator1", Role.operator, client="test")
ADMIN = Writer("admin1", Role.admin, client="test")
ENABLED_FLAG = ua.NodeId(ua.ObjectIds.Server_ServerDiagnostics_EnabledFlag)  # i=2294, AccessLevel 3 in asyncua


@pytest.fixture
async def site():
    server = Server()
    await server.init()
    site, bindings = await load_site(server, [FIXTURE])
    assert site.namespaces["urn:test:write-model"] == NS
    clock = SteppableClock()
    tags = TagTable(server.iserver.aspace, None, clock)
    runner = DeviceRunner(bindings.devices[0], tags, bindings.scan_classes, None, clock)
    path = WritePath(server.iserver.aspace, tags, {runner.cfg.nodeid: runner}, None, clock)
    yield server, path, runner
    await runner.driver.stop()


def _node(name: str) -> ua.NodeId:
    return ua.NodeId(name, NS)


async def _write(path: WritePath, writer: Writer, nodeid: ua.NodeId, variant: ua.Variant,
                 attribute: ua.AttributeIds = ua.AttributeIds.Value) -> int:
    wv = ua.WriteValue(NodeId=nodeid, AttributeId=attribute, Value=ua.DataValue(variant))
    return (await path.write(wv, writer)).value


def _held(name: str) -> object:
    """The raw value the simulated device holds for a variable (what reached the field)."""
    driver = SimDriver.instances["wm1"]
    key = next(pt.key for pts in driver.points_by_class.values() for pt in pts if pt.name == name)
    return driver._held[key]


def _double(v: float) -> ua.Variant:
    return ua.Variant(v, ua.VariantType.Double)


async def test_a_scaled_write_is_whole_in_the_field_or_refused(site) -> None:
    _server, path, _runner = site
    # 12.34 at scale 0.1 is 123.4 in an xsd:short: refused, not rounded to 123.
    assert await _write(path, OPERATOR, _node("Dev1.Tenths"), _double(12.34)) == ua.StatusCodes.BadOutOfRange
    assert _held("Tenths") == 0
    # 12.3 / 0.1 is 123.00000000000001 in doubles: within float arithmetic of a whole number.
    assert await _write(path, OPERATOR, _node("Dev1.Tenths"), _double(12.3)) == ua.StatusCodes.Good
    assert _held("Tenths") == 123 and isinstance(_held("Tenths"), int)
    # A Float 12.3 arrives as 12.300000190734863: the tolerance follows the variable's precision.
    assert await _write(path, OPERATOR, _node("Dev1.FloatTenths"), ua.Variant(12.3, ua.VariantType.Float)) == \
        ua.StatusCodes.Good
    assert _held("FloatTenths") == 123
    assert await _write(path, OPERATOR, _node("Dev1.FloatTenths"), ua.Variant(12.34, ua.VariantType.Float)) == \
        ua.StatusCodes.BadOutOfRange
    assert _held("FloatTenths") == 123


async def test_a_raw_value_outside_the_field_type_is_refused(site) -> None:
    _server, path, _runner = site
    word = _node("Dev1.Word")  # Double in OPC UA, xsd:unsignedShort in the field, no EURange
    for refused in (70000.0, 65536.0, -1.0, 12.5):
        assert await _write(path, OPERATOR, word, _double(refused)) == ua.StatusCodes.BadOutOfRange, refused
        assert _held("Word") == 0
    assert await _write(path, OPERATOR, word, _double(65535.0)) == ua.StatusCodes.Good
    assert _held("Word") == 65535
    # Scaled into a short: 4000 / 0.1 = 40000 does not fit.
    assert await _write(path, OPERATOR, _node("Dev1.Tenths"), _double(4000.0)) == ua.StatusCodes.BadOutOfRange


async def test_nan_and_infinities_never_reach_a_device(site) -> None:
    _server, path, runner = site
    for value in (math.nan, math.inf, -math.inf):
        for name in ("Dev1.Tenths", "Dev1.Word"):
            assert await _write(path, OPERATOR, _node(name), _double(value)) == ua.StatusCodes.BadOutOfRange
        assert await _write(path, OPERATOR, _node("Dev1.FloatTenths"), ua.Variant(value, ua.VariantType.Float)) == \
            ua.StatusCodes.BadOutOfRange
        assert await _write(path, OPERATOR, _node("Site.ExportLimit"), _double(value)) == \
            ua.StatusCodes.BadOutOfRange
        # Any other writer that reaches the device runner is refused by the conversion itself.
        tag = runner.tags.tags[_node("Dev1.Tenths")]
        with pytest.raises(ConversionError):
            tag.to_raw(value)
    assert _held("Tenths") == 0 and _held("Word") == 0


async def test_nan_from_a_device_is_bad_and_does_not_freeze_the_deadband(site) -> None:
    server, _path, runner = site
    level = _node("Dev1.Level")  # sim constant NaN, deadband 0.5
    tags = runner.tags
    tag = tags.tags[level]

    def stored() -> ua.DataValue:
        return server.iserver.aspace[level].attributes[ua.AttributeIds.Value].value

    assert await runner.scan("HighSpeed")
    assert stored().StatusCode.value == ua.StatusCodes.BadSensorFailure
    await tags.publish_raw(tag, 10.0)
    assert stored().StatusCode.is_good() and stored().Value.Value == 10.0
    await tags.publish_raw(tag, math.nan)
    dv = stored()
    assert dv.StatusCode.value == ua.StatusCodes.BadSensorFailure and dv.Value.Value == 10.0  # last good value kept
    assert tag.value == 10.0
    # The device recovers: its next value is stored (a NaN kept as the value froze every later comparison).
    assert await tags.publish_raw(tag, 20.0)
    assert stored().StatusCode.is_good() and stored().Value.Value == 20.0
    assert not await tags.publish_raw(tag, 20.3)  # the deadband works again
    assert await tags.publish_raw(tag, 21.0)


async def test_namespace_0_is_never_written(site) -> None:
    _server, path, _runner = site
    for writer in (OPERATOR, ADMIN):
        assert await _write(path, writer, ENABLED_FLAG, ua.Variant(True, ua.VariantType.Boolean)) == \
            ua.StatusCodes.BadNotWritable
        assert await _write(path, writer, ua.NodeId(ua.ObjectIds.Server), ua.Variant(ua.LocalizedText("x")),
                            ua.AttributeIds.DisplayName) == ua.StatusCodes.BadNotWritable


async def test_write_mask_and_user_write_mask_govern_attribute_writes(site) -> None:
    server, path, _runner = site
    limit = _node("Site.ExportLimit")  # WriteMask 64: DisplayName only
    name = ua.Variant(ua.LocalizedText("Export limit (kW)"))
    assert await _write(path, OPERATOR, limit, name, ua.AttributeIds.DisplayName) == ua.StatusCodes.BadUserAccessDenied
    assert await _write(path, VIEWER, limit, name, ua.AttributeIds.DisplayName) == ua.StatusCodes.BadUserAccessDenied
    assert await _write(path, ADMIN, limit, ua.Variant(ua.LocalizedText("d")), ua.AttributeIds.Description) == \
        ua.StatusCodes.BadNotWritable
    assert await _write(path, ADMIN, _node("Site.Mode"), name, ua.AttributeIds.DisplayName) == \
        ua.StatusCodes.BadNotWritable  # WriteMask 0
    assert await _write(path, ADMIN, limit, ua.Variant(0, ua.VariantType.Byte), ua.AttributeIds.UserAccessLevel) == \
        ua.StatusCodes.BadNotWritable
    assert await _write(path, ADMIN, limit, ua.Variant(1, ua.VariantType.Byte), ua.AttributeIds.AccessLevel) == \
        ua.StatusCodes.BadNotWritable  # not in this node's WriteMask
    assert await _write(path, ADMIN, limit, name, ua.AttributeIds.DisplayName) == ua.StatusCodes.Good
    shown = server.iserver.aspace[limit].attributes[ua.AttributeIds.DisplayName].value.Value.Value
    assert shown.Text == "Export limit (kW)"


async def test_user_rights_per_role(site) -> None:
    server, _path, _runner = site
    aspace = server.iserver.aspace
    limit, scaled = aspace[_node("Site.ExportLimit")], aspace[_node("Dev1.Tenths")]
    level = aspace[_node("Dev1.Level")]
    read, write = ua.AccessLevel.CurrentRead.mask, ua.AccessLevel.CurrentWrite.mask
    for nd in (limit, scaled):
        assert access.user_access_level(nd, Role.viewer) == read
        assert access.user_access_level(nd, Role.operator) == read | write
        assert access.user_access_level(nd, Role.admin) == read | write
    assert all(access.user_access_level(level, r) == read for r in Role)
    assert all(not access.user_access_level(aspace[ENABLED_FLAG], r) & write for r in Role)
    assert [access.user_write_mask(limit, r) for r in Role] == [0, 0, ua.WriteMask.DisplayName.mask]
    assert all(access.user_write_mask(aspace[ua.NodeId(ua.ObjectIds.Server)], r) == 0 for r in Role)
    method = aspace[ua.NodeId(ua.ObjectIds.Server_GetMonitoredItems)]
    assert [access.user_executable(method, r) for r in Role] == [False, True, True]


async def test_every_write_and_call_is_audited(site, caplog: pytest.LogCaptureFixture) -> None:
    server, path, _runner = site
    limit = _node("Site.ExportLimit")
    caplog.set_level(logging.INFO, logger="gateway.audit")
    assert await _write(path, OPERATOR, limit, _double(250.0)) == ua.StatusCodes.Good
    assert await _write(path, VIEWER, limit, _double(1.0)) == ua.StatusCodes.BadUserAccessDenied
    assert await _write(path, OPERATOR, _node("Dev1.Tenths"), _double(12.34)) == ua.StatusCodes.BadOutOfRange
    assert await _write(path, OPERATOR, ua.NodeId("Nowhere", NS), _double(1.0)) == ua.StatusCodes.BadNodeIdUnknown
    writes = [r.audit for r in caplog.records if isinstance(getattr(r, "audit", None), WriteRecord)]
    assert [(w.writer.name, w.status.value) for w in writes] == [
        ("operator1", ua.StatusCodes.Good), ("viewer1", ua.StatusCodes.BadUserAccessDenied),
        ("operator1", ua.StatusCodes.BadOutOfRange), ("operator1", ua.StatusCodes.BadNodeIdUnknown)]
    assert (writes[0].node, writes[0].old, writes[0].new) == (limit, 100.0, 250.0)
    assert (writes[1].old, writes[1].new) == (250.0, 1.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.audit"]
    assert lines[0] == f"accepted write ns={NS};s=Site.ExportLimit Value by operator1 (operator) from test: " \
                       "100.0 -> 250.0: Good"
    assert lines[1].startswith("refused write") and "viewer1 (viewer)" in lines[1] and "BadUserAccessDenied" in lines[1]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "gateway.audit")

    caplog.clear()
    request = ua.CallMethodRequest(ObjectId=ua.NodeId(ua.ObjectIds.Server),
                                   MethodId=ua.NodeId(ua.ObjectIds.Server_GetMonitoredItems),
                                   InputArguments=[ua.Variant(4242, ua.VariantType.UInt32)])
    invoke = server.iserver.method_service.call
    assert (await path.call(request, VIEWER, invoke)).StatusCode.value == ua.StatusCodes.BadUserAccessDenied
    answered = await path.call(request, OPERATOR, invoke)
    assert answered.StatusCode.value != ua.StatusCodes.BadUserAccessDenied  # asyncua's own answer
    calls = [r.audit for r in caplog.records if isinstance(getattr(r, "audit", None), CallRecord)]
    assert [(c.writer.name, c.status.value) for c in calls] == [
        ("viewer1", ua.StatusCodes.BadUserAccessDenied), ("operator1", answered.StatusCode.value)]
    assert calls[0].method == request.MethodId and calls[0].inputs == [4242]


async def test_a_value_handler_acts_after_the_write_paths_checks_with_the_writer(site) -> None:
    _server, path, _runner = site

    class Recorder:
        def __init__(self) -> None:
            self.applied: list[tuple[object, str]] = []

        def check(self, value: ua.Variant, writer: Writer) -> ua.StatusCode | None:
            return ua.StatusCode(ua.StatusCodes.BadOutOfRange) if value.Value < 0 else None

        async def apply(self, value: ua.Variant, writer: Writer) -> ua.StatusCode:
            self.applied.append((value.Value, writer.name))
            return ua.StatusCode()

    recorder = Recorder()
    path.handlers[_node("Dev1.Tenths")] = recorder
    assert await _write(path, VIEWER, _node("Dev1.Tenths"), _double(5.0)) == ua.StatusCodes.BadUserAccessDenied
    assert await _write(path, OPERATOR, _node("Dev1.Tenths"), ua.Variant(5, ua.VariantType.Int32)) == \
        ua.StatusCodes.BadTypeMismatch
    assert await _write(path, OPERATOR, _node("Dev1.Tenths"), _double(-1.0)) == ua.StatusCodes.BadOutOfRange
    assert recorder.applied == []
    assert await _write(path, OPERATOR, _node("Dev1.Tenths"), _double(5.0)) == ua.StatusCodes.Good
    assert recorder.applied == [(5.0, "operator1")]
    assert _held("Tenths") == 0  # the handler took it, not the device
