# -*- test-case-name: tests.test_server_protocol -*-
"""The server's side of a connection: greeting, login, and one thin handler
per verb. State lives in the service; this class only translates between
lines and service calls."""

import collections
import itertools
import os
import re
from functools import partial

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from securechat.constants import (
    AUTH_NONCE_BYTES,
    MAX_LINE_AUTHENTICATED,
    PROTOCOL_NAME,
    PROTOCOL_VERSION,
)
from securechat.crypto.envelope import MAX_MESSAGE_BYTES
from securechat.crypto.identity import verify_login
from securechat.lineprotocol import LineProtocol, tls_exporter
from securechat.names import fold
from securechat.ratelimit import TokenBucket
from securechat.server.limits import AddressCounter, AddressRate, ConnectionLimits
from securechat.server.metrics import ServerMetrics
from securechat.server.store import StorageFull
from securechat.wire import CLIENT_VERBS, NO_REQUEST_ID, Code, WireError, b64encode, parse_line
from securechat.wire.grammar import MAX_SYNC_ROOMS
from securechat.wire.limits import AnnouncedLimits

GREETING_TEXT = "securechat ready; the protocol is described in docs/protocol.md"

# Verbs an anonymous connection may use.
PRE_LOGIN_VERBS = frozenset({"PING", "PONG", "REGISTER", "LOGIN"})


_SEQ = re.compile(r"(?:0|[1-9][0-9]{0,18})\Z")
_MAX_SEQ = 2**63 - 1


def parse_positions(text: str | None) -> dict[str, int]:
    """SYNC's ``#room=seq #room=seq`` list, by folded room name."""
    positions = {}
    items = (text or "").split()
    if len(items) > MAX_SYNC_ROOMS:
        raise WireError(Code.BAD_ARGUMENTS, f"SYNC takes at most {MAX_SYNC_ROOMS} rooms")
    for item in items:
        room, _, seq = item.partition("=")
        if not room.startswith("#") or not _SEQ.match(seq) or int(seq) > _MAX_SEQ:
            raise WireError(Code.BAD_ARGUMENTS, "SYNC takes '#room=seq' items separated by spaces")
        positions[fold(room)] = int(seq)
    return positions


def _request_id_of(line: bytes) -> str:
    try:
        return parse_line(line).request_id
    except WireError as error:
        return error.request_id


