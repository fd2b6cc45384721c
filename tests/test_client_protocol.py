"""Tests for securechat.client.protocol: matching replies to requests."""

from twisted.internet import task
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from securechat.client.protocol import ClientProtocol
from securechat.wire import Code, WireError


class RecordingSession:
    def __init__(self):
        self.events, self.errors, self.faults, self.lost = [], [], [], []
        self.unreadable = []

    def unreadable_line(self, unreadable):
        self.unreadable.append(unreadable)

    def connection_made(self, protocol):
        pass

    def connection_lost(self, protocol, reason):
        self.lost.append(reason)

    def server_event(self, verb, args, pushed=True):
        self.events.append((verb, args))

    def server_error(self, code, text):
        self.errors.append(code)

    def server_fault(self, text):
        self.faults.append(text)


class ClientProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.session = RecordingSession()
        self.protocol = ClientProtocol(self.session, task.Clock())
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def test_nagle_is_off(self):
        """The client turns Nagle's algorithm off, so a message typed right
        after another is not held back for the server's delayed ACK."""
        transport = StringTransport()
        transport.setTcpNoDelay = lambda enabled: calls.append(enabled)
        calls = []
        ClientProtocol(RecordingSession(), task.Clock()).makeConnection(transport)
        self.assertEqual(calls, [True])

    def test_reply_collects_data_lines(self):
        """Data lines under a request id are collected and the request fires on OK."""
        d = self.protocol.request("LIST")
        self.assertEqual(self.transport.value(), b"LIST 1\n")
        self.protocol.dataReceived(b"ROOMINFO 1 #lab 2 :topic\nOK 1 1\n")
        reply = self.successResultOf(d)
        self.assertEqual([verb for verb, _ in reply.lines], ["ROOMINFO"])
        self.assertEqual(reply.final[0], "OK")
        self.assertEqual(self.session.events[0][0], "ROOMINFO")

    def test_unprocessed_lines_stay_with_the_request(self):
        """With process=False, data lines go only to the request, not to the session."""
        d = self.protocol.request("HISTORY", "#lab", "before", "9", "5", process=False)
        self.protocol.dataReceived(b"ROOMINFO 1 #lab 2 :x\nOK 1 0\n")
        self.assertEqual(len(self.successResultOf(d).lines), 1)
        self.assertEqual(self.session.events, [])

    def test_error_fails_only_its_request(self):
        """An ERROR fails the request with its id, as a WireError with the stable code."""
        first, second = self.protocol.request("JOIN", "#a"), self.protocol.request("JOIN", "#b")
        self.protocol.dataReceived(b"ERROR 2 BANNED :no\n")
        failure = self.failureResultOf(second, WireError)
        self.assertEqual(failure.value.code, Code.BANNED)
        self.assertNoResult(first)

    def test_pushed_lines_and_unmatched_errors(self):
        """Lines with id '*' are events; an ERROR for no request is reported to the session."""
        self.protocol.dataReceived(b"TOPIC * #lab alice :hi\nERROR * TOO_LONG :bye\n")
        self.assertEqual([v for v, _ in self.session.events], ["TOPIC"])
        self.assertEqual(self.session.errors, ["TOO_LONG"])

    def test_garbage_from_server_is_reported_not_answered(self):
        """A malformed line from the server is reported, and nothing is sent back."""
        self.transport.clear()
        self.protocol.dataReceived(b"\xff\xfe\n")
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(len(self.session.unreadable), 1)

    def test_overlong_line_is_skipped_and_the_next_read(self):
        """A line over the limit, arriving in pieces, is reported once by its start
        and skipped; the line after it is read; nothing is sent back."""
        self.transport.clear()
        line = b"MESSAGE * #lab 41 alice 2 7 " + b"A" * 70_000 + b"\nTOPIC * #lab bob :next\n"
        for start in range(0, len(line), 4096):
            self.protocol.dataReceived(line[start:start + 4096])
        [unreadable] = self.session.unreadable
        self.assertEqual((unreadable.verb, unreadable.fields["server_seq"]), ("MESSAGE", 41))
        self.assertIn("longer than 65536 bytes", unreadable.reason)
        self.assertEqual([v for v, _ in self.session.events], ["TOPIC"])
        self.assertEqual(self.transport.value(), b"")

    def test_endless_line_holds_no_memory(self):
        """A server that sends bytes and never a LF costs the client no more than one line."""
        for _ in range(300):
            self.protocol.dataReceived(b"x" * 4096)
            self.assertLessEqual(len(self.protocol._buffer), 65536)
        self.assertEqual(len(self.session.unreadable), 1)
        self.protocol.dataReceived(b"\nPING s1\n")
        self.assertEqual(self.transport.value(), b"PONG s1\n")

    def test_unreadable_final_reply_fails_its_request(self):
        """An OK the client cannot read fails its request (it never hangs), and the
        others go on."""
        first, second = self.protocol.request("WHO", "#a"), self.protocol.request("WHO", "#b")
        self.protocol.dataReceived(b"OK 1 a b c d e\nOK 2\n")
        self.assertEqual(self.failureResultOf(first, WireError).value.code, "PROTOCOL")
        self.successResultOf(second)

    def test_unreadable_data_line_stays_with_its_request(self):
        """A data line that cannot be read is kept with its request (for paging)."""
        d = self.protocol.request("HISTORY", "#lab", "after", "0", "5", process=False)
        self.protocol.dataReceived(b"MESSAGE 1 #lab 7 alice 1 1 !! x y 1\nOK 1 1\n")
        reply = self.successResultOf(d)
        self.assertEqual(reply.unreadable[0].fields["server_seq"], 7)

    def test_retry_says_when(self):
        """A RETRY before an ERROR gives the error its wait."""
        d = self.protocol.request("MSG", "#lab")
        self.protocol.dataReceived(b"RETRY 1 2500\nERROR 1 RATE_LIMITED :slow down\n")
        failure = self.failureResultOf(d, WireError)
        self.assertEqual((failure.value.code, failure.value.retry_after), (Code.RATE_LIMITED, 2.5))

    def test_server_ping_answered(self):
        """A server PING gets a PONG with the same id."""
        self.protocol.dataReceived(b"PING s1\n")
        self.assertEqual(self.transport.value(), b"PONG s1\n")

    def test_disconnect_fails_pending(self):
        """Requests still open when the connection drops fail with ConnectionLost."""
        d = self.protocol.request("WHO", "#lab")
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, ConnectionLost)
        self.assertEqual(len(self.session.lost), 1)

    def test_session_hears_of_the_loss_before_requests_fail(self):
        """When a pending request fails, the session already knows the connection is gone."""
        d = self.protocol.request("WHO", "#lab")
        seen = []
        d.addErrback(lambda f: seen.append(len(self.session.lost)))
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(seen, [1])

    def test_request_after_loss_fails_at_once(self):
        """A request made on a closed connection fails instead of waiting forever."""
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(self.protocol.request("WHO", "#lab"), ConnectionLost)
