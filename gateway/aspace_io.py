"""The one place the gateway puts a value into the address space.

asyncua's `write_attribute_value` nulls the value of any DataValue with a Bad status and
type-checks every write. The gateway builds correctly typed values itself and must keep the
last value when a device stops answering, so it stores the DataValue and notifies the
monitored items directly.
"""

from __future__ import annotations

import logging

from asyncua import ua
from asyncua.server.address_space import AddressSpace

log = logging.getLogger(__name__)


async def store_value(aspace: AddressSpace, nodeid: ua.NodeId, dv: ua.DataValue) -> None:
    attval = aspace[nodeid].attributes[ua.AttributeIds.Value]
    attval.value = dv
    attval.value_callback = None
    for handle, callback in list(attval.datachange_callbacks.items()):
        try:
            await callback(handle, dv)
        except Exception:
            log.exception("datachange callback for %s failed", nodeid.to_string())


def read_value(aspace: AddressSpace, nodeid: ua.NodeId) -> ua.DataValue | None:
    nd = aspace.get(nodeid)
    av = nd.attributes.get(ua.AttributeIds.Value) if nd else None
    return av.value if av is not None else None
