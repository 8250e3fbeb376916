"""Methods bound to handlers: a role per method, arguments checked before the handler runs."""

from gateway.methods.registry import MethodCall, MethodError, MethodRegistry

__all__ = ["MethodCall", "MethodError", "MethodRegistry"]
