"""A refused request with its reason in words, for the one log line that says why."""

from __future__ import annotations

from asyncua.common.utils import ServiceError


class Refused(ServiceError):
    """A ServiceError (the status the client gets) with the reason the gateway logs."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code)
        self.reason = reason
