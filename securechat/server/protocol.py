# -*- test-case-name: tests.test_server_protocol -*-
"""The server's side of a connection: greeting, login, and one thin handler
per verb. State lives in the service; this class only translates between
lines and service calls."""

import os
from functools import partial

from twisted.internet.protocol import Factory
from twisted.logger import Logger

from securechat.constants import (
    AUTH_NONCE_BYTES,
    MAX_LINE_AUTHENTICATED,
    PROTOCOL_NAME,
    PROTOCOL_VERSION,
    RATE_BURST_LINES,
    RATE_LINES_PER_SECOND,
)
from securechat.crypto.identity import verify_login
from securechat.lineprotocol import LineProtocol, tls_exporter
from securechat.names import fold
from securechat.wire import CLIENT_VERBS, NO_REQUEST_ID, Code, WireError, b64encode

GREETING_TEXT = "securechat ready; the protocol is described in docs/protocol.md"

# Verbs an anonymous connection may use.
PRE_LOGIN_VERBS = frozenset({"PING", "PONG", "REGISTER", "LOGIN"})


def parse_positions(text: str | None) -> dict[str, int]:
    """SYNC's ``#room=seq #room=seq`` list, by folded room name."""
    positions = {}
    for item in (text or "").split():
        room, _, seq = item.partition("=")
        if not room.startswith("#") or not seq.isdigit():
            raise WireError(Code.BAD_ARGUMENTS, "SYNC takes '#room=seq' items separated by spaces")
        positions[fold(room)] = int(seq)
    return positions


class ServerProtocol(LineProtocol):
    """One client connection, seen from the daemon."""

    peer_verbs = CLIENT_VERBS
    log = Logger()

    def __init__(self, factory: "ServerFactory"):
        super().__init__(factory.clock)
        self.factory = factory
        self.service = factory.service
        self.user = None
        self.nonce = os.urandom(AUTH_NONCE_BYTES)

    def connectionMade(self) -> None:  # noqa: N802
        self.peer = self.transport.getPeer()
        self.log.info("connection from {peer.host}:{peer.port}", peer=self.peer)
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
        if self.user is not None and verb in ("REGISTER", "LOGIN"):
            raise WireError(Code.ALREADY_AUTHENTICATED, f"already logged in as {self.user.nick}",
                            request_id)

    def deliver(self, line: bytes) -> None:
        """Fan-out's way in: one complete, already encoded line."""
        if not self._closing:
            self.transport.write(line)

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
        self.user = user
        self.max_line_length = MAX_LINE_AUTHENTICATED
        self.log.info("{peer.host}:{peer.port} logged in as {nick}", peer=self.peer,
                      nick=user.nick)
        self.reply(request_id, [("OK", (user.nick, str(RATE_LINES_PER_SECOND),
                                        str(RATE_BURST_LINES)))])
        self.service.attach(user, self)

    def handle_register(self, request_id, nick, sign_key, enc_key, enc_signature,
                        login_signature, token):
        def verify(identity, claimed):
            return self._verify_login(identity, claimed, login_signature)

        d = self.service.register(nick, sign_key, enc_key, enc_signature, verify, token)
        return d.addCallback(partial(self._logged_in, request_id))

    def handle_login(self, request_id, nick, login_signature):
        user = self.service.accounts.check_login(
            nick, login_signature, self.factory.server_name, self.nonce,
            self.factory.channel_binding(self.transport),
        )
        self._logged_in(request_id, user)

    # -- rooms -----------------------------------------------------------------

    def handle_join(self, request_id, room, password):
        return self._answer(request_id, self.service.join(self.user, room, password))

    def handle_part(self, request_id, room, reason):
        return self._answer(request_id, self.service.part(self.user, room, reason))

    def handle_topic(self, request_id, room, topic):
        return self._answer(request_id, self.service.set_topic(self.user, room, topic))

    def handle_invite(self, request_id, room, nick, signature):
        return self._answer(request_id, self.service.invite(self.user, room, nick, signature))

    def handle_kick(self, request_id, room, nick, reason):
        return self._answer(request_id, self.service.kick(self.user, room, nick, reason))

    def handle_ban(self, request_id, room, nick, reason):
        return self._answer(request_id, self.service.kick(self.user, room, nick, reason, ban=True))

    def handle_unban(self, request_id, room, nick):
        return self._answer(request_id, self.service.unban(self.user, room, nick))

    def handle_role(self, request_id, room, nick, role):
        return self._answer(request_id, self.service.set_role(self.user, room, nick, role))

    def handle_set(self, request_id, room, setting, value):
        return self._answer(request_id, self.service.configure(self.user, room, setting, value))

    def handle_list(self, request_id):
        return self._answer(request_id, self.service.list_rooms(self.user))

    def handle_who(self, request_id, room):
        return self._answer(request_id, self.service.who(self.user, room))

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

    def handle_rotate(self, request_id, room, epoch, record, signature, own_wrap):
        return self._answer(
            request_id, self.service.rotate(self.user, room, epoch, record, signature, own_wrap)
        )

    def handle_wrap(self, request_id, room, epoch, nick, wrap):
        return self._answer(request_id, self.service.wrap(self.user, room, epoch, nick, wrap))

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

    def __init__(self, service, server_name: str, clock, channel_binding=tls_exporter):
        self.service = service
        self.server_name = server_name
        self.clock = clock
        self.channel_binding = channel_binding

    def buildProtocol(self, addr):  # noqa: N802
        if not self.service.ready.called:
            return None
        return ServerProtocol(self)
