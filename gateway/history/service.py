"""HistoryRead for every client, answered from the gateway's history store.

Replaces the read side of asyncua's HistoryManager: raw reads (ReadRawModifiedDetails with
IsReadModified false) with time ranges, NumValuesPerNode and stateless continuation points, one
status per node. Modified, processed, at-time and event reads answer
BadHistoryOperationUnsupported; HistoryUpdate answers BadHistoryOperationUnsupported (history is
written by the gateway only).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from asyncua import Server, ua
from asyncua.server.history import HistoryManager

from gateway.history.store import ContinuationPointError, HistoryStore

log = logging.getLogger(__name__)

# DateTime 0 on the wire (asyncua decodes it as 1601-01-01) means "not specified" (Part 11, 6.4.3).
_UNSPECIFIED_BEFORE = datetime(1601, 1, 2)


def _given(t: datetime | None) -> datetime | None:
    if t is None or t.replace(tzinfo=None) < _UNSPECIFIED_BEFORE:
        return None
    return t


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(code)


class GatewayHistoryManager(HistoryManager):
    def __init__(self, iserver: Any, store: HistoryStore) -> None:
        super().__init__(iserver)
        self.store = store

    async def read_history(self, params: ua.HistoryReadParameters) -> list[ua.HistoryReadResult]:
        details = params.HistoryReadDetails
        return [await self._read_one(details, rv, params.TimestampsToReturn, params.ReleaseContinuationPoints)
                for rv in params.NodesToRead]

    async def _read_one(self, details: Any, rv: ua.HistoryReadValueId, timestamps: ua.TimestampsToReturn,
                        release: bool) -> ua.HistoryReadResult:
        result = ua.HistoryReadResult()
        if not isinstance(details, ua.ReadRawModifiedDetails) or details.IsReadModified:
            result.StatusCode = _status(ua.StatusCodes.BadHistoryOperationUnsupported)
            return result
        if release:  # stateless continuation points: nothing to free
            return result
        node = self.iserver.aspace.get(rv.NodeId)
        if node is None:
            result.StatusCode = _status(ua.StatusCodes.BadNodeIdUnknown)
            return result
        if not _has_history(node):
            # Part 11 / Part 4: a node whose AccessLevel lacks HistoryRead has no history to read.
            result.StatusCode = _status(ua.StatusCodes.BadHistoryOperationUnsupported)
            return result
        start, end = _given(details.StartTime), _given(details.EndTime)
        if start is None and end is None:
            result.StatusCode = _status(ua.StatusCodes.BadHistoryOperationInvalid)
            return result
        if (start is None or end is None) and not details.NumValuesPerNode:
            result.StatusCode = _status(ua.StatusCodes.BadHistoryOperationInvalid)
            return result
        try:
            values, cp = await self.store.read_raw(rv.NodeId, start, end, details.NumValuesPerNode,
                                                   rv.ContinuationPoint or None)
        except ContinuationPointError:
            result.StatusCode = _status(ua.StatusCodes.BadContinuationPointInvalid)
            return result
        _keep_timestamps(values, timestamps)
        result.HistoryData = ua.HistoryData(DataValues=values)
        result.ContinuationPoint = cp
        if not values:
            result.StatusCode = _status(ua.StatusCodes.GoodNoData)
        elif cp is not None:
            result.StatusCode = _status(ua.StatusCodes.GoodMoreData)
        return result

    def update_history(self, params: ua.HistoryUpdateParameters) -> list[ua.HistoryUpdateResult]:
        return [ua.HistoryUpdateResult(StatusCode=_status(ua.StatusCodes.BadHistoryOperationUnsupported))
                for _ in params.HistoryUpdateDetails]


def _has_history(node: Any) -> bool:
    attrs = node.attributes
    access = attrs.get(ua.AttributeIds.AccessLevel)
    historizing = attrs.get(ua.AttributeIds.Historizing)
    if access is not None and access.value.Value.Value is not None:
        if access.value.Value.Value & ua.AccessLevel.HistoryRead.mask:
            return True
    return bool(historizing is not None and historizing.value.Value.Value)


def _keep_timestamps(values: list[ua.DataValue], which: ua.TimestampsToReturn) -> None:
    if which == ua.TimestampsToReturn.Both:
        return
    for dv in values:
        if which in (ua.TimestampsToReturn.Server, ua.TimestampsToReturn.Neither):
            dv.SourceTimestamp = None
        if which in (ua.TimestampsToReturn.Source, ua.TimestampsToReturn.Neither):
            dv.ServerTimestamp = None


def install_history(server: Server, store: HistoryStore) -> GatewayHistoryManager:
    """Answer HistoryRead from `store` (call before server.start())."""
    manager = GatewayHistoryManager(server.iserver, store)
    server.iserver.history_manager = manager
    return manager
