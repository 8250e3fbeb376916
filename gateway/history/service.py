"""HistoryRead for every client, answered from the gateway's history store.

Replaces asyncua's HistoryManager on `server.iserver.history_manager` (the session's HistoryRead and
HistoryUpdate land there): raw reads (ReadRawModifiedDetails with IsReadModified false) with time
ranges, NumValuesPerNode, ReturnBounds and stateless continuation points, one status per node;
event reads (ReadEventDetails) on event notifiers with the same event filter as subscriptions.
Modified, processed and at-time reads answer BadHistoryOperationUnsupported per node;
HistoryUpdate answers BadHistoryOperationUnsupported (history is written by the gateway only).

asyncua's own historizing API (`server.historize_node_data_change`) keeps working: its storage
is an adapter that feeds the same store, and event historizing is refused with a clear error
instead of silently storing events nobody can read.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from asyncua import Server, ua
from asyncua.server.history import HistoryManager, HistoryStorageInterface
from asyncua.ua.ua_binary import struct_to_binary

from gateway.events.filter import FilterError, TypeTree, compile_where, select
from gateway.history.events import EventContinuationError
from gateway.history.store import ContinuationPointError, HistoryStore, HistoryUnavailable

log = logging.getLogger(__name__)

# DateTime 0 on the wire (asyncua decodes it as 1601-01-01) means "not specified" (Part 11, 6.4.3).
_UNSPECIFIED_BEFORE = datetime(1601, 1, 2)


_HISTORY_DATA_BINARY = ua.NodeId(ua.ObjectIds.HistoryData_Encoding_DefaultBinary)
_HISTORY_EVENT_BINARY = ua.NodeId(ua.ObjectIds.HistoryEvent_Encoding_DefaultBinary)


def _given(t: datetime | None) -> datetime | None:
    if t is None or t.replace(tzinfo=None) < _UNSPECIFIED_BEFORE:
        return None
    return t


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(code)


class _StoreStorage(HistoryStorageInterface):
    """asyncua's storage interface over the gateway store, for `server.historize_node_data_change`."""

    def __init__(self, store: HistoryStore) -> None:
        super().__init__()
        self.store = store

    async def init(self) -> None:  # the gateway starts and stops the store itself
        pass

    async def stop(self) -> None:
        pass

    async def new_historized_node(self, node_id: ua.NodeId, period: timedelta | None, count: int = 0) -> None:
        pass  # retention is the store's, per site, not per node

    async def save_node_value(self, node_id: ua.NodeId, datavalue: ua.DataValue) -> None:
        self.store.append(node_id, datavalue)

    async def read_node_history(self, node_id: ua.NodeId, start: datetime | None, end: datetime | None,
                                nb_values: int) -> tuple[list[ua.DataValue], datetime | None]:
        start, end = _given(start), _given(end)
        if start is None and end is None:
            return [], None
        values, _ = await self.store.read_raw(node_id, start, end, nb_values)
        return values, None

    async def new_historized_event(self, source_id: ua.NodeId, evtypes: list[ua.NodeId], period: timedelta | None,
                                   count: int = 0) -> None:
        raise ua.UaStatusCodeError(ua.StatusCodes.BadHistoryOperationUnsupported)

    async def save_event(self, event: Any) -> None:
        pass

    async def read_event_history(self, source_id: ua.NodeId, start: datetime | None, end: datetime | None,
                                 nb_values: int, evfilter: Any) -> tuple[list[Any], None]:
        return [], None


