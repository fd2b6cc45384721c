# -*- test-case-name: tests.test_client_protocol -*-
"""The client's side of a connection: the same framing and codec as the
server, plus matching replies to requests.

Every request gets a Deferred that fires with the data lines answering it
(in order) once its OK arrives, or fails with the server's WireError. Lines
the server pushes, and data lines of requests marked C{process}, go to the
session as events; the session never parses a line itself.

The server is not trusted to send well-formed lines: one this client cannot
read is reported to the session with whatever can still be read of it (its
verb and leading arguments) and passed over. The server is never answered
with an error, and nothing it sends closes the connection.
"""

import itertools
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger

from securechat.constants import MAX_LINE_AUTHENTICATED
from securechat.lineprotocol import LineProtocol
from securechat.wire import NO_REQUEST_ID, SERVER_VERBS, Code, WireError

# Final replies: they complete a request.
_FINAL = {"OK", "DUPLICATE"}

# The code of the error a request fails with when the server's reply to it
# cannot be read; not one a server sends.
PROTOCOL_ERROR = "PROTOCOL"


@dataclass
class Unreadable:
    """A line from the server that could not be read: its verb (if any), the
    leading arguments that were valid, and why it was refused."""

    verb: str
    fields: dict
    reason: str


@dataclass
class Reply:
    """What answered a request: its data lines, the final line, and the data
    lines that could not be read (so that paging moves past them)."""

    lines: list[tuple[str, dict]] = field(default_factory=list)
    final: tuple[str, dict] | None = None
    unreadable: list[Unreadable] = field(default_factory=list)
    retry_after: float | None = None


@dataclass
class _Pending:
    deferred: defer.Deferred
    process: bool
    reply: Reply = field(default_factory=Reply)


def salvage(line: bytes, reason: str) -> tuple[str, Unreadable]:
    """The request id and what can still be read of a line that failed."""
    words = line.decode("utf-8", "replace").split(" ")
    verb = words[0] if words[0] in SERVER_VERBS else ""
    request_id = words[1] if len(words) > 1 and words[1] else NO_REQUEST_ID
    fields = SERVER_VERBS[verb].leading_values(words[2:]) if verb else {}
    return request_id, Unreadable(verb, fields, reason)


class ClientProtocol(LineProtocol):
    peer_verbs = SERVER_VERBS
    log = Logger()

    def __init__(self, session, clock):
        # Every line the server may send is within the authenticated limit
        # (tests.test_wire checks each verb's worst case), so that is the
        # limit from the first byte: a login's reply may come with more.
        super().__init__(clock, MAX_LINE_AUTHENTICATED)
        self.session = session
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self._lost = False

    def connectionMade(self) -> None:  # noqa: N802
        self.send_without_delay()
        self.session.connection_made(self)

    def connectionLost(self, reason) -> None:  # noqa: N802
        """The session hears first, so that code run by the failing requests
        already sees it offline and sends nothing more on this connection."""
        super().connectionLost(reason)
        self._lost = True
        self.session.connection_lost(self, reason)
        pending, self._pending = self._pending, {}
        for request in pending.values():
            request.deferred.errback(ConnectionLost("the connection closed before the reply"))

    # -- lines we cannot read: reported, passed over, never answered -------------

    def peer_sent_bad_line(self, error: WireError, line: bytes) -> None:
        self._unreadable(line, f"{error.code}: {error.text}")

    def line_too_long(self, head: bytes) -> None:
        self._unreadable(head, f"longer than {self.max_line_length} bytes")

    def handling_failed(self, request_id: str, failure) -> None:
        self.log.failure("handling a line from the server (request {request_id})", failure,
                         request_id=request_id)
        self.session.server_fault("a line from the server could not be handled (a bug in "
                                  "this client; see client.log)")

    def _unreadable(self, line: bytes, reason: str) -> None:
        self.log.warn("unreadable line from the server: {reason}", reason=reason)
        request_id, unreadable = salvage(line, reason)
        pending = self._pending.get(request_id) if request_id != NO_REQUEST_ID else None
        if pending is not None and unreadable.verb in (*_FINAL, "ERROR", ""):
            # Its answer will never be readable: the request fails now rather than hang.
            del self._pending[request_id]
            pending.deferred.errback(WireError(
                PROTOCOL_ERROR, f"the server's reply could not be read ({reason})", request_id))
        elif pending is not None:
            pending.reply.unreadable.append(unreadable)
        self.session.unreadable_line(unreadable)

    # -- requests ------------------------------------------------------------------

    def request(self, verb: str, *args: str, process: bool = True) -> defer.Deferred:
        """Send a request; fire with its L{Reply} or fail with its WireError."""
        if self._lost:
            return defer.fail(ConnectionLost("the connection is closed"))
        request_id = str(next(self._ids))
        pending = _Pending(defer.Deferred(), process)
        self._pending[request_id] = pending
        self.send_frame(verb, request_id, *args)
        return pending.deferred

    def dispatch(self, verb: str, request_id: str, args: dict):
        if verb == "PONG" and request_id in self._pending:
            # The answer to our PING (session.measure_lag).
            pending = self._pending.pop(request_id)
            pending.reply.final = (verb, args)
            pending.deferred.callback(pending.reply)
            return None
        if verb in ("PING", "PONG"):
            return super().dispatch(verb, request_id, args)
        pending = self._pending.get(request_id) if request_id != NO_REQUEST_ID else None
        if verb in _FINAL and pending is not None:
            del self._pending[request_id]
            pending.reply.final = (verb, args)
            pending.deferred.callback(pending.reply)
        elif verb == "ERROR" and pending is not None:
            del self._pending[request_id]
            code = Code(args["code"]) if args["code"] in Code.__members__ else args["code"]
            pending.deferred.errback(WireError(code, args["text"], request_id,
                                               pending.reply.retry_after))
        elif verb == "ERROR":
            self.session.server_error(args["code"], args["text"])
        elif verb == "RETRY" and pending is not None:
            pending.reply.retry_after = args["after_ms"] / 1000
        elif pending is not None:
            pending.reply.lines.append((verb, args))
            if pending.process:
                self.session.server_event(verb, args, pushed=False)
        elif request_id == NO_REQUEST_ID and verb != "RETRY":
            self.session.server_event(verb, args, pushed=True)
        else:
            self.log.warn("reply {verb} for unknown request {request_id}", verb=verb,
                          request_id=request_id)
        return None
