"""Values of the variables the gateway holds itself (site parameters), kept across restarts."""

from gateway.parameters.store import ParameterStore

__all__ = ["ParameterStore"]
