# -*- test-case-name: tests.test_server_protocol -*-
"""The server's side of a connection: greeting, liveness, and dispatch of
client requests. State lives elsewhere; this class only translates."""

from twisted.internet.protocol import Factory
from twisted.logger import Logger

from securechat.constants import PROTOCOL_NAME, PROTOCOL_VERSION
from securechat.lineprotocol import LineProtocol
from securechat.wire import CLIENT_VERBS, NO_REQUEST_ID

GREETING_TEXT = "securechat ready; the protocol is described in docs/protocol.md"


class ServerProtocol(LineProtocol):
    """One client connection, seen from the daemon."""

    peer_verbs = CLIENT_VERBS
    log = Logger()

    def __init__(self, factory: "ServerFactory"):
        super().__init__(factory.clock)
        self.factory = factory

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()
        self.log.info("connection from {peer.host}:{peer.port}", peer=self.peer)
        self.send_frame(
            "HELLO",
            NO_REQUEST_ID,
            PROTOCOL_NAME,
            str(PROTOCOL_VERSION),
            self.factory.server_name,
            GREETING_TEXT,
        )

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self.log.info(
            "connection from {peer.host}:{peer.port} closed: {reason}",
            peer=self.peer,
            reason=reason.getErrorMessage(),
        )


class ServerFactory(Factory):
    """Builds L{ServerProtocol}s that share the daemon's clock and name."""

    noisy = False

    def __init__(self, server_name: str, clock):
        self.server_name = server_name
        self.clock = clock

    def buildProtocol(self, addr) -> ServerProtocol:  # noqa: N802
        return ServerProtocol(self)
