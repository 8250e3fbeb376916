"""The one place the gateway puts a value into the address space.

asyncua's `write_attribute_value` nulls the value of any DataValue with a Bad status and
type-checks every write. The gateway builds correctly typed values itself and must keep the
last value when a device stops answering, so it stores the DataValue and notifies the
monitored items directly.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from datetime import datetime
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace, AttributeValue

log = logging.getLogger(__name__)

_VALUE = ua.AttributeIds.Value  # an enum member look-up is a Python call on 3.11


class StoredDataValue(ua.DataValue):
    """A DataValue the gateway never mutates once stored, so copying it is returning it, and its encoding,
    once made, stays true.

    (asyncua's monitored items deep-copied the DataValue for each item and change, three quarters of their
    cost with thousands of items; the gateway's own ones keep a reference. Anything else that copies a
    stored value still gets it for free.)
    """

    # The value's OPC UA encoding once a subscription reported it (gateway.subscriptions.encoding.encoded),
    # shared by every subscription that reports the same change.
    __slots__ = ("encoded",)

    def __deepcopy__(self, memo: dict[int, object]) -> StoredDataValue:
        return self

    def __copy__(self) -> StoredDataValue:
        return self

    def __eq__(self, other: object) -> bool:  # equal to a plain DataValue with the same fields
        if not isinstance(other, ua.DataValue):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _DV_FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable dataclass, as DataValue itself


_DV_FIELDS = tuple(f.name for f in dataclasses.fields(ua.DataValue))

_new = object.__new__
_Variant = ua.Variant
_VariantType = ua.VariantType
_NULL = ua.VariantType.Null
# Values whose Variant needs none of the checks of Variant.__post_init__ (those are for arrays, a Variant to
# copy, None, a type to guess).
_SCALARS = frozenset((float, int, bool, str, bytes, datetime))


def stored_datavalue(value: Any, vtype: ua.VariantType, status: ua.StatusCode, source_time: datetime | None,
                     server_time: datetime | None) -> StoredDataValue:
    """`StoredDataValue(ua.Variant(value, vtype), StatusCode=status, SourceTimestamp=source_time,
    ServerTimestamp=server_time)`, with `ua.Variant()` for a value None: equal to it, encoded to the same bytes.

    Built slot by slot: the dataclasses' __init__ and __post_init__ (checks and type guessing that a scalar of
    a known VariantType does not need) took 2.5 us of every stored value; this takes 0.35 us. Anything but a
    plain scalar (an array, a Variant) goes through asyncua's constructor.
    """
    if value is None:
        variant = _new(_Variant)
        variant.Value = None
        variant.VariantType = _NULL
    elif value.__class__ in _SCALARS and vtype.__class__ is _VariantType:
        variant = _new(_Variant)
        variant.Value = value
        variant.VariantType = vtype
    else:
        return StoredDataValue(ua.Variant(value, vtype), StatusCode=status, SourceTimestamp=source_time,
                               ServerTimestamp=server_time)
    variant.Dimensions = None
    variant.is_array = False
    dv = _new(StoredDataValue)
    dv.Encoding = 0
    dv.Value = variant
    dv.StatusCode = status
    dv.SourceTimestamp = source_time
    dv.ServerTimestamp = server_time
    dv.SourcePicoseconds = None
    dv.ServerPicoseconds = None
    return dv


@functools.cache  # a few dozen distinct codes
def status_code(code: int) -> ua.StatusCode:
    """One StatusCode object per code, shared by every stored value (nobody mutates one): a new one per
    value was one more object per variable that lived until its next change, and so reached the
    collector's oldest generation."""
    return ua.StatusCode(code)


class Done:
    """What a watcher that did its work at once returns: asyncua's own write path awaits every callback,
    and awaiting this costs nothing."""

    __slots__ = ()

    def __await__(self) -> Any:
        return iter(())


DONE = Done()


def store_value(aspace: AddressSpace, nodeid: ua.NodeId, dv: ua.DataValue) -> None:
    """Store `dv` as the node's value and tell whoever watches the node's Value attribute, synchronously.

    The watchers are the gateway's monitored items (gateway.subscriptions): plain functions called here as the
    value is stored, no task or coroutine per change. They return DONE, because asyncua's own
    `write_attribute_value` (its clock, its server status) awaits what they return.
    """
    store_at(aspace[nodeid].attributes[_VALUE], nodeid, dv)


def value_attribute(aspace: AddressSpace, nodeid: ua.NodeId) -> AttributeValue | None:
    """The node's Value attribute, for a caller that stores the node's values often (`store_at`): the
    attribute object stays the node's for its life, and looking it up by NodeId each time was the largest
    cost of storing a value."""
    node = aspace.get(nodeid)
    return node.attributes.get(_VALUE) if node is not None else None


def store_at(attval: AttributeValue, nodeid: ua.NodeId, dv: ua.DataValue) -> None:
    """`store_value` with the node's Value attribute at hand."""
    attval.value = dv
    attval.value_callback = None
    callbacks = attval.datachange_callbacks
    if not callbacks:
        return
    if type(dv) is StoredDataValue:
        dv.encoded = None  # room for its encoding: reading an unset slot raises, which costs microseconds
    for handle, callback in list(callbacks.items()):
        try:
            callback(handle, dv)
        except Exception:
            log.exception("datachange callback for %s failed", nodeid.to_string())


def read_value(aspace: AddressSpace, nodeid: ua.NodeId) -> ua.DataValue | None:
    nd = aspace.get(nodeid)
    av = nd.attributes.get(ua.AttributeIds.Value) if nd else None
    return av.value if av is not None else None
