"""asyncua's server with the gateway's own Write and Call service paths, logins and subscription ownership.

asyncua applies a client write to the address space before any callback can veto it, and a
setter that raises turns the whole request into a ServiceFault. The gateway's session routes
every WriteValue through its WritePath and answers with one status per item. Method calls need
the operator role. Publishing intervals are revised up to a floor instead of granted as asked.

ActivateSession is awaited (`activate`): the password check runs in a thread, not on the event
loop. A session acts only on its own subscriptions (gateway.transport.ownership), and its
authentication token is a secret, not asyncua's counter.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError, create_nonce
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession, SessionState
from asyncua.server.user_managers import UserManager
from asyncua.ua.uaerrors import UaStatusCodeError

from gateway.addressspace.standard_cache import StandardNodesFromCache
from gateway.security.pki import ClientCertificateValidator
from gateway.security.roles import Role, role_of
from gateway.subscriptions.service import SubscriptionService
from gateway.transport.diagnostics import SessionCounters
from gateway.transport.ownership import SubscriptionOwner, identity_of, may_transfer
from gateway.transport.refusal import Refused
from gateway.values.writepath import WritePath, Writer
from gateway.values.writepath.access import answer_per_user

log = logging.getLogger(__name__)

MIN_PUBLISHING_INTERVAL_MS = 50.0
YIELD_EVERY_S = 0.01  # a long Write lets other work run this often
_ANONYMOUS = User(role=UserRole.Anonymous)
_NOT_OWN = ua.StatusCodes.BadSubscriptionIdInvalid


def _identity_token(params: ua.ActivateSessionParameters) -> object:
    token = params.UserIdentityToken
    if token is None or (isinstance(token, ua.ExtensionObject) and token.TypeId == ua.NodeId(ua.ObjectIds.Null)):
        return ua.AnonymousIdentityToken()  # Part 4, 5.6.3: a null token means anonymous
    return token


class GatewaySession(InternalSession):
    iserver: GatewayInternalServer
    subscription_service: SubscriptionService
    _client_description: ua.ApplicationDescription | None = None
    # The secure channel's client certificate at CreateSession: a re-activation from another channel
    # must present the same one.
    channel_certificate: bytes | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # asyncua numbers authentication tokens 1000, 1001, ...; a token finds a session for re-activation
        # on a new channel, so it must not be guessable.
        if self.external:
            self.iserver.unregister_external_session(self)
        self.auth_token = ua.NodeId(secrets.token_bytes(32), 0, ua.NodeIdType.ByteString)
        if self.external:
            self.iserver.register_external_session(self)

    async def create_session(self, params: ua.CreateSessionParameters,
                             sockname: tuple[str, int] | None = None) -> ua.CreateSessionResult:
        self._client_description = params.ClientDescription
        return await super().create_session(params, sockname=sockname)

    def activate_session(self, params: ua.ActivateSessionParameters,
                         peer_certificate: bytes | None) -> ua.ActivateSessionResult:
        """asyncua's synchronous path, kept for asyncua's own processor; the gateway's awaits `activate`."""
        validator = self.iserver.client_certificates
        if peer_certificate and validator is not None:
            validator.check(peer_certificate, self._client_description)
        return super().activate_session(params, peer_certificate)

    async def activate(self, params: ua.ActivateSessionParameters,
                       peer_certificate: bytes | None) -> ua.ActivateSessionResult:
        """ActivateSession as asyncua's activate_session does it, with the login awaited.

        Raises ServiceError (Refused with a reason for the log) when refused."""
        validator = self.iserver.client_certificates
        if peer_certificate and validator is not None:
            validator.check(peer_certificate, self._client_description)
        if self.state == SessionState.Closed:
            raise Refused(ua.StatusCodes.BadSessionIdInvalid, "the session is closed")
        first_activation = self.state == SessionState.Created
        if first_activation and InternalSession._current_connections >= InternalSession.max_connections:
            raise Refused(ua.StatusCodes.BadTooManySessions, "too many active sessions")
        token = _identity_token(params)
        if not isinstance(token, self.iserver.supported_tokens):
            raise Refused(ua.StatusCodes.BadIdentityTokenRejected,
                               f"{type(token).__name__} is not accepted by this server")
        self.user = await self._login(token, params, peer_certificate)
        result = ua.ActivateSessionResult()
        result.Results = [ua.StatusCode() for _ in params.ClientSoftwareCertificates]
        self.nonce = create_nonce(32)
        result.ServerNonce = self.nonce
        self.state = SessionState.Activated
        if first_activation:
            InternalSession._current_connections += 1
        self.touch()
        self._start_timeout_watchdog()
        self.logger.info("Activated session %s for user %s", self.name, self.user)
        return result

    async def _login(self, token: object, params: ua.ActivateSessionParameters,
                     peer_certificate: bytes | None) -> User:
        username = password = None
        try:
            if isinstance(token, ua.UserNameIdentityToken):
                username, password = self.iserver.decrypt_user_token(self, token)
            elif isinstance(token, ua.X509IdentityToken):
                peer_certificate = self.iserver.verify_x509_token(self, token, params.UserTokenSignature)
        except (ServiceError, UaStatusCodeError):
            raise
        except Exception:  # garbage from the client: asyncua's decoders raise whatever they meet
            raise Refused(ua.StatusCodes.BadIdentityTokenInvalid,
                               "the identity token cannot be decrypted or verified") from None
        manager = self.iserver.user_manager
        login = getattr(manager, "login", None)
        if login is not None:
            user = await login(username, password, peer_certificate)
        else:
            user = manager.get_user(self.iserver, username=username, password=password, certificate=peer_certificate)
        if user is None:
            raise Refused(ua.StatusCodes.BadUserAccessDenied,
                               "wrong user name or password" if username is not None else "not permitted")
        return user

    async def close_session(self, delete_subs: bool = True) -> None:
        task = self._timeout_task
        timed_out = self.state is not SessionState.Closed and task is not None and asyncio.current_task() is task
        await super().close_session(delete_subs)
        counters = self.iserver.session_counters
        if timed_out and counters is not None:
            counters.session_timeouts += 1

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
        results = []
        last_yield = time.monotonic()
        for wv in params.NodesToWrite:
            results.append(await path.write(wv, writer))
            if time.monotonic() - last_yield > YIELD_EVERY_S:
                # A write to a simulated or cached device never waits on I/O: a Write of a thousand values
                # would hold the loop for a second (and every other client's keep-alive with it).
                await asyncio.sleep(0)
                last_yield = time.monotonic()
        return results

    async def call(self, params: list[ua.CallMethodRequest]) -> list[ua.CallMethodResult]:
        path = self.iserver.write_path
        if path is not None:  # serving a site: checked and audited per call
            writer, invoke = self._writer(), super().call
            return [await path.call(request, writer, invoke, self) for request in params]
        if not role_of(self.user).allows(Role.operator):
            return [ua.CallMethodResult(StatusCode=ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)) for _ in params]
        return await super().call(params)

    async def create_subscription(self, params: ua.CreateSubscriptionParameters, callback: Any,
                                  request_callback: Any = None) -> ua.CreateSubscriptionResult:
        if params.RequestedPublishingInterval < MIN_PUBLISHING_INTERVAL_MS:
            params.RequestedPublishingInterval = MIN_PUBLISHING_INTERVAL_MS
        result = await super().create_subscription(params, callback, request_callback=request_callback)
        sub = self.subscription_service.subscriptions.get(result.SubscriptionId)
        if sub is not None:
            sub.gateway_owner = SubscriptionOwner(identity_of(self.user, self.channel_certificate))
        if self.iserver.session_counters is not None:
            self.iserver.session_counters.cumulated_subscriptions += 1
        return result

    # -- only the session's own subscriptions --------------------------------------------------------------

    def owns_subscription(self, subscription_id: int) -> bool:
        sub = self.subscription_service.subscriptions.get(int(subscription_id))
        return sub is not None and sub.session_id == self.session_id

    def _require_own(self, subscription_id: int) -> None:
        if not self.owns_subscription(subscription_id):
            raise ServiceError(_NOT_OWN)

    def modify_subscription(self, params: ua.ModifySubscriptionParameters) -> ua.ModifySubscriptionResult:
        self._require_own(params.SubscriptionId)
        return super().modify_subscription(params)

    async def delete_subscriptions(self, ids: list[int]) -> list[ua.StatusCode]:
        own = [i for i in ids if self.owns_subscription(i)]
        deleted = iter(await super().delete_subscriptions(own))
        return [next(deleted) if i in own else ua.StatusCode(_NOT_OWN) for i in ids]

    async def set_publishing_mode(self, params: ua.SetPublishingModeParameters) -> list[ua.StatusCode]:
        own = [i for i in params.SubscriptionIds if self.owns_subscription(i)]
        done = iter(await super().set_publishing_mode(
            ua.SetPublishingModeParameters(PublishingEnabled=params.PublishingEnabled, SubscriptionIds=own)))
        return [next(done) if i in own else ua.StatusCode(_NOT_OWN) for i in params.SubscriptionIds]

    async def create_monitored_items(self, params: ua.CreateMonitoredItemsParameters
                                     ) -> list[ua.MonitoredItemCreateResult]:
        self._require_own(params.SubscriptionId)
        limit = self.iserver.max_monitored_items
        if limit and self._monitored_item_count() + len(params.ItemsToCreate) > limit:
            raise Refused(ua.StatusCodes.BadTooManyMonitoredItems,
                               f"the server holds at most {limit} monitored items")
        return await super().create_monitored_items(params)

    def _monitored_item_count(self) -> int:
        return sum(len(sub.items) for sub in self.subscription_service.subscriptions.values())

    async def modify_monitored_items(self, params: ua.ModifyMonitoredItemsParameters
                                     ) -> list[ua.MonitoredItemModifyResult]:
        self._require_own(params.SubscriptionId)
        return await super().modify_monitored_items(params)

    async def delete_monitored_items(self, params: ua.DeleteMonitoredItemsParameters) -> list[ua.StatusCode]:
        self._require_own(params.SubscriptionId)
        return await super().delete_monitored_items(params)

    async def set_monitoring_mode(self, params: ua.SetMonitoringModeParameters) -> list[ua.StatusCode]:
        self._require_own(params.SubscriptionId)
        return await super().set_monitoring_mode(params)

    def republish_message(self, params: ua.RepublishParameters) -> bytes:
        """The encoded NotificationMessage still held for a Republish (BadMessageNotAvailable when it is not)."""
        self._require_own(params.SubscriptionId)
        return self.subscription_service.republish_message(params.SubscriptionId, params.RetransmitSequenceNumber)

    def publish(self, acks: Iterable[ua.SubscriptionAcknowledgement] | None = None) -> tuple[int, list[ua.StatusCode]]:
        acks = list(acks or [])
        own_count = self.subscription_service.count_of(self.session_id)
        if not own_count:
            raise ServiceError(ua.StatusCodes.BadNoSubscription)
        own = [ack for ack in acks if self.owns_subscription(ack.SubscriptionId)]
        _, own_results = self.subscription_service.publish(own)
        acked = iter(own_results)
        return own_count, [next(acked) if self.owns_subscription(ack.SubscriptionId) else ua.StatusCode(_NOT_OWN)
                           for ack in acks]

    async def transfer_subscriptions(  # type: ignore[override]
        self, params: ua.TransferSubscriptionsParameters, callback: Any
    ) -> list[ua.TransferResult]:
        """Take over subscriptions of the same identity (or any, as admin): see gateway.transport.ownership."""
        subscriptions = self.subscription_service.subscriptions
        allowed: list[int] = []
        refused: dict[int, int] = {}
        for sub_id in params.SubscriptionIds:
            sub = subscriptions.get(int(sub_id))
            if sub is None:
                refused[sub_id] = ua.StatusCodes.BadSubscriptionIdInvalid
            elif may_transfer(getattr(sub, "gateway_owner", None), self.user, self.channel_certificate):
                allowed.append(sub_id)
            else:
                refused[sub_id] = ua.StatusCodes.BadUserAccessDenied
        transferred = iter(await super().transfer_subscriptions(
            ua.TransferSubscriptionsParameters(SubscriptionIds=allowed, SendInitialValues=params.SendInitialValues),
            callback))
        owner = SubscriptionOwner(identity_of(self.user, self.channel_certificate))
        results = []
        for sub_id in params.SubscriptionIds:
            if sub_id in refused:
                results.append(ua.TransferResult(StatusCode=ua.StatusCode(refused[sub_id])))
                continue
            results.append(next(transferred))
            sub = subscriptions.get(int(sub_id))
            if sub is not None:
                sub.gateway_owner = owner
        return results