@implementer(IPushProducer)
class ServerProtocol(LineProtocol):
    """One client connection, seen from the daemon.

    It is also the producer of its own output: when the peer stops reading,
    lines queue here, counted, and a peer that lets them pile up past the
    limit, or stays stalled too long, is aborted (loseConnection would wait
    forever on a peer that does not read).
    """

    peer_verbs = CLIENT_VERBS
    log = Logger()

    def __init__(self, factory: "ServerFactory", host: str | None):
        super().__init__(factory.clock)
        self.factory = factory
        self.service = factory.service
        self.limits = factory.limits
        self.host = host
        self.user = None
        self.logging_in = False
        self.nonce = os.urandom(AUTH_NONCE_BYTES)
        self.bucket = TokenBucket(self.limits.rate_per_second, self.limits.rate_burst,
                                  self.clock.seconds())
        self.strikes = 0
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        self._paused_call = None
        self._login_call = None
        self._idle_call = None
        self._ping_sent = None
        self._ping_ids = itertools.count(1)

    def connectionMade(self) -> None:  # noqa: N802
        self.send_without_delay()
        self.peer = self.transport.getPeer()
        self.factory.metrics.connections.inc()
        if self.host is not None:
            # At debug: the login and the close each say who it was, at info;
            # in a reconnect storm a third line per client is a tenth of the CPU.
            self.log.debug("connection from {peer.host}:{peer.port}", peer=self.peer)
        self.transport.registerProducer(self, True)
        self._login_call = self.clock.callLater(self.limits.login_timeout, self._login_timed_out)
        self._idle_call = self.clock.callLater(self.limits.idle_ping, self._check_idle)
        self.send_frame(
            "HELLO",
            NO_REQUEST_ID,
            PROTOCOL_NAME,
            str(PROTOCOL_VERSION),
            self.factory.server_name,
            b64encode(self.nonce),
            GREETING_TEXT,
        )

    def connectionLost(self, reason) -> None:  # noqa: N802
        super().connectionLost(reason)
        self.factory.metrics.connections.dec()
        for call in (self._paused_call, self._login_call, self._idle_call):
            if call is not None and call.active():
                call.cancel()
        self._queue.clear()
        if self.host is not None:
            self.factory.addresses.release(self.host)
        if self.user is not None:
            self.service.detach(self.user, self)
        self.log.info(
            "connection from {peer.host}:{peer.port}{nick} closed: {reason}",
            peer=self.peer,
            nick=f" ({self.user.nick})" if self.user else "",
            reason=reason.getErrorMessage(),
        )

    def authorize(self, verb: str, request_id: str) -> None:
        if self.user is None and verb not in PRE_LOGIN_VERBS:
            raise WireError(Code.AUTH_REQUIRED, "log in or register first", request_id)
        if verb in ("REGISTER", "LOGIN") and (self.user is not None or self.logging_in):
            raise WireError(Code.ALREADY_AUTHENTICATED, "already logged in, or logging in",
                            request_id)

    # -- output and backpressure ------------------------------------------------

    def deliver(self, line: bytes) -> None:
        """Every line we send goes here, to leave with the others of its reactor turn."""
        self.service.output.hold(self, line)

    def write_lines(self, lines: list[bytes]) -> None:
        """Written in one go, or queued while the peer is slow."""
        if self._closing:
            return
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        self.factory.metrics.traffic.sent += len(data)
        if self._paused_call is None:
            self.transport.write(data)
            return
        self._queue.append(data)
        self._queued_bytes += len(data)
        if self._queued_bytes > self.limits.max_send_queue:
            self._abort(f"{self._queued_bytes} bytes waiting for a peer that does not read")

    def close_connection(self) -> None:
        """Lines held for us in a batch still go out before the close."""
        self.service.output.release(self)
        super().close_connection()

    def send_line(self, line: bytes) -> None:
        self.deliver(line + self.delimiter)

    def pauseProducing(self) -> None:  # noqa: N802
        if self._paused_call is None and not self._closing:
            self._paused_call = self.clock.callLater(
                self.limits.max_paused, self._abort,
                f"the peer read nothing for {self.limits.max_paused:g} s",
            )

    def resumeProducing(self) -> None:  # noqa: N802
        if self._paused_call is None:
            return
        self._paused_call.cancel()
        self._paused_call = None
        queued, self._queue, self._queued_bytes = self._queue, collections.deque(), 0
        if queued and not self._closing:
            self.transport.writeSequence(list(queued))

    def stopProducing(self) -> None:  # noqa: N802
        self._queue.clear()

    def _abort(self, why: str) -> None:
        if self._closing:
            return
        self.log.warn("aborting {peer.host}:{peer.port}: {why}", peer=self.peer, why=why)
        self._closing = True
        self._paused_call = None
        self._queue.clear()
        self.transport.abortConnection()

    # -- flood control and liveness -----------------------------------------------

    def drop(self, code: Code, text: str) -> None:
        self.send_error(WireError(code, text))
        self.close_connection()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.factory.metrics.traffic.received += len(data)
        if self.host is None and (self._closing or not self._admit_proxied()):
            return
        super().dataReceived(data)

    def _admit_proxied(self) -> bool:
        """Behind a proxy the client's address is known once its PROXY header
        was read, which is before any of its TLS data: the per-address cap
        and the logs use it from here on."""
        self.peer = self.transport.getPeer()
        host = getattr(self.peer, "host", "unknown")
        if not self.factory.addresses.admit(host):
            self.log.info("refusing {host} (via the proxy): {limit} already open", host=host,
                          limit=self.limits.per_ip)
            self.drop(Code.TOO_MANY_CONNECTIONS,
                      f"{self.limits.per_ip} connections from your address are open already")
            return False
        self.host = host
        self.log.debug("connection from {peer.host}:{peer.port} (via the proxy)", peer=self.peer)
        return True

    def send_error(self, error: WireError) -> None:
        """Every refusal is counted by code and logged with who it was for."""
        self.factory.metrics.rejections.labels(str(error.code)).inc()
        self.log.info("refused {peer.host}:{peer.port}{nick}: {code}", peer=self.peer,
                      nick=f" ({self.user.nick})" if self.user else "", code=str(error.code))
        super().send_error(error)

    def handling_failed(self, request_id: str, failure) -> None:
        """A full disk is the one failure of ours a client is told about by name:
        nothing was stored, and the same request works again once there is room."""
        if failure is not None and failure.check(StorageFull):
            self.log.warn("refusing a write: the database's disk is full ({error})",
                          error=failure.getErrorMessage())
            self.send_error(WireError(Code.STORAGE_FULL, "the server's disk is full; nothing "
                                      "was stored; try again later", request_id))
            return
        super().handling_failed(request_id, failure)

    def lineReceived(self, line: bytes) -> None:  # noqa: N802
        now = self.clock.seconds()
        if not self.bucket.take(now):
            self.strikes += 1
            self.send_error(WireError(
                Code.RATE_LIMITED,
                f"over {self.limits.rate_per_second:g} lines per second; slow down",
                _request_id_of(line), retry_after=self.bucket.delay(now),
            ))
            if self.strikes > self.limits.strikes:
                self.log.info("closing {peer.host}:{peer.port}: flooding", peer=self.peer)
                self.close_connection()
            return
        self.strikes = 0
        super().lineReceived(line)

    def _login_timed_out(self) -> None:
        self._login_call = None
        if self.user is None:
            self.send_error(WireError(Code.LOGIN_TIMEOUT, "no login in time; closing"))
            self.close_connection()

    def _check_idle(self) -> None:
        """PING a peer that went quiet; drop one that does not answer in time."""
        now = self.clock.seconds()
        if self._ping_sent is not None and self.last_heard < self._ping_sent:
            if now - self._ping_sent >= self.limits.ping_timeout:
                self.send_error(WireError(Code.PING_TIMEOUT, "no answer to PING; closing"))
                self._idle_call = None
                self.close_connection()
                return
            wait = self._ping_sent + self.limits.ping_timeout - now
        elif now - self.last_heard >= self.limits.idle_ping:
            self._ping_sent = now
            self.send_frame("PING", f"s{next(self._ping_ids)}")
            wait = self.limits.ping_timeout
        else:
            self._ping_sent = None
            wait = self.last_heard + self.limits.idle_ping - now
        self._idle_call = self.clock.callLater(wait, self._check_idle)

    def _answer(self, request_id: str, result):
        """Send a service result now, or when its Deferred fires."""
        if isinstance(result, list):
            self.reply(request_id, result)
            return None
        return result.addCallback(partial(self.reply, request_id))

    # -- login -----------------------------------------------------------------

    def _verify_login(self, identity, nick: str, signature: bytes) -> bool:
        return verify_login(identity, signature, self.factory.server_name, nick, self.nonce,
                            self.factory.channel_binding(self.transport))

    def _logged_in(self, request_id: str, user) -> None:
        self.logging_in = False
        if self._closing:
            return
        self.user = user
        self.max_line_length = MAX_LINE_AUTHENTICATED
        if self._login_call is not None and self._login_call.active():
            self._login_call.cancel()
        self.log.info("{peer.host}:{peer.port} logged in as {nick}", peer=self.peer,
                      nick=user.nick)
        # The limits are announced so that a client keeps to them: it paces
        # itself and refuses a message too long before sending anything.
        storage = self.service.settings.storage
        announced = AnnouncedLimits(self.limits.rate_per_second, self.limits.rate_burst,
                                    MAX_LINE_AUTHENTICATED, MAX_MESSAGE_BYTES,
                                    storage.bytes_per_second, storage.burst_bytes,
                                    storage.bytes_per_day)
        self.reply(request_id, [("LIMITS", (announced.encode(),)),
                                ("OK", (user.nick, f"{self.limits.rate_per_second:g}",
                                        str(self.limits.rate_burst)))])
        self.service.attach(user, self)

    def handle_register(self, request_id, nick, sign_key, enc_key, enc_signature,
                        login_signature, token):
        def verify(identity, claimed):
            return self._verify_login(identity, claimed, login_signature)

        def failed(failure):
            self.logging_in = False
            return failure

        def registered(user):
            # Only open registrations count: a token is the operator's own say-so.
            if not token:
                self.factory.registrations.spend(self.host or "unknown", self.clock.seconds())
            self._logged_in(request_id, user)

        wait = self.factory.registrations.wait(self.host or "unknown", self.clock.seconds())
        if wait > 0:
            raise WireError(Code.RATE_LIMITED,
                            f"your address created {self.limits.registrations_per_hour} "
                            f"accounts within the hour; try again later", retry_after=wait)
        self.logging_in = True
        d = self.service.register(nick, sign_key, enc_key, enc_signature, verify, token)
        return d.addCallbacks(registered, failed)

    def handle_login(self, request_id, nick, login_signature):
        user = self.service.accounts.check_login(
            nick, login_signature, self.factory.server_name, self.nonce,
            self.factory.channel_binding(self.transport),
        )
        self._logged_in(request_id, user)

    # -- rooms -----------------------------------------------------------------

    def handle_log(self, request_id, room, from_index):
        return self._answer(request_id, self.service.read_log(self.user, room, from_index))

    def handle_join(self, request_id, room, index, entry, signature, password):
        return self._answer(request_id, self.service.join(self.user, room, index, entry,
                                                          signature, password))

    def handle_append(self, request_id, room, index, entry, signature):
        return self._answer(request_id, self.service.append(self.user, room, index, entry,
                                                            signature))

    def handle_topic(self, request_id, room, topic):
        return self._answer(request_id, self.service.set_topic(self.user, room, topic))

    def handle_set(self, request_id, room, setting, value):
        return self._answer(request_id, self.service.configure(self.user, room, setting, value))

    def handle_list(self, request_id, after):
        return self._answer(request_id, self.service.list_rooms(self.user, after))

    def handle_who(self, request_id, room, after):
        return self._answer(request_id, self.service.who(self.user, room, after))

    def handle_userkeys(self, request_id, nick):
        return self._answer(request_id, self.service.user_keys(nick))

    def handle_delete(self, request_id, room):
        return self._answer(request_id, self.service.delete(self.user, room))

    # -- messages and keys -------------------------------------------------------

    def handle_msg(self, request_id, room, epoch, seq, message_id, token, signature):
        return self.service.send(self.user, room, epoch, seq, message_id, token, signature,
                                 partial(self.reply, request_id), self)

    def handle_history(self, request_id, room, direction, server_seq, limit):
        return self._answer(
            request_id, self.service.history(self.user, room, direction, server_seq, limit)
        )

    def handle_sync(self, request_id, positions):
        return self._answer(request_id, self.service.sync(self.user, parse_positions(positions)))

    def handle_epochs(self, request_id, room, from_epoch):
        return self._answer(request_id, self.service.epochs(self.user, room, from_epoch))

    def handle_rotate(self, request_id, room, index, entry, signature, own_wrap):
        return self._answer(request_id, self.service.rotate(self.user, room, index, entry,
                                                            signature, own_wrap))

    def handle_wraps(self, request_id, room, epoch, wraps):
        return self._answer(request_id, self.service.hand_over(self.user, room, epoch, wraps))

    def handle_handover(self, request_id, room, epoch, wraps):
        return self._answer(request_id, self.service.share_key(self.user, room, epoch, wraps))

    def handle_keyreq(self, request_id, room):
        return self._answer(request_id, self.service.request_key(self.user, room))

    def handle_withhold(self, request_id, room, epoch, nick, code, text):
        return self._answer(
            request_id, self.service.withhold(self.user, room, epoch, nick, code, text)
        )


