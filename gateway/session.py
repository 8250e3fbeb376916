"""asyncua's server with the gateway's own Write and Call service paths.

asyncua applies a client write to the address space before any callback can veto it, and a
setter that raises turns the whole request into a ServiceFault. The gateway's session routes
every WriteValue through its WritePath and answers with one status per item. Method calls need
the operator role. Publishing intervals are revised up to a floor instead of granted as asked.
"""

from __future__ import annotations

import logging
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession
from asyncua.server.user_managers import UserManager

from gateway.security.pki import ClientCertificateValidator
from gateway.security.roles import Role, role_of
from gateway.writepath import WritePath, Writer
from gateway.writepath.access import answer_per_user

log = logging.getLogger(__name__)

MIN_PUBLISHING_INTERVAL_MS = 50.0
_ANONYMOUS = User(role=UserRole.Anonymous)


class GatewaySession(InternalSession):
    iserver: GatewayInternalServer
    _client_description: ua.ApplicationDescription | None = None

    async def create_session(self, params: ua.CreateSessionParameters,
                             sockname: tuple[str, int] | None = None) -> ua.CreateSessionResult:
        self._client_description = params.ClientDescription
        return await super().create_session(params, sockname=sockname)

    def activate_session(self, params: ua.ActivateSessionParameters,
                         peer_certificate: bytes | None) -> ua.ActivateSessionResult:
        validator = self.iserver.client_certificates
        if peer_certificate and validator is not None:
            validator.check(peer_certificate, self._client_description)
        return super().activate_session(params, peer_certificate)

    async def read(self, params: ua.ReadParameters) -> list[ua.DataValue]:
        # UserAccessLevel, UserWriteMask and UserExecutable answer for this session's role, by the rule the
        # write path enforces.
        results = await super().read(params)
        return answer_per_user(self.iserver.aspace, params.NodesToRead, results, role_of(self.user))

    def _writer(self) -> Writer:
        peer = f"{self.name[0]}:{self.name[1]}" if isinstance(self.name, tuple) and len(self.name) >= 2 else self.name
        return Writer(getattr(self.user, "name", None) or "anonymous", role_of(self.user),
                      client=f"{peer} session {self.session_id.to_string()}")

    async def write(self, params: ua.WriteParameters) -> list[ua.StatusCode]:
        path = self.iserver.write_path
        if path is None:  # not yet serving a site: nothing is writable
            return [ua.StatusCode(ua.StatusCodes.BadNotWritable) for _ in params.NodesToWrite]
        writer = self._writer()
        return [await path.write(wv, writer) for wv in params.NodesToWrite]

    async def call(self, params: list[ua.CallMethodRequest]) -> list[ua.CallMethodResult]:
        path = self.iserver.write_path
        if path is not None:  # serving a site: checked and audited per call
            writer, invoke = self._writer(), super().call
            return [await path.call(request, writer, invoke) for request in params]
        if not role_of(self.user).allows(Role.operator):
            return [ua.CallMethodResult(StatusCode=ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)) for _ in params]
        return await super().call(params)

    async def create_subscription(self, params: ua.CreateSubscriptionParameters, callback: Any,
                                  request_callback: Any = None) -> ua.CreateSubscriptionResult:
        if params.RequestedPublishingInterval < MIN_PUBLISHING_INTERVAL_MS:
            params.RequestedPublishingInterval = MIN_PUBLISHING_INTERVAL_MS
        return await super().create_subscription(params, callback, request_callback=request_callback)


class _RefuseEveryone(UserManager):
    """Until configure_security installs the users file, no session gets in (asyncua would
    otherwise start with its permissive manager)."""

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> None:
        return None


class GatewayInternalServer(InternalServer):
    write_path: WritePath | None = None
    client_certificates: ClientCertificateValidator | None = None

    def __init__(self) -> None:
        super().__init__(user_manager=_RefuseEveryone())

    def create_session(self, name: str, user: User = _ANONYMOUS, external: bool = False) -> InternalSession:
        return GatewaySession(self, self.aspace, self.subscription_service, name, user=user, external=external)
