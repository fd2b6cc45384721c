"""Tests for the daemon's abuse limits: flood control, connections per IP,
login and liveness timeouts, and slow readers. All on task.Clock."""

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from securechat.server.limits import AddressCounter, ConnectionLimits
from tests.serverharness import Server

LIMITS = ConnectionLimits(rate_per_second=10, rate_burst=5, strikes=3, per_ip=2,
                          login_timeout=30, idle_ping=120, ping_timeout=20,
                          max_send_queue=10_000, max_paused=15)


class LimitsTests(SynchronousTestCase):
    def setUp(self):
        self.server = Server()
        self.server.factory.limits = LIMITS
        self.server.factory.addresses = AddressCounter(LIMITS.per_ip)

    def test_flood_gets_errors_then_disconnect(self):
        """Past the burst each line gets RATE_LIMITED under its own id, after a RETRY
        saying when a line goes through again; repeated excess closes."""
        client = self.server.user("alice")
        client.protocol.bucket._tokens = 0
        retry, error = client.request("PING")
        self.assertEqual((retry.verb, retry.request_id, retry.args), ("RETRY", "r2", ("100",)))
        self.assertEqual((error.args[0], error.request_id), ("RATE_LIMITED", "r2"))
        self.assertFalse(client.transport.disconnecting)
        for _ in range(LIMITS.strikes):
            client.request("PING")
        self.assertTrue(client.transport.disconnecting)

    def test_paced_client_is_never_limited(self):
        """A client that keeps to the announced rate is never refused."""
        client = self.server.user("alice")
        for _ in range(50):
            self.server.clock.advance(1 / LIMITS.rate_per_second)
            self.assertEqual(client.request("PING")[0].verb, "PONG")

    def test_connections_per_ip(self):
        """The connection over the per-IP limit is refused; closing one makes room."""
        address = IPv4Address("TCP", "192.0.2.7", 1000)
        first = self.server.factory.buildProtocol(address)
        self.assertIsNotNone(self.server.factory.buildProtocol(address))
        self.assertIsNone(self.server.factory.buildProtocol(address))
        self.assertIsNotNone(self.server.factory.buildProtocol(IPv4Address("TCP", "192.0.2.8", 1)))
        first.makeConnection(StringTransport(peerAddress=address))
        first.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(self.server.factory.buildProtocol(address))

    def test_connections_per_client_address_behind_a_proxy(self):
        """Behind a proxy every connection is accepted at first, and the cap counts
        the client's address from its PROXY header: the one over it is told
        TOO_MANY_CONNECTIONS, while other clients behind the same proxy get in."""
        self.server.factory.proxied = True
        proxy = IPv4Address("TCP", "10.0.0.2", 40000)

        def via_proxy(client_host):
            transport = StringTransport(peerAddress=proxy)
            protocol = self.server.factory.buildProtocol(proxy)
            protocol.makeConnection(transport)
            self.server.clock.advance(0)
            transport.clear()
            # The PROXY header has been read by the time any TLS data arrives.
            transport.peerAddr = IPv4Address("TCP", client_host, 5000)
            protocol.dataReceived(b"PING p1\n")
            self.server.clock.advance(0)
            return protocol, transport.value()

        for _ in range(LIMITS.per_ip):
            protocol, output = via_proxy("198.51.100.9")
            self.assertTrue(output.startswith(b"PONG p1"))
        self.assertEqual(protocol.peer.host, "198.51.100.9")
        refused, output = via_proxy("198.51.100.9")
        self.assertTrue(output.startswith(b"ERROR * TOO_MANY_CONNECTIONS"), output)
        self.assertTrue(refused.transport.disconnecting)
        self.assertTrue(via_proxy("198.51.100.10")[1].startswith(b"PONG p1"))

    def test_login_timeout(self):
        """A connection that never logs in is told and closed after the timeout."""
        client = self.server.connect()
        self.server.clock.advance(LIMITS.login_timeout)
        self.assertEqual(client.frames()[-1].args[0], "LOGIN_TIMEOUT")
        self.assertTrue(client.transport.disconnecting)

    def test_logged_in_connection_outlives_login_timeout(self):
        """Logging in cancels the login timeout."""
        client = self.server.user("alice")
        self.server.clock.advance(LIMITS.login_timeout)
        self.assertFalse(client.transport.disconnecting)

    def test_idle_ping_and_timeout(self):
        """A silent client is PINGed; one that answers stays, one that does not is dropped."""
        client = self.server.user("alice")
        self.server.clock.advance(LIMITS.idle_ping)
        [ping] = [f for f in client.frames() if f.verb == "PING"]
        client.protocol.dataReceived(f"PONG {ping.request_id}\n".encode())
        self.server.clock.advance(LIMITS.ping_timeout)
        self.assertFalse(client.transport.disconnecting)
        self.server.clock.advance(LIMITS.idle_ping)
        self.assertEqual([f.verb for f in client.frames()], ["PING"])
        self.server.clock.advance(LIMITS.ping_timeout)
        self.assertEqual(client.frames()[-1].args[0], "PING_TIMEOUT")
        self.assertTrue(client.transport.disconnecting)

    def test_slow_reader_over_queue_is_aborted(self):
        """A paused reader's output queues; past the byte limit it is aborted, not closed politely."""
        client = self.server.user("alice")
        client.frames()
        client.protocol.pauseProducing()
        client.protocol.deliver(b"x" * 6000 + b"\n")
        self.server.clock.advance(0)
        self.assertEqual(client.transport.value(), b"")
        self.assertFalse(client.transport.disconnected)
        client.protocol.deliver(b"y" * 6000 + b"\n")
        self.server.clock.advance(0)
        self.assertTrue(client.transport.disconnected)

    def test_stalled_reader_is_aborted(self):
        """A reader paused longer than the limit is aborted even under the byte limit."""
        client = self.server.user("alice")
        client.protocol.pauseProducing()
        client.protocol.deliver(b"small\n")
        self.server.clock.advance(LIMITS.max_paused)
        self.assertTrue(client.transport.disconnected)

    def test_resumed_reader_gets_queue_in_order(self):
        """When the reader catches up, queued lines are written, in order."""
        client = self.server.user("alice")
        client.frames()
        client.protocol.pauseProducing()
        for n in range(3):
            client.protocol.deliver(b"line %d\n" % n)
        self.server.clock.advance(0)
        client.protocol.resumeProducing()
        self.assertEqual(client.transport.value(), b"line 0\nline 1\nline 2\n")
        self.server.clock.advance(LIMITS.max_paused)
        self.assertFalse(client.transport.disconnected)


class AddressCounterTests(SynchronousTestCase):
    def test_counts_and_releases(self):
        """Admissions per host stop at the limit and resume after releases."""
        counter = AddressCounter(2)
        self.assertTrue(counter.admit("a"))
        self.assertTrue(counter.admit("a"))
        self.assertFalse(counter.admit("a"))
        counter.release("a")
        self.assertTrue(counter.admit("a"))
        self.assertEqual(len(counter), 2)
