"""Compact stand-ins for asyncua's NodeData, its attributes dict and AttributeValue, for the nodes a site loads.

asyncua gives every node a dict of ~15 AttributeValues, each with an instance dict and an empty
`datachange_callbacks` dict of its own: 10,000 bound variables (50,000 nodes with their properties)
held 750,000 of them, ~150 MB, although nearly all only ever hold a DataValue shared with thousands
of nodes (WriteMask 0, AccessLevel 5, a DataType...). Here a node keeps its attributes' DataValues in
a tuple laid out as every node of its kind lays them out; an AttributeValue of its own is made when
something asks the mapping for one (a read, a write, a monitored item, a value store), and from then
on it is the attribute: whatever is done to it is done to this node only. asyncua's address space
only looks attributes up, assigns them and reads or sets the AttributeValue's fields, so it uses these
classes as its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from asyncua import ua


class CompactAttributeValue:
    """An attribute's DataValue and callbacks (asyncua's AttributeValue, with slots)."""

    __slots__ = ("_datachange_callbacks", "value", "value_callback", "value_setter")

    def __init__(self, value: ua.DataValue | None) -> None:
        self.value: ua.DataValue | None = value
        self.value_callback: Callable[[ua.NodeId, ua.AttributeIds], ua.DataValue] | None = None
        self.value_setter: Callable[..., None] | None = None
        self._datachange_callbacks: dict[int, Callable[..., Any]] | None = None

    @property
    def datachange_callbacks(self) -> dict[int, Callable[..., Any]]:
        callbacks = self._datachange_callbacks
        if callbacks is None:
            callbacks = self._datachange_callbacks = {}
        return callbacks

    @datachange_callbacks.setter
    def datachange_callbacks(self, callbacks: dict[int, Callable[..., Any]]) -> None:
        self._datachange_callbacks = callbacks

    def __repr__(self) -> str:
        return f"AttributeValue({self.value_callback or self.value})"


class CompactNodeData:
    """A node's attributes and references (asyncua's NodeData, with slots)."""

    __slots__ = ("attributes", "call", "nodeid", "references")

    def __init__(self, nodeid: ua.NodeId, attributes: CompactAttributes) -> None:
        self.nodeid = nodeid
        self.attributes = attributes
        self.references: list[ua.ReferenceDescription] = []
        self.call: Callable[..., Any] | None = None

    def __repr__(self) -> str:
        return f"NodeData(id:{self.nodeid}, attrs:{self.attributes}, refs:{self.references})"


Layout = dict[ua.AttributeIds, int]  # attribute -> index into a node's DataValues; shared by nodes alike


class CompactAttributes(MutableMapping[ua.AttributeIds, CompactAttributeValue]):
    """A node's attributes: DataValues in a shared layout, an AttributeValue made for each one asked for."""

    __slots__ = ("_layout", "_own", "_values")

    def __init__(self, layout: Layout, values: list[ua.DataValue]) -> None:
        self._layout = layout
        self._values = values
        self._own: dict[ua.AttributeIds, CompactAttributeValue | None] | None = None  # None: deleted

    def peek(self, aid: ua.AttributeIds) -> ua.DataValue | None:
        """The attribute's DataValue without making it an AttributeValue (None when the node has none)."""
        own = self._own
        if own is not None and aid in own:
            av = own[aid]
            return av.value if av is not None else None
        i = self._layout.get(aid)
        return self._values[i] if i is not None else None

    def set_initial(self, aid: ua.AttributeIds, dv: ua.DataValue) -> None:
        """Set an attribute's DataValue as a loader does: in the layout while nothing has asked for it."""
        i = self._layout.get(aid)
        if i is None or (self._own is not None and aid in self._own):
            self[aid] = CompactAttributeValue(dv)
        else:
            self._values[i] = dv

    def __getitem__(self, aid: ua.AttributeIds) -> CompactAttributeValue:
        own = self._own
        if own is not None and aid in own:
            av = own[aid]
            if av is None:
                raise KeyError(aid)
            return av
        i = self._layout.get(aid)
        if i is None:
            raise KeyError(aid)
        if own is None:
            own = self._own = {}
        av = own[aid] = CompactAttributeValue(self._values[i])
        return av

    def __contains__(self, aid: object) -> bool:
        own = self._own
        if own is not None and aid in own:
            return own[aid] is not None  # type: ignore[index]
        return aid in self._layout

    def get(self, aid: ua.AttributeIds, default: Any = None) -> Any:
        return self[aid] if aid in self else default

    def __setitem__(self, aid: ua.AttributeIds, av: CompactAttributeValue) -> None:
        if self._own is None:
            self._own = {}
        self._own[aid] = av

    def __delitem__(self, aid: ua.AttributeIds) -> None:
        if aid not in self:
            raise KeyError(aid)
        self[aid] = None  # type: ignore[assignment]

    def __iter__(self) -> Iterator[ua.AttributeIds]:
        own = self._own or {}
        yield from (aid for aid in self._layout if aid not in own)
        yield from (aid for aid, av in own.items() if av is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"{{{', '.join(f'{aid!r}: {self.peek(aid)!r}' for aid in self)}}}"


def attribute_value(nd: Any, aid: ua.AttributeIds) -> ua.DataValue | None:
    """The DataValue of a node's attribute (None when it has none), without making an AttributeValue for it."""
    attributes = nd.attributes
    if isinstance(attributes, CompactAttributes):
        return attributes.peek(aid)
    av = attributes.get(aid)
    return av.value if av is not None else None
