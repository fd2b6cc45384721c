"""Tests for securechat.server.protocol over StringTransport."""

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from securechat.constants import (
    MAX_LINE_AUTHENTICATED,
    PROTOCOL_NAME,
    PROTOCOL_VERSION,
    RATE_BURST_LINES,
    RATE_LINES_PER_SECOND,
)
from securechat.server.passwords import new_registration_token, token_digest
from securechat.server.protocol import ServerFactory
from securechat.wire import SERVER_VERBS, b64encode, parse_line
from tests.identities import identity
from tests.serverharness import Server, make_service


class ServerProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.factory = ServerFactory(make_service(self.clock), "chat.example", self.clock)
        self.protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
        self.protocol.makeConnection(self.transport)

    def lines(self):
        """What the server wrote, once its reactor turn has ended."""
        self.clock.advance(0)
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
        """Connects (at debug) and disconnects are logged with the peer's address."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.protocol.connectionLost(Failure(ConnectionDone("bye")))
        protocol = self.factory.buildProtocol(None)
        protocol.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.7", 4242)))
        messages = [formatEvent(e) for e in events]
        self.assertIn("connection from 127.0.0.1:5555 closed: Connection was closed cleanly: bye.", messages)
        self.assertIn("connection from 10.0.0.7:4242", messages)


class SocketTransport(StringTransport):
    """A StringTransport with the one socket option the server sets."""

    no_delay = False

    def setTcpNoDelay(self, enabled):  # noqa: N802
        self.no_delay = enabled


class NagleTests(SynchronousTestCase):
    def test_nagle_is_off_through_wrappers(self):
        """A connection reached through a wrapper (as TLS and PROXY are) turns
        Nagle's algorithm off on the socket underneath, so lines never wait
        for a delayed ACK."""
        clock = task.Clock()
        factory = ServerFactory(make_service(clock), "chat.example", clock)
        wrapper = ProtocolWrapper(WrappingFactory(factory), factory.buildProtocol(None))
        socket = SocketTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
        wrapper.makeConnection(socket)
        self.assertTrue(socket.no_delay)

    def test_reset_socket_refusing_the_option_is_served_as_usual(self):
        """A socket that refuses TCP_NODELAY (the peer reset it already) raises
        nothing: the greeting still goes out."""
        clock = task.Clock()
        factory = ServerFactory(make_service(clock), "chat.example", clock)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))

        def refuse(enabled):
            raise OSError(22, "Invalid argument")

        transport.setTcpNoDelay = refuse
        factory.buildProtocol(None).makeConnection(transport)
        clock.advance(0)
        self.assertTrue(transport.value().startswith(b"HELLO "))


class LoginTests(SynchronousTestCase):
    def setUp(self):
        self.server = Server()

    def test_register_logs_in_and_raises_line_limit(self):
        """Registration answers with the nick and the rate limits, and lifts the line limit."""
        client = self.server.connect()
        [ok] = client.register("alice")
        self.assertEqual(ok.args, ("alice", str(RATE_LINES_PER_SECOND), str(RATE_BURST_LINES)))
        self.assertEqual(client.protocol.max_line_length, MAX_LINE_AUTHENTICATED)

    def test_greeting_nonce_is_fresh(self):
        """Every connection gets its own 32-byte login nonce."""
        nonces = {self.server.connect().nonce for _ in range(3)}
        self.assertEqual(len(nonces), 3)
        self.assertEqual({len(n) for n in nonces}, {32})

    def test_login_signature_from_another_session_refused(self):
        """A login signature made on one connection is refused on another."""
        self.server.user("alice")
        first, second = self.server.connect(), self.server.connect()
        replayed = first.login_signature("alice", "alice")
        [error] = second.request("LOGIN", "alice", replayed)
        self.assertEqual(error.args[0], "AUTH_FAILED")
        [ok] = first.without_limits(first.request("LOGIN", "alice", replayed))
        self.assertEqual(ok.verb, "OK")

    def test_login_with_another_key_refused(self):
        """Bob's key cannot log in as alice."""
        self.server.user("alice")
        client = self.server.connect()
        [error] = client.request("LOGIN", "alice", client.login_signature("bob", "alice"))
        self.assertEqual(error.args[0], "AUTH_FAILED")

    def test_register_refusals(self):
        """Taken nicks (any case), reused keys and signatures by another key are refused."""
        self.server.user("alice")
        self.assertEqual(self.server.connect().register("carol", "ALICE")[0].args[0], "NICK_TAKEN")
        self.assertEqual(self.server.connect().register("alice", "alice2")[0].args[0], "KEY_IN_USE")
        client = self.server.connect()
        public = identity("bob").public
        [error] = client.request(
            "REGISTER", "bob", b64encode(public.sign_der), b64encode(public.enc_der),
            b64encode(public.enc_signature), client.login_signature("carol", "bob"),
        )
        self.assertEqual(error.args[0], "AUTH_FAILED")
        [error] = client.request("REGISTER", "bob", "AAAA", "AAAA", "AAAA", "AAAA")
        self.assertEqual(error.args[0], "BAD_KEY")

    def test_token_registration(self):
        """Under the token policy a token is needed and works once."""
        server = Server(registration="token")
        token = new_registration_token()
        server.service.store.add_registration_token(token_digest(token), 0.0)
        self.assertEqual(server.connect().register("bob")[0].args[0], "BAD_REGISTRATION_TOKEN")
        self.assertEqual(server.connect().register("bob", token=token)[0].verb, "OK")
        self.assertEqual(server.connect().register("carol", token=token)[0].args[0],
                         "BAD_REGISTRATION_TOKEN")
        self.assertIsNone(server.service.accounts.find("carol"))

    def test_closed_registration(self):
        """A closed server registers nobody."""
        server = Server(registration="closed")
        self.assertEqual(server.connect().register("bob")[0].args[0], "REGISTRATION_CLOSED")

    def test_no_second_login(self):
        """A logged-in connection cannot log in or register again."""
        client = self.server.user("alice")
        [error] = client.login("alice")
        self.assertEqual(error.args[0], "ALREADY_AUTHENTICATED")

    def test_pre_login_line_limit(self):
        """Before login a line over 4 KiB closes the connection after TOO_LONG."""
        client = self.server.connect()
        client.protocol.dataReceived(b"PING 1 " + b"A" * 5000 + b"\n")
        self.assertEqual(client.frames()[0].args[0], "TOO_LONG")
        self.assertTrue(client.transport.disconnecting)

    def test_no_login_while_one_is_pending(self):
        """A second REGISTER or LOGIN while one is being committed is refused, and a
        connection lost meanwhile is never attached to fan-out."""
        commit = defer.Deferred()
        self.server.service.store.add_user = lambda *args: commit
        client = self.server.connect()
        self.assertEqual(client.register("alice"), [])
        [error] = client.login("alice")
        self.assertEqual(error.args[0], "ALREADY_AUTHENTICATED")
        client.protocol.connectionLost(Failure(ConnectionDone()))
        commit.callback(77)
        self.assertFalse(self.server.service.fanout.online(77))
