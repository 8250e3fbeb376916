"""asyncua's UaProcessor with the gateway's checks in front of its service dispatch.

Before asyncua serves a request: the channel must match an offered endpoint (else only discovery),
RegisterServer needs an admin session, every OperationLimit holds, sessions are counted and capped.
CreateSession, ActivateSession and TransferSubscriptions are the gateway's own: ActivateSession
awaits the login (asyncua calls it synchronously, so scrypt ran on the event loop), throttles
failed logins per address and checks where a password may travel. Anything a client sends that
cannot be decoded or is refused is answered (ServiceFault, or ErrorMessage and close for channel
level faults) and logged once per address and minute, never as a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from asyncua.common.connection import TransportLimits
from asyncua.common.utils import NotEnoughData, ServiceError
from asyncua.server.internal_session import SessionState
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.ua_binary import nodeid_from_binary, struct_from_binary
from asyncua.ua.uaerrors import UaStatusCodeError

from gateway.security.roles import Role, role_of
from gateway.subscriptions.encoding import (
    notification_message,
    publish_response,
    republish_response,
    status_change_notification,
)
from gateway.subscriptions.subscription import EncodedPublish, Subscription
from gateway.transport.channel_policy import DISCOVERY_REQUESTS, NONE_URI, check_identity_token
from gateway.transport.context import TransportContext
from gateway.transport.framing import FrameError, error_message
from gateway.transport.operation_limits import operations_over_limit
from gateway.transport.peers import peer_host, peer_text
from gateway.transport.refusal import Refused

log = logging.getLogger("gateway.transport")


def _request(name: str) -> ua.NodeId:
    return ua.NodeId(getattr(ua.ObjectIds, f"{name}Request_Encoding_DefaultBinary"))


_CREATE_SESSION = _request("CreateSession")
_ACTIVATE_SESSION = _request("ActivateSession")
_TRANSFER = _request("TransferSubscriptions")
_REPUBLISH = _request("Republish")
_SET_TRIGGERING = _request("SetTriggering")
_REGISTER_SERVER = frozenset({_request("RegisterServer"), _request("RegisterServer2")})
_SESSION_REQUESTS = frozenset({_CREATE_SESSION, _ACTIVATE_SESSION})

# Refusals that count as security rejections in ServerDiagnosticsSummary.
_SECURITY_STATUS = frozenset({
    ua.StatusCodes.BadSecurityPolicyRejected, ua.StatusCodes.BadSecurityModeRejected,
    ua.StatusCodes.BadSecurityChecksFailed, ua.StatusCodes.BadUserAccessDenied,
    ua.StatusCodes.BadIdentityTokenRejected, ua.StatusCodes.BadIdentityTokenInvalid,
    ua.StatusCodes.BadApplicationSignatureInvalid, ua.StatusCodes.BadCertificateUntrusted,
    ua.StatusCodes.BadCertificateInvalid, ua.StatusCodes.BadCertificateTimeInvalid,
    ua.StatusCodes.BadCertificateUriInvalid, ua.StatusCodes.BadCertificateRevoked,
    ua.StatusCodes.BadCertificateUseNotAllowed, ua.StatusCodes.BadCertificateIssuerRevoked,
    ua.StatusCodes.BadCertificateRevocationUnknown, ua.StatusCodes.BadCertificatePolicyCheckFailed,
})
# What hostile or broken bytes raise in asyncua's decoders.
_DECODING_ERRORS = (NotEnoughData, struct.error, UnicodeDecodeError, ValueError, IndexError, OverflowError,
                    ua.UaError)


def _service_name(typeid: ua.NodeId) -> str:
    name = ua.ObjectIdNames.get(typeid.Identifier, str(typeid)) if isinstance(typeid.Identifier, int) else str(typeid)
    return name.removesuffix("_Encoding_DefaultBinary")


def _status_name(code: int) -> str:
    return ua.StatusCode(code).name


class GatewayUaProcessor(UaProcessor):
    def __init__(self, internal_server: Any, transport: Any, limits: TransportLimits,
                 context: TransportContext) -> None:
        super().__init__(internal_server, transport, limits)
        self.context = context
        self.host = peer_host(self.name)
        self.peer = peer_text(self.name)

    # -- frames -------------------------------------------------------------------------------------------

    async def process(self, header: ua.Header, body: Any) -> bool:
        logged = False
        try:
            if header.MessageType == ua.MessageType.SecureOpen and not self._connection.is_open():
                self._check_channel_request(body)
            return await super().process(header, body)
        except FrameError as err:
            status, reason = err.status, err.reason
        except (ServiceError, UaStatusCodeError) as err:
            status, reason = err.code, getattr(err, "reason", None) or _status_name(err.code)
            # A refused certificate was logged by the PKI already, with the command that trusts it.
            logged = _status_name(status).startswith("BadCertificate")
        except Exception as exc:  # undecodable or unverifiable bytes of a channel: refused, never a traceback
            secure = header.MessageType != ua.MessageType.Hello
            status = ua.StatusCodes.BadSecurityChecksFailed if secure else ua.StatusCodes.BadTcpInternalError
            reason = f"{header.MessageType.decode(errors='replace')} not accepted: {exc!r}"[:200]
        if not logged:
            self.context.peer_log.warning(self.host, "channel", "refused a %s from %s: %s (%s)",
                                          header.MessageType.decode(errors="replace"), self.peer, reason,
                                          _status_name(status))
        if header.MessageType == ua.MessageType.SecureOpen:
            self.context.counters.request_rejected(status in _SECURITY_STATUS)
        self._transport.write(error_message(status, reason))
        return False

    def _check_channel_request(self, body: Any) -> None:
        """An OpenSecureChannel for a policy that is not offered, or from an untrusted certificate, is refused
        before anything else (asyncua left it unanswered until the client timed out)."""
        security_header = struct_from_binary(ua.AsymmetricAlgorithmHeader, body.copy())
        uri = security_header.SecurityPolicyURI
        why = self.context.offered.refuse_channel_request(uri)
        if why is not None:
            raise FrameError(ua.StatusCodes.BadSecurityPolicyRejected, why)
        validator = getattr(self.iserver, "client_certificates", None)
        # On a None channel a certificate means nothing (Part 4: the server ignores it), so it is not checked.
        if uri != NONE_URI and security_header.SenderCertificate and validator is not None:
            validator.check(leaf_certificate(security_header.SenderCertificate), None)

    def open_secure_channel(self, algohdr: Any, seqhdr: Any, body: Any) -> None:
        if not self._connection.is_open():
            request = struct_from_binary(ua.OpenSecureChannelRequest, body.copy())
            mode = request.Parameters.SecurityMode
            uri = algohdr.SecurityPolicyURI
            if not self.context.offered.offers(uri, mode) and uri != NONE_URI:
                raise FrameError(ua.StatusCodes.BadSecurityModeRejected,
                                 f"security mode {mode.name} is not offered with {uri.rsplit('#', 1)[-1]}")
        super().open_secure_channel(algohdr, seqhdr, body)

    # -- requests -----------------------------------------------------------------------------------------

    async def process_message(self, seqhdr: Any, body: Any) -> bool:
        try:
            typeid = nodeid_from_binary(body)
            requesthdr = struct_from_binary(ua.RequestHeader, body)
        except _DECODING_ERRORS as exc:
            raise FrameError(ua.StatusCodes.BadDecodingError, f"undecodable request header: {exc!r}") from None
        try:
            self._admit(typeid, body)
            served = await self._serve(typeid, requesthdr, seqhdr, body)
            return served if served is not None else await self._process_message(typeid, requesthdr, seqhdr, body)
        except (ServiceError, UaStatusCodeError) as err:
            self._refused(typeid, err.code, getattr(err, "reason", None))
            self._fault(requesthdr, seqhdr, err.code)
        except _DECODING_ERRORS as exc:
            self.context.counters.request_rejected(False)
            self.context.peer_log.warning(self.host, "decoding", "undecodable %s from %s: %r",
                                          _service_name(typeid), self.peer, exc)
            self._fault(requesthdr, seqhdr, ua.StatusCodes.BadDecodingError)
        except Exception:  # a bug: with its traceback, but once per address and minute whatever a client sends
            self.context.peer_log.warning(self.host, "internal", "internal error serving %s from %s",
                                          _service_name(typeid), self.peer, level=logging.ERROR, exc_info=True)
            self._fault(requesthdr, seqhdr, ua.StatusCodes.BadInternalError)
        return True

    def _fault(self, requesthdr: ua.RequestHeader, seqhdr: Any, status: int) -> None:
        response = ua.ServiceFault()
        response.ResponseHeader.ServiceResult = ua.StatusCode(status)
        self.send_response(requesthdr.RequestHandle, seqhdr, response)

    def _refused(self, typeid: ua.NodeId, status: int, reason: str | None) -> None:
        security = status in _SECURITY_STATUS
        if typeid in _SESSION_REQUESTS:
            self.context.counters.session_rejected(security)
            self.context.sessions_changed()
        else:
            self.context.counters.request_rejected(security)
        if typeid == _ACTIVATE_SESSION:
            return  # _activate_session logged it with the reason
        if security or reason:
            self.context.peer_log.warning(self.host, f"refused {status}", "refused %s from %s: %s (%s)",
                                          _service_name(typeid), self.peer, reason or "not permitted",
                                          _status_name(status))

    def _admit(self, typeid: ua.NodeId, body: Any) -> None:
        policy = self._connection.security_policy
        if typeid not in DISCOVERY_REQUESTS and not self.context.offered.session_allowed(policy.URI, policy.Mode):
            raise Refused(ua.StatusCodes.BadSecurityPolicyRejected,
                               f"only discovery is served on a channel with security {policy.URI.rsplit('#', 1)[-1]}/"
                               f"{policy.Mode.name}, which no endpoint offers")
        if typeid in _REGISTER_SERVER:
            session = self.session
            if session is None or not session.is_activated() or role_of(session.user) is not Role.admin:
                raise Refused(ua.StatusCodes.BadUserAccessDenied, "server registration needs an admin session")
        over = operations_over_limit(typeid, body, self.context.config.operation_limits)
        if over is not None:
            name, count = over
            raise Refused(ua.StatusCodes.BadTooManyOperations,
                               f"{count} operations in one request, {name} is "
                               f"{self.context.config.operation_limits[name]}")

    async def _serve(self, typeid: ua.NodeId, requesthdr: ua.RequestHeader, seqhdr: Any, body: Any) -> bool | None:
        if typeid == _CREATE_SESSION:
            return await self._create_session(typeid, requesthdr, seqhdr, body)
        if typeid == _ACTIVATE_SESSION:
            return await self._activate_session(requesthdr, seqhdr, body)
        if typeid == _TRANSFER:
            return await self._transfer_subscriptions(requesthdr, seqhdr, body)
        if typeid == _REPUBLISH:
            self._require_session()
            params = struct_from_binary(ua.RepublishParameters, body)
            message = self.session.republish_message(params)
            self._send_encoded(republish_response(self._response_header(requesthdr), message), seqhdr)
            return True
        if typeid == _SET_TRIGGERING:
            self._require_session()
            params = struct_from_binary(ua.SetTriggeringParameters, body)
            if not self.session.owns_subscription(params.SubscriptionId):
                raise ServiceError(ua.StatusCodes.BadSubscriptionIdInvalid)
            raise ServiceError(ua.StatusCodes.BadServiceUnsupported)
        return None

    # -- responses encoded by the gateway ------------------------------------------------------------------

    async def forward_publish_response(self, result: Any, requestdata: Any) -> None:
        if not isinstance(result, EncodedPublish):
            await super().forward_publish_response(result, requestdata)
            return
        body = publish_response(self._response_header(requestdata.requesthdr), result.subscription_id,
                                result.available, result.more_notifications, result.message,
                                requestdata.results or [])
        self._send_encoded(body, requestdata.seqhdr)

    def subscription_gone(self, sub: Subscription, status: int) -> None:
        """Part 4, 5.13.7: the session that lost a subscription hears why, in a Publish response it holds
        (none held: the session is gone or not publishing, and nobody is told)."""
        if not self._publish_requests:
            return
        requestdata = self._publish_requests.popleft()
        message = notification_message(sub.next_sequence_number, datetime.now(UTC),
                                       [status_change_notification(status)])
        self._send_encoded(publish_response(self._response_header(requestdata.requesthdr), sub.subscription_id, [],
                                            False, message, requestdata.results or []), requestdata.seqhdr)

    @staticmethod
    def _response_header(requesthdr: ua.RequestHeader) -> ua.ResponseHeader:
        return ua.ResponseHeader(RequestHandle=requesthdr.RequestHandle)

    def _send_encoded(self, body: bytes, seqhdr: Any) -> None:
        """`send_response` for a response body the gateway encoded itself."""
        data = self._connection.message_to_binary(body, message_type=ua.MessageType.SecureMessage,
                                                  request_id=seqhdr.RequestId)
        self._transport.write(data)

    def _require_session(self) -> None:
        if self.session is None:
            raise ServiceError(ua.StatusCodes.BadSessionIdInvalid)
        if not self.session.is_activated():
            raise ServiceError(ua.StatusCodes.BadSessionNotActivated)

    async def _create_session(self, typeid: ua.NodeId, requesthdr: ua.RequestHeader, seqhdr: Any, body: Any) -> bool:
        if len(self.iserver._external_sessions) >= self.context.config.max_sessions:
            raise Refused(ua.StatusCodes.BadTooManySessions,
                               f"{self.context.config.max_sessions} sessions exist, the most allowed")
        previous = self.session
        if previous is not None and not previous.is_activated():
            # asyncua would replace it and leave it registered, unactivated, for ever
            await previous.close_session(True)
        if self._session_watchdog_task is not None:
            self._session_watchdog_task.cancel()
        served = await self._process_message(typeid, requesthdr, seqhdr, body)
        if self.session is not None and self.session is not previous:
            self.session.channel_certificate = self._connection.security_policy.peer_certificate
            self.context.counters.cumulated_sessions += 1
            self.context.sessions_changed()
        return served

    async def _activate_session(self, requesthdr: ua.RequestHeader, seqhdr: Any, body: Any) -> bool:
        params = struct_from_binary(ua.ActivateSessionParameters, body)
        policy = self._connection.security_policy
        token = params.UserIdentityToken
        user_name = getattr(token, "UserName", None)
        who = f"user '{user_name}'" if user_name else "anonymous login"
        try:
            session = self.session
            takeover = session is None
            if session is None:
                # Part 4, 6.7: a session may be re-activated on a new channel, by the same client certificate
                session = self.iserver.lookup_external_session(requesthdr.AuthenticationToken)
                if session is None:
                    raise Refused(ua.StatusCodes.BadSessionIdInvalid, "no such session")
                if getattr(session, "channel_certificate", None) != policy.peer_certificate:
                    raise Refused(ua.StatusCodes.BadSecurityChecksFailed,
                                       "the session was created with another client certificate")
            challenge = (policy.host_certificate or b"") + (session.nonce or b"")
            try:
                policy.asymmetric_cryptography.verify(challenge, params.ClientSignature.Signature)
            except Exception:
                raise Refused(ua.StatusCodes.BadApplicationSignatureInvalid, "client signature invalid") from None
            check_identity_token(token, policy.Mode)
            if isinstance(token, ua.UserNameIdentityToken) and self.context.throttle.blocked(self.host):
                raise Refused(ua.StatusCodes.BadUserAccessDenied, "")  # blocked: counted, logged with the block
            result = await session.activate(params, policy.peer_certificate)
        except (ServiceError, UaStatusCodeError) as err:
            self._login_refused(who, token, err)
            raise
        if takeover:
            self.session = session
            self._closing = False
            if self._session_watchdog_task is None or self._session_watchdog_task.done():
                self._session_watchdog_task = asyncio.create_task(self._session_watchdog_loop())
            for sub in self.iserver.subscription_service.subscriptions.values():
                if sub.session_id == session.session_id:
                    sub.pub_result_callback = self.forward_publish_response
                    sub.pub_request_callback = self.get_publish_request
        response = ua.ActivateSessionResponse()
        response.Parameters = result
        self.send_response(requesthdr.RequestHandle, seqhdr, response)
        self.context.sessions_changed()
        return True

    def _login_refused(self, who: str, token: object, err: Exception) -> None:
        code = getattr(err, "code", ua.StatusCodes.BadUserAccessDenied)
        reason = getattr(err, "reason", None)
        if reason == "":
            return  # refused while this address is blocked
        if reason is None:
            reason = "wrong user name or password" if code == ua.StatusCodes.BadUserAccessDenied else _status_name(code)
        log.warning("%s refused from %s: %s (%s)", who, self.peer, reason, _status_name(code))
        if isinstance(token, ua.UserNameIdentityToken) and code == ua.StatusCodes.BadUserAccessDenied:
            throttle = self.context.throttle
            blocks, refused_before = throttle.failed(self.host)
            if blocks:
                earlier = f"; {refused_before} tries were refused during the previous block" if refused_before else ""
                log.warning("more than %d failed logins from %s within %g s: logins from this address are refused "
                            "for %g s%s", throttle.allowed, self.host, throttle.window_s, throttle.block_s, earlier)

    async def _transfer_subscriptions(self, requesthdr: ua.RequestHeader, seqhdr: Any, body: Any) -> bool:
        self._require_session()
        params = struct_from_binary(ua.TransferSubscriptionsParameters, body)
        subscriptions = self.iserver.subscription_service.subscriptions
        before = {sid: getattr(subscriptions.get(int(sid)), "pub_request_callback", None)
                  for sid in params.SubscriptionIds}
        results = await self.session.transfer_subscriptions(params, self.forward_publish_response)
        for sub_id, result in zip(params.SubscriptionIds, results, strict=True):
            sub = subscriptions.get(int(sub_id))
            if result.StatusCode.is_good() and sub is not None:
                sub.pub_request_callback = self.get_publish_request  # asyncua rebinds only the result callback
                previous = getattr(before[sub_id], "__self__", None)
                if isinstance(previous, GatewayUaProcessor) and previous is not self:
                    previous.subscription_gone(sub, ua.StatusCodes.GoodSubscriptionTransferred)
        response = ua.TransferSubscriptionsResponse()
        response.Parameters.Results = results
        self.send_response(requesthdr.RequestHandle, seqhdr, response)
        return True

    # -- connection loss ----------------------------------------------------------------------------------

    async def close(self) -> None:
        session = self.session
        open_before = session is not None and session.state is not SessionState.Closed
        await super().close()
        if open_before and session.state is SessionState.Closed:
            self.context.counters.session_aborts += 1
        self.context.sessions_changed()


def leaf_certificate(sender_certificate: bytes) -> bytes:
    """The first DER certificate of a SenderCertificate, which may carry the issuer chain after it."""
    data = bytes(sender_certificate)
    if len(data) < 4 or data[0] != 0x30:
        return data
    first = data[1]
    if first < 0x80:
        return data[:2 + first]
    octets = first & 0x7F
    if not 1 <= octets <= 4 or len(data) < 2 + octets:
        return data
    length = int.from_bytes(data[2:2 + octets], "big")
    return data[:2 + octets + length]
