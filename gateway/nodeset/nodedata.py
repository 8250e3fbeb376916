"""Compact stand-ins for asyncua's NodeData and AttributeValue, for the nodes a site loads.

asyncua's classes have no __slots__, and every AttributeValue starts with its own empty
`datachange_callbacks` dict: a site node carries ~15 attributes, so 10,000 bound variables (50,000
nodes with their properties) held 750,000 empty dicts and instance dicts, ~100 MB. These classes have
the same attributes, so asyncua's address space (which only reads and assigns them) uses them as its
own; the callbacks dict is made when somebody first asks for it (a monitored item, a value store).
"""

from __future__ import annotations

from collections.abc import Callable
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

    def __init__(self, nodeid: ua.NodeId) -> None:
        self.nodeid = nodeid
        self.attributes: dict[ua.AttributeIds, CompactAttributeValue] = {}
        self.references: list[ua.ReferenceDescription] = []
        self.call: Callable[..., Any] | None = None

    def __repr__(self) -> str:
        return f"NodeData(id:{self.nodeid}, attrs:{self.attributes}, refs:{self.references})"