class _RefuseEveryone(UserManager):
    """Until configure_security installs the users file, no session gets in (asyncua would
    otherwise start with its permissive manager)."""

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> None:
        return None


class GatewayInternalServer(StandardNodesFromCache, InternalServer):
    """asyncua's internal server with the gateway's sessions and subscriptions; namespace 0 from the cache
    (gateway.addressspace.standard_cache)."""

    write_path: WritePath | None = None
    client_certificates: ClientCertificateValidator | None = None
    # Set by gateway.transport.GatewayServer: the total of monitored items (0: no limit) and the
    # counters of ServerDiagnosticsSummary.
    max_monitored_items: int = 0
    session_counters: SessionCounters | None = None

    def __init__(self) -> None:
        super().__init__(user_manager=_RefuseEveryone())
        # The gateway's own subscriptions and monitored items (gateway.subscriptions) replace asyncua's,
        # before any session (the internal one included) holds asyncua's service.
        self.subscription_service = SubscriptionService(self.aspace, iserver=self)
        self.isession.subscription_service = self.subscription_service

    async def stop(self) -> None:
        await super().stop()
        # Subscriptions of sessions that outlive the server (a client gone without closing, kept for
        # re-activation) would otherwise go on publishing into nothing, holding the address space.
        await self.subscription_service.stop()

    def create_session(self, name: str, user: User = _ANONYMOUS, external: bool = False) -> InternalSession:
        return GatewaySession(self, self.aspace, self.subscription_service, name, user=user, external=external)
