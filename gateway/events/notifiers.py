"""The notifier chain of an event source: where its events are reported, from the source up to the Server object.

A source's object ancestors below Objects become event notifiers (SubscribeToEvents and HistoryRead in
EventNotifier) and are linked from the Server object down by HasNotifier, so a client finds them by
browsing the notifier tree and an event subscription on any of them (or on Server) sees the source's
events. Shared by every part that emits events (alarms, state machines).
"""

from __future__ import annotations

from typing import Any

from asyncua import ua

from gateway.events.service import SERVER

_OBJECTS = ua.NodeId(ua.ObjectIds.ObjectsFolder)
_HAS_NOTIFIER = ua.NodeId(ua.ObjectIds.HasNotifier)
_PARENT_REFS = {ua.NodeId(ua.ObjectIds.HasComponent), ua.NodeId(ua.ObjectIds.Organizes),
                ua.NodeId(ua.ObjectIds.HasOrderedComponent), ua.NodeId(ua.ObjectIds.HasNotifier),
                ua.NodeId(ua.ObjectIds.HasCondition)}
# EventNotifier's members are bit numbers (SubscribeToEvents is 0), so the byte is built from their masks.
_NOTIFY = ua.EventNotifier.SubscribeToEvents.mask | ua.EventNotifier.HistoryRead.mask
_MAX_DEPTH = 32  # a parent cycle in a malformed site must not loop forever


def notifier_chain(iserver: Any, source: ua.NodeId) -> tuple[ua.NodeId, ...]:
    """The source's object ancestors below Objects, made event notifiers and linked by HasNotifier, then Server."""
    aspace = iserver.aspace
    chain: list[ua.NodeId] = []
    current: ua.NodeId | None = source
    while current is not None and current != _OBJECTS and len(chain) < _MAX_DEPTH:
        nd = aspace.get(current)
        if nd is None:
            break
        if nd.attributes[ua.AttributeIds.NodeClass].value.Value.Value == ua.NodeClass.Object:
            chain.append(current)
        current = next((r.NodeId for r in nd.references if not r.IsForward and r.ReferenceTypeId in _PARENT_REFS),
                       None)
    for node in chain:
        av = aspace.get(node).attributes.get(ua.AttributeIds.EventNotifier)
        if av is not None:
            old = av.value.Value.Value if av.value is not None and av.value.Value is not None else 0
            av.value = ua.DataValue(ua.Variant(old | _NOTIFY, ua.VariantType.Byte))
    links = list(zip([SERVER, *chain[::-1]], chain[::-1], strict=False))
    refs = []
    for parent, child in links:
        if not any(r.NodeId == child and r.ReferenceTypeId == _HAS_NOTIFIER for r in aspace.get(parent).references):
            ref = ua.AddReferencesItem()
            ref.SourceNodeId, ref.TargetNodeId, ref.IsForward = parent, child, True
            ref.ReferenceTypeId = _HAS_NOTIFIER
            ref.TargetNodeClass = ua.NodeClass.Object
            refs.append(ref)
    iserver.node_mgt_service.add_references(refs)
    return (*chain, SERVER)
