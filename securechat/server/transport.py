# -*- test-case-name: tests.test_transport -*-
"""A TCP server transport that sends at once when it can.

Twisted's transport buffers every write, asks the reactor to watch the
socket for writability (an C{epoll_ctl}), sends on the next reactor turn,
then stops watching (another C{epoll_ctl}). A chat daemon's writes are small
and almost always fit the kernel's send buffer, so that round costs more
than the C{send()} itself, once per delivery. Here a write to a transport
with nothing queued goes straight to C{send()}; only what the kernel does
not take is buffered, and Twisted's own machinery takes over from there.
"""

from errno import EAGAIN, ENOBUFS, EWOULDBLOCK

from twisted.internet import tcp
from twisted.internet.endpoints import TCP4ServerEndpoint

# The kernel has no room now; anything else (a reset peer) is left for
# Twisted's own write path to find and report as a lost connection.
_TRY_LATER = frozenset((EAGAIN, EWOULDBLOCK, ENOBUFS))


class ImmediateWriteServer(tcp.Server):
    """A server connection whose writes skip the reactor when the socket is free."""

    def write(self, data: bytes) -> None:
        if (self.dataBuffer or self._tempDataLen or not self.connected
                or self._writeDisconnected or not isinstance(data, bytes)):
            super().write(data)
            return
        try:
            sent = self.socket.send(data)
        except OSError as error:
            if error.errno not in _TRY_LATER:
                # Buffered, so that the reactor's next write attempt meets the
                # error and closes the connection the usual way.
                super().write(data)
                return
            sent = 0
        if sent < len(data):
            super().write(data[sent:])


class ImmediateWriteEndpoint(TCP4ServerEndpoint):
    """A TCP endpoint whose connections are L{ImmediateWriteServer}s.

    The port is still made by the reactor's C{listenTCP}; only the class of
    the connections it accepts changes, and only on the POSIX reactors' port,
    whose C{transport} attribute names that class. Any other port is left as
    it is, with Twisted's own transport.
    """

    def listen(self, protocolFactory):  # noqa: N802
        return super().listen(protocolFactory).addCallback(_immediate_writes)


def _immediate_writes(port):
    if isinstance(port, tcp.Port):
        port.transport = ImmediateWriteServer
    return port
