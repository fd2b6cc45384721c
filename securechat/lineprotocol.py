# -*- test-case-name: tests.test_lineprotocol -*-
"""The one line-based protocol class that the server and the client extend.

It owns framing and the error discipline: every line is parsed with the pure
codec, checked against the peer's verb table and dispatched to a
``handle_<verb>`` method. What becomes of a line that cannot be accepted is
each side's own choice, made in one place: the server answers with an
``ERROR`` (and closes after an over-long line); the client never answers a
server, it reports the line to its user and reads on.
"""

from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from securechat.constants import (
    CLOSE_GRACE_SECONDS,
    LONG_LINE_HEAD_BYTES,
    MAX_LINE_UNAUTHENTICATED,
    TLS_EXPORTER_BYTES,
    TLS_EXPORTER_LABEL,
)
from securechat.wire import (
    NO_REQUEST_ID,
    Code,
    Verb,
    WireError,
    b64encode,
    encode_frame,
    parse_line,
)


class LineProtocol(Protocol):
    """Frames, dispatch and error replies over any stream transport.

    @ivar peer_verbs: the verbs the peer may send, by name.
    @ivar clock: an L{IReactorTime}; the reactor unless a test gives a Clock.
    @ivar max_line_length: the longest line accepted from the peer, without
        its LF; raised once the peer has authenticated.
    """

    delimiter = b"\n"
    peer_verbs: dict[str, Verb] = {}
    log = Logger()

    def __init__(self, clock, max_line_length: int = MAX_LINE_UNAUTHENTICATED):
        self.clock = clock
        self.max_line_length = max_line_length
        self.last_heard = clock.seconds()
        self._buffer = b""
        self._discarding = False
        self._closing = False
        self._abort_call = None

    def send_without_delay(self) -> None:
        """Turn Nagle's algorithm off on this connection's socket.

        A chat line is small and must leave at once: with Nagle on, a line
        written while the previous one is unacknowledged waits for the peer's
        delayed ACK, up to 40 ms on Linux (the daemon's whole p99 at 1,000
        msg/s). Writes are already one TLS record per connection per reactor
        turn, so turning it off sends no more tiny packets. TLS and PROXY
        wrappers pass the call through to the socket; a transport without one
        (a test's) has nothing to turn off. A socket the peer already reset
        may refuse the option (macOS and the BSDs say EINVAL): nothing is
        lost, its connectionLost follows.
        """
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is None:
            return
        try:
            set_no_delay(True)
        except OSError:
            pass

    # -- receiving -----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        """Split into lines; a line over the limit (or that many bytes with no
        LF yet) goes to L{line_too_long} with its start, and the rest of it is
        skipped as it arrives, so it is never held in memory."""
        if self._closing:
            return
        if self._discarding:
            end = data.find(self.delimiter)
            if end < 0:
                return
            self._discarding = False
            data = data[end + 1:]
        lines = (self._buffer + data).split(self.delimiter)
        self._buffer = lines.pop()
        for line in lines:
            if self._closing:
                break
            if len(line) > self.max_line_length:
                self.line_too_long(line[:LONG_LINE_HEAD_BYTES])
            else:
                self.lineReceived(line)
        if self._closing:
            # Nothing more is read on a connection being closed: hold nothing.
            self._buffer = b""
            return
        if len(self._buffer) > self.max_line_length:
            head, self._buffer, self._discarding = self._buffer[:LONG_LINE_HEAD_BYTES], b"", True
            self.line_too_long(head)

    def lineReceived(self, line: bytes) -> None:  # noqa: N802
        self.last_heard = self.clock.seconds()
        request_id = NO_REQUEST_ID
        try:
            frame = parse_line(line)
            request_id = frame.request_id
            verb = self.peer_verbs.get(frame.verb)
            if verb is None:
                raise WireError(
                    Code.UNKNOWN_COMMAND, f"unknown command {frame.verb}", request_id
                )
            self.authorize(frame.verb, request_id)
            result = self.dispatch(frame.verb, request_id, verb.bind(frame))
        except WireError as error:
            if error.request_id == NO_REQUEST_ID:
                error = error.with_request_id(request_id)
            self.peer_sent_bad_line(error, line)
        except Exception:
            self.handling_failed(request_id, None)
        else:
            if isinstance(result, defer.Deferred):
                result.addErrback(self._handler_failed, request_id, line)

    def dispatch(self, verb: str, request_id: str, args: dict):
        """Call ``handle_<verb>(request_id, **args)``; may return a Deferred."""
        return getattr(self, "handle_" + verb.lower())(request_id, **args)

    def authorize(self, verb: str, request_id: str) -> None:
        """Raise a WireError if the peer may not use C{verb} yet; anything goes by default."""

    def _handler_failed(self, failure, request_id: str, line: bytes) -> None:
        if failure.check(WireError):
            self.peer_sent_bad_line(failure.value.with_request_id(request_id), line)
        else:
            self.handling_failed(request_id, failure)

    # The three hooks below answer the peer, as the server does; the client
    # overrides them, since it never answers a server with an error.

    def peer_sent_bad_line(self, error: WireError, line: bytes) -> None:
        """A line, or a request, that could not be accepted, with the reason."""
        self.send_error(error)

    def handling_failed(self, request_id: str, failure) -> None:
        """Our own code failed on a good line (C{failure}, or the current exception)."""
        self.log.failure("handling request {request_id}", failure, request_id=request_id)
        self.send_error(WireError(Code.INTERNAL, "internal error; try again", request_id))

    def line_too_long(self, head: bytes) -> None:
        """A line over L{max_line_length}; C{head} is its start. The peer is
        told, and since the rest of its line cannot be trusted, closed."""
        self.send_error(
            WireError(Code.TOO_LONG, f"line longer than {self.max_line_length} bytes; closing")
        )
        self.close_connection()

    # -- sending -------------------------------------------------------------

    def send_frame(self, verb: str, request_id: str, *args: str) -> None:
        """Write one line; silently dropped once we have decided to close."""
        if not self._closing:
            self.send_line(encode_frame(verb, request_id, *args))

    def send_line(self, line: bytes) -> None:
        self.transport.write(line + self.delimiter)

    def send_error(self, error: WireError) -> None:
        """An ERROR line; one that says when to try again follows a RETRY line."""
        if error.retry_after is not None:
            self.send_frame("RETRY", error.request_id, str(max(1, round(error.retry_after * 1000))))
        self.send_frame("ERROR", error.request_id, error.code, error.text)

    def reply(self, request_id: str, lines) -> None:
        """Send (verb, args) lines, all under C{request_id}."""
        for verb, args in lines:
            self.send_frame(verb, request_id, *args)

    # -- liveness ------------------------------------------------------------

    def handle_ping(self, request_id: str, payload: bytes | None) -> None:
        self.send_frame("PONG", request_id, *([b64encode(payload)] if payload else []))

    def handle_pong(self, request_id: str, payload: bytes | None) -> None:
        """Nothing to do: receiving any line already refreshed L{last_heard}."""

    # -- closing -------------------------------------------------------------

    def close_connection(self) -> None:
        """Flush what we wrote, then close; abort a peer that will not read it."""
        if self._closing:
            return
        self._closing = True
        self.transport.loseConnection()
        self._abort_call = self.clock.callLater(CLOSE_GRACE_SECONDS, self.transport.abortConnection)

    def connectionLost(self, reason) -> None:
        self._closing = True
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None


def tls_exporter(transport) -> bytes:
    """The RFC 5705 value both ends of this TLS session derive, and nobody else.

    Signing it into a login ties the signature to this one session: relayed
    into another TLS connection, it no longer verifies.
    """
    return transport.getHandle().export_keying_material(TLS_EXPORTER_LABEL, TLS_EXPORTER_BYTES)
