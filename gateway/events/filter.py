"""Event filters as Part 4 defines them: select clauses by browse path, where clauses as content filters.

asyncua's own evaluator matches OfType only against the exact type and reads select clauses as
attribute names, so the gateway evaluates filters itself. A select clause is resolved against the
event's own fields whatever type it names, as long as the event is of that type or a subtype
(clients name BaseEventType for condition fields); a field the event lacks is Null. The ConditionId
clause (ConditionType, empty path, AttributeId NodeId) answers the condition's node.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from gateway.events.event import GatewayEvent, path_of

_HAS_SUBTYPE = ua.NodeId(ua.ObjectIds.HasSubtype)
_CONDITION_TYPE = ua.NodeId(ua.ObjectIds.ConditionType)
_NULL = ua.Variant()


class TypeTree:
    """Which types a type derives from, read once per type from the address space's HasSubtype references."""

    def __init__(self, aspace: AddressSpace) -> None:
        self.aspace = aspace
        self._supertypes: dict[ua.NodeId, frozenset[ua.NodeId]] = {}

    def supertypes(self, type_id: ua.NodeId) -> frozenset[ua.NodeId]:
        found = self._supertypes.get(type_id)
        if found is None:
            chain = [type_id]
            current: ua.NodeId | None = type_id
            while current is not None:
                nd = self.aspace.get(current)
                current = None
                for ref in nd.references if nd is not None else ():
                    if ref.ReferenceTypeId == _HAS_SUBTYPE and not ref.IsForward:
                        current = ref.NodeId
                        chain.append(current)
                        break
            found = frozenset(chain)
            self._supertypes[type_id] = found
        return found

    def is_a(self, type_id: ua.NodeId, base: ua.NodeId) -> bool:
        return base in self.supertypes(type_id)


class FilterError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def select(event: GatewayEvent, clauses: list[ua.SimpleAttributeOperand], types: TypeTree) -> list[ua.Variant]:
    """One value per select clause, in order."""
    return [_select_one(event, clause, types) for clause in clauses]


def _select_one(event: GatewayEvent, clause: ua.SimpleAttributeOperand, types: TypeTree) -> ua.Variant:
    type_def = clause.TypeDefinitionId
    if type_def is not None and not type_def.is_null() and not types.is_a(event.event_type, type_def):
        return _NULL
    if not clause.BrowsePath:
        if clause.AttributeId == ua.AttributeIds.NodeId and event.condition is not None \
                and type_def is not None and types.is_a(type_def, _CONDITION_TYPE):
            return ua.Variant(event.condition, ua.VariantType.NodeId)
        return _NULL
    if clause.AttributeId not in (ua.AttributeIds.Value, 0):
        return _NULL
    return event.fields.get(path_of(clause.BrowsePath), _NULL)


Predicate = Callable[[GatewayEvent], Any]

_COMPARE: dict[int, Callable[[Any, Any], bool]] = {
    ua.FilterOperator.Equals: operator.eq,
    ua.FilterOperator.GreaterThan: operator.gt,
    ua.FilterOperator.LessThan: operator.lt,
    ua.FilterOperator.GreaterThanOrEqual: operator.ge,
    ua.FilterOperator.LessThanOrEqual: operator.le,
}


def compile_where(where: ua.ContentFilter | None, types: TypeTree) -> Predicate:
    """A where clause as a function of the event; FilterError for an operator or operand it cannot evaluate.

    A comparison whose operands cannot be compared (a Null field, mismatched types) is false, as Part 4
    says of an operand that cannot be evaluated.
    """
    elements = list(where.Elements) if where is not None and where.Elements else []
    if not elements:
        return lambda event: True
    compiled: dict[int, Predicate] = {}

    def element(index: int) -> Predicate:
        if index in compiled:
            return compiled[index]
        if not 0 <= index < len(elements):
            raise FilterError(ua.StatusCodes.BadFilterOperandInvalid, f"element {index} does not exist")
        el = elements[index]
        op = el.FilterOperator
        operands = [operand(o, index) for o in el.FilterOperands or []]

        def need(n: int) -> None:
            if len(operands) < n:
                raise FilterError(ua.StatusCodes.BadFilterOperandCountMismatch,
                                  f"{ua.FilterOperator(op).name} needs {n} operands")

        fn: Predicate
        if op in _COMPARE:
            need(2)
            cmp, a, b = _COMPARE[op], operands[0], operands[1]
            fn = lambda e: _safe(cmp, a(e), b(e))  # noqa: E731
        elif op == ua.FilterOperator.IsNull:
            need(1)
            a = operands[0]
            fn = lambda e: a(e) is None  # noqa: E731
        elif op == ua.FilterOperator.Not:
            need(1)
            a = operands[0]
            fn = lambda e: not a(e)  # noqa: E731
        elif op == ua.FilterOperator.And:
            need(2)
            a, b = operands[0], operands[1]
            fn = lambda e: bool(a(e)) and bool(b(e))  # noqa: E731
        elif op == ua.FilterOperator.Or:
            need(2)
            a, b = operands[0], operands[1]
            fn = lambda e: bool(a(e)) or bool(b(e))  # noqa: E731
        elif op == ua.FilterOperator.InList:
            need(2)
            first, rest = operands[0], operands[1:]
            fn = lambda e: any(_safe(operator.eq, first(e), o(e)) for o in rest)  # noqa: E731
        elif op == ua.FilterOperator.Between:
            need(3)
            a, lo, hi = operands
            fn = lambda e: _safe(operator.le, lo(e), a(e)) and _safe(operator.le, a(e), hi(e))  # noqa: E731
        elif op == ua.FilterOperator.OfType:
            need(1)
            base = el.FilterOperands[0]
            if not isinstance(base, ua.LiteralOperand) or base.Value is None \
                    or not isinstance(base.Value.Value, ua.NodeId):
                raise FilterError(ua.StatusCodes.BadFilterOperandInvalid, "OfType needs a NodeId literal")
            type_id = base.Value.Value
            fn = lambda e: types.is_a(e.event_type, type_id)  # noqa: E731
        else:
            raise FilterError(ua.StatusCodes.BadFilterOperatorUnsupported,
                              f"operator {ua.FilterOperator(op).name} is not supported")
        compiled[index] = fn
        return fn

    def operand(o: Any, owner: int) -> Predicate:
        if isinstance(o, ua.ElementOperand):
            # Only later elements: a reference back could loop for ever.
            if not owner < o.Index < len(elements):
                raise FilterError(ua.StatusCodes.BadFilterOperandInvalid,
                                  f"element {owner} refers to element {o.Index}, which is not a later element")
            return lambda e: element(o.Index)(e)
        if isinstance(o, ua.LiteralOperand):
            value = o.Value.Value if o.Value is not None else None
            return lambda e: value
        if isinstance(o, ua.SimpleAttributeOperand):
            return lambda e: _select_one(e, o, types).Value
        raise FilterError(ua.StatusCodes.BadFilterOperandInvalid, f"operand {type(o).__name__} is not supported")

    root = element(0)
    for i in range(len(elements)):  # every element must compile, used or not
        element(i)
    return root


def _safe(cmp: Callable[[Any, Any], bool], a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    if isinstance(a, ua.LocalizedText):
        a = a.Text
    if isinstance(b, ua.LocalizedText):
        b = b.Text
    try:
        return bool(cmp(a, b))
    except TypeError:
        return False
