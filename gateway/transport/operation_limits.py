"""OperationLimits: advertised in Server/ServerCapabilities/OperationLimits and enforced per request.

asyncua advertises 10,000 operations per request for each service and enforces none (a Read of
1,000,000 nodes blocked the event loop 21 s). The number of operations is read from the request's
array length before the request is decoded, so a refused request costs next to nothing.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.server.internal_server import InternalServer
from asyncua.ua.ua_binary import nodeid_from_binary

Skip = Callable[[Buffer], str | None]


def _fixed(size: int, limit: str) -> Skip:
    def skip(buf: Buffer) -> str:
        buf.skip(size)
        return limit
    return skip


def _browse(buf: Buffer) -> str:
    nodeid_from_binary(buf)  # View.ViewId
    buf.skip(8 + 4 + 4)  # View.Timestamp, View.ViewVersion, RequestedMaxReferencesPerNode
    return "MaxNodesPerBrowse"


_READ_EVENT_DETAILS = ua.NodeId(ua.ObjectIds.ReadEventDetails_Encoding_DefaultBinary)


def _history_read(buf: Buffer) -> str:
    details_type = nodeid_from_binary(buf)
    encoding = buf.read(1)[0]
    if encoding & 0x01:
        (length,) = struct.unpack("<i", buf.read(4))
        buf.skip(max(length, 0))
    buf.skip(4 + 1)  # TimestampsToReturn, ReleaseContinuationPoints
    return "MaxNodesPerHistoryReadEvents" if details_type == _READ_EVENT_DETAILS else "MaxNodesPerHistoryReadData"


def _request(name: str) -> ua.NodeId:
    return ua.NodeId(getattr(ua.ObjectIds, f"{name}Request_Encoding_DefaultBinary"))


# Per request type: how to skip the fields before the array of operations, and which limit counts it.
_ARRAY_AFTER: dict[ua.NodeId, Skip] = {
    _request("Read"): _fixed(8 + 4, "MaxNodesPerRead"),  # MaxAge, TimestampsToReturn
    _request("Write"): _fixed(0, "MaxNodesPerWrite"),
    _request("Browse"): _browse,
    _request("TranslateBrowsePathsToNodeIds"): _fixed(0, "MaxNodesPerTranslateBrowsePathsToNodeIds"),
    _request("RegisterNodes"): _fixed(0, "MaxNodesPerRegisterNodes"),
    _request("UnregisterNodes"): _fixed(0, "MaxNodesPerRegisterNodes"),
    _request("Call"): _fixed(0, "MaxNodesPerMethodCall"),
    _request("HistoryRead"): _history_read,
    _request("AddNodes"): _fixed(0, "MaxNodesPerNodeManagement"),
    _request("DeleteNodes"): _fixed(0, "MaxNodesPerNodeManagement"),
    _request("AddReferences"): _fixed(0, "MaxNodesPerNodeManagement"),
    _request("DeleteReferences"): _fixed(0, "MaxNodesPerNodeManagement"),
    _request("CreateMonitoredItems"): _fixed(4 + 4, "MaxMonitoredItemsPerCall"),  # SubscriptionId, Timestamps
    _request("ModifyMonitoredItems"): _fixed(4 + 4, "MaxMonitoredItemsPerCall"),
    _request("SetMonitoringMode"): _fixed(4 + 4, "MaxMonitoredItemsPerCall"),  # SubscriptionId, MonitoringMode
    _request("DeleteMonitoredItems"): _fixed(4, "MaxMonitoredItemsPerCall"),
    _request("SetTriggering"): _fixed(4 + 4, "MaxMonitoredItemsPerCall"),  # SubscriptionId, TriggeringItemId
}


def operations_over_limit(typeid: ua.NodeId, body: Buffer, limits: dict[str, int]) -> tuple[str, int] | None:
    """(limit name, operations requested) if the request asks more than its OperationLimit allows.

    `body` is positioned after the RequestHeader and is not consumed. A body too short to hold the
    count is left to the request's own decoder, which answers BadDecodingError."""
    skip = _ARRAY_AFTER.get(typeid)
    if skip is None:
        return None
    try:
        buf = body.copy()
        name = skip(buf)
        (count,) = struct.unpack("<i", buf.read(4))
    except Exception:  # hostile bytes: not ours to diagnose here
        return None
    limit = limits.get(name or "", 0)
    if limit and count > limit:
        return name or "", count
    return None


async def advertise(iserver: InternalServer, limits: dict[str, int]) -> None:
    """Write the enforced limits into Server/ServerCapabilities/OperationLimits."""
    for name, value in limits.items():
        nodeid = ua.NodeId(getattr(ua.ObjectIds, f"Server_ServerCapabilities_OperationLimits_{name}"))
        await iserver.aspace.write_attribute_value(
            nodeid, ua.AttributeIds.Value, ua.DataValue(ua.Variant(value, ua.VariantType.UInt32)))