class ServerFactory(Factory):
    """Builds L{ServerProtocol}s sharing the daemon's service, clock and name.

    @ivar channel_binding: how a connection's TLS session value is read; the
        RFC 5705 exporter in production, a stand-in in tests without TLS.
    """

    noisy = False
    log = Logger()

    def __init__(self, service, server_name: str, clock, channel_binding=tls_exporter,
                 limits: ConnectionLimits = ConnectionLimits(),
                 metrics: ServerMetrics | None = None, proxied: bool = False):
        self.service = service
        self.server_name = server_name
        self.clock = clock
        self.channel_binding = channel_binding
        self.limits = limits
        self.metrics = metrics or ServerMetrics()
        self.addresses = AddressCounter(limits.per_ip)
        self.registrations = AddressRate(limits.registrations_per_hour, 3600)
        self.proxied = proxied

    def buildProtocol(self, addr):  # noqa: N802
        """A protocol for the connection, or None to refuse it at once."""
        if not self.service.ready.called:
            return None
        if self.proxied:
            # Every connection comes from the proxy: the client's own address
            # is counted once its PROXY header is read (ServerProtocol).
            return ServerProtocol(self, None)
        host = getattr(addr, "host", "unknown")
        if not self.addresses.admit(host):
            self.log.info("refusing a connection from {host}: {limit} already open",
                          host=host, limit=self.limits.per_ip)
            return None
        return ServerProtocol(self, host)
