"""The method framework: a UAMethod node bound to a handler, with the role it needs.

A handler is bound to a method's NodeId. A type's method (Acknowledge on AcknowledgeableConditionType)
is called with the instance as ObjectId, and an instance may have its own copy of the method node;
`alias` makes such a copy call the same handler. Before a handler runs the caller's role is checked
(BadUserAccessDenied) and the input arguments are checked against the method's InputArguments
(BadArgumentsMissing, BadTooManyArguments, BadTypeMismatch with a status per argument). The handler
gets a `MethodCall` with the caller's identity and answers output Variants or raises `MethodError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from gateway.events.audit import Writer
from gateway.security.roles import Role

_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
_BASE_DATATYPE = ua.NodeId(ua.ObjectIds.BaseDataType)
# Variant types a built-in DataType id takes (ns 0, ids 1..25 are the built-in types in VariantType order).
_NUMBER = ua.NodeId(ua.ObjectIds.Number)
_NUMERIC = {ua.VariantType(i) for i in range(2, 12)}


class MethodError(Exception):
    def __init__(self, status: int, message: str = "", input_results: list[ua.StatusCode] | None = None) -> None:
        super().__init__(message or ua.StatusCode(status).name)
        self.status = status
        self.input_results = input_results or []


@dataclass(slots=True)
class MethodCall:
    object_id: ua.NodeId
    method_id: ua.NodeId
    inputs: list[ua.Variant]
    writer: Writer
    session: Any = None  # the calling session (its subscriptions), None for an internal caller

    def arg(self, i: int) -> Any:
        return self.inputs[i].Value if i < len(self.inputs) else None


Handler = Callable[[MethodCall], Awaitable[list[ua.Variant]]]


@dataclass(slots=True)
class Binding:
    handler: Handler
    role: Role
    arguments: list[ua.Argument] | None = field(default=None)


class MethodRegistry:
    def __init__(self, aspace: AddressSpace) -> None:
        self.aspace = aspace
        self._bound: dict[ua.NodeId, Binding] = {}
        self._aliases: dict[ua.NodeId, ua.NodeId] = {}

    def bind(self, method: ua.NodeId, handler: Handler, role: Role) -> None:
        self._bound[method] = Binding(handler, role, _input_arguments(self.aspace, method))

    def alias(self, method: ua.NodeId, to: ua.NodeId) -> None:
        """Make an instance's copy of a method call the handler bound to the type's method."""
        target = self._bound[to]
        args = _input_arguments(self.aspace, method)
        self._bound[method] = Binding(target.handler, target.role, args if args is not None else target.arguments)
        self._aliases[method] = to

    def canonical(self, method: ua.NodeId) -> ua.NodeId:
        """The method a copy was aliased to (the type's method), or the method itself."""
        return self._aliases.get(method, method)

    def bound(self, method: ua.NodeId) -> bool:
        return method in self._bound

    async def call(self, request: ua.CallMethodRequest, writer: Writer, session: Any = None) -> ua.CallMethodResult:
        binding = self._bound[request.MethodId]
        if not writer.role.allows(binding.role):
            return ua.CallMethodResult(StatusCode=ua.StatusCode(ua.StatusCodes.BadUserAccessDenied))
        inputs = list(request.InputArguments or [])
        try:
            check_arguments(binding.arguments, inputs)
            outputs = await binding.handler(MethodCall(request.ObjectId, request.MethodId, inputs, writer, session))
        except MethodError as exc:
            return ua.CallMethodResult(StatusCode=ua.StatusCode(exc.status), InputArgumentResults=exc.input_results)
        return ua.CallMethodResult(StatusCode=ua.StatusCode(), OutputArguments=outputs)


def check_arguments(expected: list[ua.Argument] | None, given: list[ua.Variant]) -> None:
    if expected is None:
        return
    if len(given) < len(expected):
        raise MethodError(ua.StatusCodes.BadArgumentsMissing,
                          f"{len(expected)} arguments expected, {len(given)} given")
    if len(given) > len(expected):
        raise MethodError(ua.StatusCodes.BadTooManyArguments,
                          f"{len(expected)} arguments expected, {len(given)} given")
    results = [ua.StatusCode(ua.StatusCodes.Good if _fits(a, v) else ua.StatusCodes.BadTypeMismatch)
               for a, v in zip(expected, given, strict=True)]
    if any(not r.is_good() for r in results):
        raise MethodError(ua.StatusCodes.BadInvalidArgument, "argument of the wrong type", results)


def _fits(arg: ua.Argument, value: ua.Variant) -> bool:
    dt = arg.DataType
    if dt is None or dt == _BASE_DATATYPE:
        return True
    vt = value.VariantType
    if arg.ValueRank >= 1 or (arg.ValueRank in (-3, 0) and value.is_array):
        if not value.is_array and value.Value is not None:
            return False
    elif value.is_array:
        return False
    if dt.NamespaceIndex == 0 and isinstance(dt.Identifier, int):
        if 1 <= dt.Identifier <= 25:
            return vt.value == dt.Identifier
        if dt == _NUMBER:
            return vt in _NUMERIC
        if dt.Identifier == ua.ObjectIds.Duration:
            return vt == ua.VariantType.Double
        if dt.Identifier == ua.ObjectIds.UtcTime:
            return vt == ua.VariantType.DateTime
        if dt.Identifier == ua.ObjectIds.LocaleId:
            return vt == ua.VariantType.String
    return True  # structured and site types: the handler checks what it reads


def _input_arguments(aspace: AddressSpace, method: ua.NodeId) -> list[ua.Argument] | None:
    nd = aspace.get(method)
    if nd is None:
        return None
    for ref in nd.references:
        if ref.ReferenceTypeId != _HAS_PROPERTY or not ref.IsForward:
            continue
        child = aspace.get(ref.NodeId)
        name = child.attributes.get(ua.AttributeIds.BrowseName) if child is not None else None
        if name is not None and name.value.Value.Value.Name == "InputArguments":
            value = child.attributes[ua.AttributeIds.Value].value
            args = value.Value.Value if value is not None and value.Value is not None else None
            return list(args or [])
    return []  # a method without InputArguments takes none
