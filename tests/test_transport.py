"""The server transport that sends at once when the socket is free."""

import errno

from twisted.internet import defer, main, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from securechat.server.transport import ImmediateWriteEndpoint, ImmediateWriteServer


class FakeSocket:
    """Takes at most C{room} bytes per send, or raises C{error}."""

    def __init__(self, room=1 << 20, error=None):
        self.room = room
        self.error = error
        self.sent = []

    def setblocking(self, flag):
        pass

    def fileno(self):
        return 99

    def send(self, data):
        if self.error is not None:
            raise OSError(self.error, "fake")
        taken = bytes(data[: self.room])
        self.room -= len(taken)
        self.sent.append(taken)
        return len(taken)


def connection(sock):
    reactor = MemoryReactor()
    server = ImmediateWriteServer(sock, protocol.Protocol(), ("127.0.0.1", 1), None, 1, reactor)
    return server, reactor


class ImmediateWriteServerTests(SynchronousTestCase):
    def test_free_socket_sends_at_once(self):
        """A write to a connection with nothing queued is sent in the call, without the reactor."""
        sock = FakeSocket()
        server, reactor = connection(sock)
        server.write(b"line\n")
        self.assertEqual((sock.sent, reactor.getWriters()), ([b"line\n"], []))

    def test_what_the_kernel_refuses_waits_for_the_reactor(self):
        """The part the kernel did not take is queued, and sent when the socket is writable."""
        sock = FakeSocket(room=3)
        server, reactor = connection(sock)
        server.write(b"abcdef")
        self.assertEqual(reactor.getWriters(), [server])
        sock.room = 10
        server.doWrite()
        self.assertEqual((b"".join(sock.sent), reactor.getWriters()), (b"abcdef", []))

    def test_writes_queue_behind_queued_data(self):
        """While anything is queued, a new write waits behind it, so the order holds."""
        sock = FakeSocket(error=errno.EAGAIN)
        server, reactor = connection(sock)
        server.write(b"first ")
        sock.error = None
        server.write(b"second")
        self.assertEqual(sock.sent, [])
        server.doWrite()
        self.assertEqual(sock.sent, [b"first second"])

    def test_reset_peer_is_found_by_the_reactor(self):
        """A write to a reset peer raises nothing; the reactor's write attempt reports it lost."""
        sock = FakeSocket(error=errno.ECONNRESET)
        server, reactor = connection(sock)
        server.write(b"line\n")
        self.assertEqual(reactor.getWriters(), [server])
        self.assertEqual(server.doWrite(), main.CONNECTION_LOST)

    def test_closed_connection_writes_nothing(self):
        """After the connection is gone, a write is dropped as Twisted's transport drops it."""
        sock = FakeSocket()
        server, _ = connection(sock)
        server.connected = False
        server.write(b"line\n")
        self.assertEqual(sock.sent, [])

    def test_other_ports_are_left_alone(self):
        """A reactor whose port is not the POSIX TCP port keeps its own transport."""
        reactor = MemoryReactor()
        endpoint = ImmediateWriteEndpoint(reactor, 0, interface="127.0.0.1")
        port = self.successResultOf(endpoint.listen(protocol.Factory.forProtocol(protocol.Protocol)))
        self.assertNotIn("transport", vars(port))
        self.assertEqual(len(reactor.tcpServers), 1)


class Recorder(protocol.Protocol):
    def __init__(self):
        self.made = defer.Deferred()
        self.received = b""
        self.lost = defer.Deferred()

    def connectionMade(self):  # noqa: N802
        self.made.callback(self)

    def dataReceived(self, data):  # noqa: N802
        self.received += data

    def connectionLost(self, reason):  # noqa: N802
        self.lost.callback(None)


class LoopbackTests(TestCase):
    @defer.inlineCallbacks
    def test_accepted_connections_write_at_once(self):
        """Over real loopback TCP, the accepted connection is an ImmediateWriteServer, and
        everything it writes (more than the kernel takes at once) arrives in order."""
        server = Recorder()
        port = yield ImmediateWriteEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(lambda: server))
        self.addCleanup(port.stopListening)
        client = Recorder()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
                              client)
        yield server.made
        self.assertIsInstance(server.transport, ImmediateWriteServer)
        payload = bytes(range(256)) * 40_000
        server.transport.write(payload[:1000])
        server.transport.write(payload[1000:])
        server.transport.loseConnection()
        yield client.lost
        yield server.lost
        self.assertEqual(client.received, payload)

