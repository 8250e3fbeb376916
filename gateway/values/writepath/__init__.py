"""The one path every change from outside takes: value and attribute writes, method calls."""

from gateway.events.audit import Writer
from gateway.values.writepath.path import WritePath

__all__ = ["WritePath", "Writer"]