class GatewayHistoryManager(HistoryManager):
    """HistoryRead/HistoryUpdate from the gateway's store; see the module docstring."""

    def __init__(self, iserver: Any, store: HistoryStore) -> None:
        super().__init__(iserver)
        self.store = store
        self.storage = _StoreStorage(store)
        self.types = TypeTree(iserver.aspace)

    async def read_history(self, params: ua.HistoryReadParameters) -> list[ua.HistoryReadResult]:
        # Part 4, 5.10.3: NEITHER is not a valid TimestampsToReturn for HistoryRead (a service fault).
        if params.TimestampsToReturn == ua.TimestampsToReturn.Neither:
            raise ua.UaStatusCodeError(ua.StatusCodes.BadTimestampsToReturnInvalid)
        if not params.NodesToRead:
            raise ua.UaStatusCodeError(ua.StatusCodes.BadNothingToDo)
        details = params.HistoryReadDetails
        return [await self._read_one(details, rv, params.TimestampsToReturn, params.ReleaseContinuationPoints)
                for rv in params.NodesToRead]

    async def _read_one(self, details: Any, rv: ua.HistoryReadValueId, timestamps: ua.TimestampsToReturn,
                        release: bool) -> ua.HistoryReadResult:
        result = ua.HistoryReadResult()
        if isinstance(details, ua.ReadEventDetails):
            return await self._read_events(details, rv, release)
        if not isinstance(details, ua.ReadRawModifiedDetails) or details.IsReadModified:
            # Events, modified, processed and at-time reads: the store keeps raw values only.
            result.StatusCode = _status(ua.StatusCodes.BadHistoryOperationUnsupported)
            return result
        if release:  # stateless continuation points: nothing to free
            return result
        node = self.iserver.aspace.get(rv.NodeId)
        if node is None:
            result.StatusCode = _status(ua.StatusCodes.BadNodeIdUnknown)
            return result
        if not _has_history(node):
            # Why BadHistoryOperationUnsupported and not Bad/GoodNoData: NoData says "history exists,
            # nothing in this range", inviting a client to widen the range and retry forever. A
            # variable whose AccessLevel lacks HistoryRead and which is not Historizing has no
            # history at all; Part 11 (6.x, "the requested operation is not supported by the
            # Server" for this node) and node-opcua's server answer BadHistoryOperationUnsupported.
            result.StatusCode = _status(ua.StatusCodes.BadHistoryOperationUnsupported)
            return result
        start, end = _given(details.StartTime), _given(details.EndTime)
        if start is None and end is None:
            # Part 11, 6.4.3.2: at least two of StartTime, EndTime, NumValuesPerNode must be given.
            result.StatusCode = _status(ua.StatusCodes.BadHistoryOperationInvalid)
            return result
        if (start is None or end is None) and not details.NumValuesPerNode:
            result.StatusCode = _status(ua.StatusCodes.BadHistoryOperationInvalid)
            return result
        try:
            count, body, cp = await self.store.read_raw_encoded(
                rv.NodeId, start, end, details.NumValuesPerNode, rv.ContinuationPoint or None,
                bool(details.ReturnBounds), timestamps)
        except ContinuationPointError:
            result.StatusCode = _status(ua.StatusCodes.BadContinuationPointInvalid)
            return result
        except HistoryUnavailable:  # the database cannot be opened now (full disk): the client is told so
            result.StatusCode = _status(ua.StatusCodes.BadResourceUnavailable)
            return result
        except Exception:  # one node's failure must not fault the other nodes of the request
            log.exception("HistoryRead of %s failed", rv.NodeId.to_string())
            result.StatusCode = _status(ua.StatusCodes.BadInternalError)
            return result
        # Already encoded off the event loop (HistoryStore.read_raw_encoded); asyncua sends an
        # ExtensionObject's body as it is and clients decode it as the HistoryData it is.
        result.HistoryData = ua.ExtensionObject(TypeId=_HISTORY_DATA_BINARY, Body=body)
        result.ContinuationPoint = cp
        if not count:
            result.StatusCode = _status(ua.StatusCodes.GoodNoData)
        elif cp is not None:
            result.StatusCode = _status(ua.StatusCodes.GoodMoreData)
        return result

    async def _read_events(self, details: ua.ReadEventDetails, rv: ua.HistoryReadValueId,
                           release: bool) -> ua.HistoryReadResult:
        """HistoryReadEvents on an event notifier (the Server object, the site, a device): the stored events
        it reported, in time order (backwards when StartTime > EndTime), through the request's event filter."""
        result = ua.HistoryReadResult()
        if release:
            return result
        node = self.iserver.aspace.get(rv.NodeId)
        if node is None:
            result.StatusCode = _status(ua.StatusCodes.BadNodeIdUnknown)
            return result
        notifier = node.attributes.get(ua.AttributeIds.EventNotifier)
        bits = notifier.value.Value.Value if notifier is not None and notifier.value is not None else 0
        if not bits & ua.EventNotifier.HistoryRead.mask:  # the members are bit numbers; .mask is the bit
            result.StatusCode = _status(ua.StatusCodes.BadHistoryOperationUnsupported)
            return result
        start, end = _given(details.StartTime), _given(details.EndTime)
        if (start is None and end is None) or ((start is None or end is None) and not details.NumValuesPerNode):
            result.StatusCode = _status(ua.StatusCodes.BadHistoryOperationInvalid)
            return result
        flt = details.Filter or ua.EventFilter()
        try:
            where = compile_where(flt.WhereClause, self.types)
        except FilterError as exc:
            result.StatusCode = _status(exc.status)
            return result
        try:
            events, cp = await self.store.read_events(rv.NodeId, start, end, details.NumValuesPerNode,
                                                      rv.ContinuationPoint or None, where)
        except EventContinuationError:
            result.StatusCode = _status(ua.StatusCodes.BadContinuationPointInvalid)
            return result
        except HistoryUnavailable:
            result.StatusCode = _status(ua.StatusCodes.BadResourceUnavailable)
            return result
        except Exception:
            log.exception("HistoryReadEvents of %s failed", rv.NodeId.to_string())
            result.StatusCode = _status(ua.StatusCodes.BadInternalError)
            return result
        clauses = list(flt.SelectClauses or [])

        def encode() -> bytes:  # off the loop: 10,000 events of a few fields each take tens of ms
            return struct_to_binary(ua.HistoryEvent(Events=[
                ua.HistoryEventFieldList(EventFields=select(e, clauses, self.types)) for e in events]))

        result.HistoryData = ua.ExtensionObject(TypeId=_HISTORY_EVENT_BINARY, Body=await asyncio.to_thread(encode))
        result.ContinuationPoint = cp
        if not events:
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


def install_history(server: Server, store: HistoryStore) -> GatewayHistoryManager:
    """Answer HistoryRead from `store` (call before server.start(); the store is started and stopped by the caller)."""
    manager = GatewayHistoryManager(server.iserver, store)
    server.iserver.history_manager = manager
    return manager
