"""Tests for securechat.lineprotocol: framing, dispatch and the error discipline."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from securechat.constants import (
    CLOSE_GRACE_SECONDS,
    MAX_LINE_AUTHENTICATED,
    MAX_LINE_UNAUTHENTICATED,
)
from securechat.lineprotocol import LineProtocol
from securechat.wire import Code, Param, Verb, WireError, parse_line
from securechat.wire.grammar import PING, PONG, verbs


class EchoProtocol(LineProtocol):
    """A minimal peer: PING/PONG plus verbs whose handlers fail in each way."""

    peer_verbs = verbs(
        PING,
        PONG,
        Verb("ECHO", (Param("text", "text", 100_000),)),
        Verb("LATER", ()),
        Verb("CRASH", ()),
    )

    def __init__(self, clock):
        super().__init__(clock)
        self.later = defer.Deferred()

    def handle_echo(self, request_id, text):
        self.send_frame("OK", request_id, text)

    def handle_later(self, request_id):
        return self.later

    def handle_crash(self, request_id):
        raise RuntimeError("boom")


def replies(transport):
    return [parse_line(line) for line in transport.value().split(b"\n")[:-1]]


class LineProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.protocol = EchoProtocol(self.clock)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, data):
        self.protocol.dataReceived(data)
        lines = replies(self.transport)
        self.transport.clear()
        return lines

    def assertError(self, frame, code, request_id):
        self.assertEqual((frame.verb, frame.request_id, frame.args[0]), ("ERROR", request_id, code))

    def test_ping_pong_with_payload(self):
        """PING is answered by PONG with the same id and payload."""
        [reply] = self.send(b"PING 9 dGltZQ\n")
        self.assertEqual((reply.verb, reply.request_id, reply.args), ("PONG", "9", ("dGltZQ",)))

    def test_malformed_lines_keep_connection(self):
        """Each kind of bad line gets its ERROR and the next good line still works."""
        bad = [
            (b"\xff\xfe\n", Code.BAD_SYNTAX, "*"),
            (b"ECHO 1 :\xff\n", Code.BAD_ENCODING, "1"),
            (b"PING 2 a\x00\n", Code.BAD_SYNTAX, "2"),
            (b"NOSUCH 3\n", Code.UNKNOWN_COMMAND, "3"),
            (b"PING 4 a b\n", Code.BAD_ARGUMENTS, "4"),
            (b"PING 5 a*b\n", Code.BAD_BASE64, "5"),
            (b"\n", Code.BAD_SYNTAX, "*"),
        ]
        for line, code, request_id in bad:
            [reply] = self.send(line)
            self.assertError(reply, code, request_id)
            self.assertFalse(self.transport.disconnecting)
        [reply] = self.send(b"PING 6\r\n")
        self.assertEqual((reply.verb, reply.request_id), ("PONG", "6"))

    def test_handler_exception_is_internal_error(self):
        """A bug in a handler becomes ERROR INTERNAL, logged, and the connection survives."""
        [reply] = self.send(b"CRASH 1\n")
        self.assertError(reply, Code.INTERNAL, "1")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(self.transport.disconnecting)

    def test_deferred_wire_error(self):
        """A handler's Deferred failing with WireError is answered under the request's id."""
        self.send(b"LATER 77\n")
        self.protocol.later.errback(WireError(Code.BAD_ARGUMENTS, "late"))
        [reply] = replies(self.transport)
        self.assertError(reply, Code.BAD_ARGUMENTS, "77")

    def test_deferred_crash(self):
        """A handler's Deferred failing otherwise is ERROR INTERNAL."""
        self.send(b"LATER 78\n")
        self.protocol.later.errback(RuntimeError("late boom"))
        [reply] = replies(self.transport)
        self.assertError(reply, Code.INTERNAL, "78")
        self.flushLoggedErrors(RuntimeError)

    def test_oversize_line_closes_after_error(self):
        """A line over the limit gets ERROR TOO_LONG, then the connection closes."""
        [reply] = self.send(b"ECHO 1 :" + b"x" * MAX_LINE_UNAUTHENTICATED + b"\nPING 2\n")
        self.assertError(reply, Code.TOO_LONG, "*")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.send(b"PING 3\n"), [])

    def test_unterminated_oversize_data(self):
        """Endless data without a newline is cut off at the limit, not buffered."""
        self.send(b"x" * (MAX_LINE_UNAUTHENTICATED // 2))
        [reply] = self.send(b"x" * MAX_LINE_UNAUTHENTICATED)
        self.assertError(reply, Code.TOO_LONG, "*")
        self.assertEqual(self.protocol._buffer, b"")

    def test_close_aborts_peer_that_does_not_read(self):
        """After closing, a peer that never drains our output is aborted after the grace period."""
        self.send(b"x" * (MAX_LINE_UNAUTHENTICATED + 1))
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(CLOSE_GRACE_SECONDS)
        self.assertTrue(self.transport.disconnected)

    def test_connection_lost_cancels_abort(self):
        """A connection that closes in time leaves no abort timer behind."""
        self.send(b"x" * (MAX_LINE_UNAUTHENTICATED + 1))
        self.protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_limit_can_be_raised(self):
        """Raising max_line_length (after login) admits longer lines, up to the new limit."""
        self.protocol.max_line_length = MAX_LINE_AUTHENTICATED
        [reply] = self.send(b"ECHO 1 :" + b"y" * 10_000 + b"\n")
        self.assertEqual(reply.args, ("y" * 10_000,))

    def test_last_heard(self):
        """Every received line, good or bad, refreshes last_heard."""
        self.clock.advance(10)
        self.send(b"garbage\n")
        self.assertEqual(self.protocol.last_heard, 10)


class FragmentationTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.binary(max_size=600),
                st.sampled_from([b"PING 1\n", b"\n", b"\r\n", b"ECHO 2 :hi\n", b"x" * 3000]),
            ),
            max_size=12,
        ),
        st.lists(st.integers(min_value=1, max_value=5000), max_size=20),
    )
    def test_arbitrary_fragments(self, pieces, cuts):
        """Arbitrary bytes in arbitrary fragments never raise, never over-buffer, and only ever
        get PONG, OK or ERROR lines back."""
        clock = task.Clock()
        protocol = EchoProtocol(clock)
        transport = StringTransport()
        protocol.makeConnection(transport)
        data = b"".join(pieces)
        position = 0
        for cut in cuts + [len(data)]:
            protocol.dataReceived(data[position : position + cut])
            position += cut
            self.assertLessEqual(len(protocol._buffer), protocol.max_line_length)
        for frame in replies(transport):
            self.assertIn(frame.verb, {"PONG", "OK", "ERROR"})

    def test_same_replies_whole_or_bytewise(self):
        """A transcript gives identical replies sent whole or one byte at a time."""
        transcript = b"PING 1\nbad\nECHO 2 :x y\r\n\xff\nPING 3 aGk\n"
        outputs = []
        for chunks in ([transcript], [transcript[i : i + 1] for i in range(len(transcript))]):
            protocol = EchoProtocol(task.Clock())
            transport = StringTransport()
            protocol.makeConnection(transport)
            for chunk in chunks:
                protocol.dataReceived(chunk)
            outputs.append(transport.value())
        self.assertEqual(outputs[0], outputs[1])
        self.assertEqual(outputs[0].count(b"\n"), 5)
