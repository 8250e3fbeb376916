"""The gateway's subscription service, in place of asyncua's.

asyncua's service hands each change to each monitored item as a deep-copied DataValue in a new
notification object, awaits a coroutine per item, serialises every notification again for every
subscription, ignores deadbands, MaxNotificationsPerPublish and ModifySubscription, and forgets a
message once republished. This one keeps asyncua's session-facing interface (the processor's Publish
queue calls `publish_results`; `subscriptions` maps ids to subscriptions) and does the rest itself:
see `items` (filters and queues) and `subscription` (the publishing cycle and retransmission).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.server.address_space import AddressSpace
from asyncua.server.subscription_service import SubscriptionService as AsyncuaSubscriptionService

from gateway.subscriptions.items import FilterRefused
from gateway.subscriptions.subscription import Subscription

log = logging.getLogger(__name__)

_EU_RANGE = ua.QualifiedName("EURange", 0)
_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
# A lifetime shorter than three keep-alive intervals would expire a quiet subscription between keep-alives.
_LIFETIME_PER_KEEP_ALIVE = 3

SamplingOf = Callable[[ua.NodeId], float | None]


class SubscriptionService(AsyncuaSubscriptionService):
    def __init__(self, aspace: AddressSpace, iserver: Any = None) -> None:
        super().__init__(aspace, iserver)
        self.subscriptions: dict[int, Subscription] = {}  # type: ignore[assignment]
        # The scan period (ms) of a node a device updates, None for one that changes by exception; the
        # application sets it once devices are known.
        self.sampling_of: SamplingOf = lambda node: None
        self._item_counter = 0
        self._by_session: dict[ua.NodeId, set[int]] = {}  # every Publish asks how many a session has

    def count_of(self, session_id: ua.NodeId) -> int:
        return len(self._by_session.get(session_id, ()))

    def _owned(self, sub: Subscription) -> None:
        self._by_session.setdefault(sub.session_id, set()).add(sub.subscription_id)

    def _disowned(self, sub: Subscription) -> None:
        ids = self._by_session.get(sub.session_id)
        if ids is not None:
            ids.discard(sub.subscription_id)
            if not ids:
                del self._by_session[sub.session_id]

    @property
    def max_unacked(self) -> int:
        return self.iserver.max_unacked_messages_per_subscription if self.iserver else 5_000

    def next_item_id(self) -> int:
        self._item_counter += 1
        return self._item_counter

    def revise_queue_size(self, requested: int, events: bool = False) -> int:
        """0 asks for the default: one value for a data item, the most the server keeps for an event item
        (events are not values: each one lost is news lost)."""
        cap = self.iserver.max_monitored_item_queue_size if self.iserver else 10_000
        if requested <= 0:
            return cap if events else 1
        return min(int(requested), cap)

    def revise_sampling(self, rvid: ua.ReadValueId, requested: float, sub: Subscription) -> tuple[float, float]:
        """(revised interval in ms, least time between values taken in s); see DataItem.configure."""
        if requested < 0:  # -1: the publishing interval
            requested = sub.data.RevisedPublishingInterval
        scan = self.sampling_of(rvid.NodeId) if rvid.AttributeId == ua.AttributeIds.Value else None
        if scan is not None and requested <= scan:
            return float(scan), 0.0  # sampling a 100 ms variable faster than 100 ms sees nothing new
        return float(requested), requested / 1000.0

    def eu_range(self, rvid: ua.ReadValueId) -> tuple[float, float] | None:
        node = self.aspace.get(rvid.NodeId)
        if node is None or rvid.AttributeId != ua.AttributeIds.Value:
            return None
        for ref in node.references:
            if ref.IsForward and ref.ReferenceTypeId == _HAS_PROPERTY and ref.BrowseName == _EU_RANGE:
                dv = self.aspace.read_attribute_value(ref.NodeId, ua.AttributeIds.Value)
                rng = dv.Value.Value if dv.Value is not None else None
                if isinstance(rng, ua.Range):
                    return float(rng.Low), float(rng.High)
        return None

    # -- subscriptions -------------------------------------------------------------------------------------

    async def create_subscription(self, params: ua.CreateSubscriptionParameters, callback: Callable[..., Any],
                                  session_id: ua.NodeId, request_callback: Callable[..., Any] | None = None
                                  ) -> ua.CreateSubscriptionResult:
        max_subs = self.iserver.max_subscriptions if self.iserver else 1_000
        if len(self.subscriptions) >= max_subs:
            raise ServiceError(ua.StatusCodes.BadTooManySubscriptions)
        result = ua.CreateSubscriptionResult()
        self._revise(result, params.RequestedPublishingInterval, params.RequestedLifetimeCount,
                     params.RequestedMaxKeepAliveCount)
        self._sub_id_counter += 1
        result.SubscriptionId = self._sub_id_counter
        sub = Subscription(self, result, session_id, callback, request_callback, params)
        self.subscriptions[result.SubscriptionId] = sub
        self._owned(sub)
        sub.start()
        return result

    def _revise(self, result: Any, interval: float, lifetime: int, keep_alive: int) -> None:
        result.RevisedPublishingInterval = interval
        result.RevisedMaxKeepAliveCount = self._clamp_keep_alive_count(keep_alive)
        result.RevisedLifetimeCount = max(self._clamp_lifetime_count(lifetime),
                                          _LIFETIME_PER_KEEP_ALIVE * result.RevisedMaxKeepAliveCount)

    def modify_subscription(self, params: ua.ModifySubscriptionParameters) -> ua.ModifySubscriptionResult:
        sub = self._get(params.SubscriptionId)
        result = ua.ModifySubscriptionResult()
        self._revise(result, params.RequestedPublishingInterval, params.RequestedLifetimeCount,
                     params.RequestedMaxKeepAliveCount)
        sub.data.RevisedPublishingInterval = result.RevisedPublishingInterval
        sub.data.RevisedLifetimeCount = result.RevisedLifetimeCount
        sub.data.RevisedMaxKeepAliveCount = result.RevisedMaxKeepAliveCount
        sub.max_notifications = params.MaxNotificationsPerPublish
        return result

    def _get(self, subscription_id: int) -> Subscription:
        sub = self.subscriptions.get(int(subscription_id))
        if sub is None:
            raise ServiceError(ua.StatusCodes.BadSubscriptionIdInvalid)
        return sub

    async def delete_subscriptions(self, ids: list[int]) -> list[ua.StatusCode]:
        results = []
        for i in ids:
            sub = self.subscriptions.pop(int(i), None)
            if sub is None:
                results.append(ua.StatusCode(ua.StatusCodes.BadSubscriptionIdInvalid))
                continue
            self._disowned(sub)
            await sub.stop()
            results.append(ua.StatusCode())
        return results

    async def stop(self) -> None:
        """Every subscription stops (the server stops)."""
        await self.delete_subscriptions(list(self.subscriptions))

    async def expired(self, sub: Subscription) -> None:
        self.subscriptions.pop(sub.subscription_id, None)
        self._disowned(sub)
        sub.delete_items(list(sub.items))

    def publish(self, acks: Iterable[ua.SubscriptionAcknowledgement]) -> tuple[int, list[ua.StatusCode]]:
        if not self.subscriptions:
            raise ServiceError(ua.StatusCodes.BadNoSubscription)
        results = []
        for ack in acks:
            sub = self.subscriptions.get(ack.SubscriptionId)
            if sub is None:
                results.append(ua.StatusCode(ua.StatusCodes.BadSubscriptionIdInvalid))
            elif sub.acknowledge(ack.SequenceNumber):
                results.append(ua.StatusCode())
            else:
                results.append(ua.StatusCode(ua.StatusCodes.BadSequenceNumberUnknown))
        return len(self.subscriptions), results

    async def set_publishing_mode(self, params: ua.SetPublishingModeParameters) -> list[ua.StatusCode]:
        results = []
        for sid in params.SubscriptionIds:
            sub = self.subscriptions.get(sid)
            if sub is None:
                results.append(ua.StatusCode(ua.StatusCodes.BadSubscriptionIdInvalid))
            else:
                sub.publishing_enabled = params.PublishingEnabled
                results.append(ua.StatusCode())
        return results

    def republish_message(self, subscription_id: int, seq: int) -> bytes:
        message = self._get(subscription_id).republish(seq)
        if message is None:
            raise ServiceError(ua.StatusCodes.BadMessageNotAvailable)
        return message

    def republish(self, params: ua.RepublishParameters) -> ua.NotificationMessage:
        raise ServiceError(ua.StatusCodes.BadServiceUnsupported)  # served as bytes: republish_message

    async def transfer_subscriptions(self, params: ua.TransferSubscriptionsParameters, session_id: ua.NodeId,
                                     callback: Callable[..., Any]) -> list[ua.TransferResult]:
        results = []
        for sub_id in params.SubscriptionIds:
            sub = self.subscriptions.get(int(sub_id))
            result = ua.TransferResult()
            if sub is None:
                result.StatusCode = ua.StatusCode(ua.StatusCodes.BadSubscriptionIdInvalid)
                results.append(result)
                continue
            self._disowned(sub)
            sub.session_id = session_id
            self._owned(sub)
            sub.pub_result_callback = callback
            result.AvailableSequenceNumbers = sorted(sub.retained)
            if params.SendInitialValues:
                sub.send_initial_values()
            results.append(result)
        return results

    # -- monitored items -----------------------------------------------------------------------------------

    async def create_monitored_items(self, params: ua.CreateMonitoredItemsParameters
                                     ) -> list[ua.MonitoredItemCreateResult]:
        try:
            return self._get(params.SubscriptionId).create_items(params)
        except FilterRefused as refused:
            raise ServiceError(refused.status) from None

    def modify_monitored_items(self, params: ua.ModifyMonitoredItemsParameters
                               ) -> list[ua.MonitoredItemModifyResult]:
        try:
            return self._get(params.SubscriptionId).modify_items(params)
        except FilterRefused as refused:
            raise ServiceError(refused.status) from None

    async def set_monitoring_mode(self, params: ua.SetMonitoringModeParameters) -> list[ua.StatusCode]:
        return self._get(params.SubscriptionId).set_monitoring_mode(params.MonitoringMode, params.MonitoredItemIds)

    def delete_monitored_items(self, params: ua.DeleteMonitoredItemsParameters) -> list[ua.StatusCode]:
        return self._get(params.SubscriptionId).delete_items(params.MonitoredItemIds)

    async def trigger_event(self, event: Any, subscription_id: int | None = None) -> None:
        """asyncua's own event generators: the gateway delivers events through its event service instead."""
        log.debug("asyncua event %s not delivered: events go through the gateway's event service", event)
