"""Tests for securechat.server.protocol over StringTransport."""

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from securechat.constants import PROTOCOL_NAME, PROTOCOL_VERSION
from securechat.server.protocol import ServerFactory
from securechat.wire import SERVER_VERBS, parse_line
from tests.serverharness import make_service


class ServerProtocolTests(SynchronousTestCase):
    def setUp(self):
        clock = task.Clock()
        self.factory = ServerFactory(make_service(clock), "chat.example", clock)
        self.protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
        self.protocol.makeConnection(self.transport)

    def lines(self):
        return [parse_line(line) for line in self.transport.value().split(b"\n")[:-1]]

    def test_greeting(self):
        """On connect the server names the protocol, its version and itself."""
        [hello] = self.lines()
        args = SERVER_VERBS["HELLO"].bind(hello)
        self.assertEqual(
            (args["protocol"], args["version"], args["server"]),
            (PROTOCOL_NAME, PROTOCOL_VERSION, "chat.example"),
        )

    def test_ping(self):
        """A client's PING gets a PONG after the greeting."""
        self.protocol.dataReceived(b"PING abc\n")
        self.assertEqual([f.verb for f in self.lines()], ["HELLO", "PONG"])

    def test_server_verbs_are_not_client_verbs(self):
        """A client cannot send the server's own verbs."""
        self.protocol.dataReceived(b"HELLO 1 x 1 y :z\n")
        error = self.lines()[-1]
        self.assertEqual((error.verb, error.args[0]), ("ERROR", "UNKNOWN_COMMAND"))

    def test_connection_logging(self):
        """Connects and disconnects are logged with the peer's address."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.protocol.connectionLost(Failure(ConnectionDone("bye")))
        protocol = self.factory.buildProtocol(None)
        protocol.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.7", 4242)))
        messages = [formatEvent(e) for e in events]
        self.assertIn("connection from 127.0.0.1:5555 closed: Connection was closed cleanly: bye.", messages)
        self.assertIn("connection from 10.0.0.7:4242", messages)
