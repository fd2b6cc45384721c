# -*- test-case-name: tests.test_client_protocol -*-
"""The client's side of a connection: the same framing and codec as the
server, plus matching replies to requests.

Every request gets a Deferred that fires with the data lines answering it
(in order) once its OK arrives, or fails with the server's WireError. Lines
the server pushes, and data lines of requests marked C{process}, go to the
session as events; the session never parses a line itself.
"""

import itertools
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger

from securechat.lineprotocol import LineProtocol
from securechat.wire import NO_REQUEST_ID, SERVER_VERBS, Code, WireError

# Final replies: they complete a request.
_FINAL = {"OK", "DUPLICATE"}


@dataclass
class Reply:
    """What answered a request: its data lines and the final line."""

    lines: list[tuple[str, dict]] = field(default_factory=list)
    final: tuple[str, dict] | None = None


@dataclass
class _Pending:
    deferred: defer.Deferred
    process: bool
    reply: Reply = field(default_factory=Reply)


class ClientProtocol(LineProtocol):
    peer_verbs = SERVER_VERBS
    log = Logger()

    def __init__(self, session, clock):
        super().__init__(clock)
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

    def peer_sent_bad_line(self, error: WireError) -> None:
        """A server that sends what we cannot parse is not answered, only reported."""
        self.log.warn("unparseable line from the server: {code} {text}", code=error.code,
                      text=error.text)
        self.session.server_fault(f"the server sent a malformed line ({error.code}: {error.text})")

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
            pending.deferred.errback(WireError(code, args["text"], request_id))
        elif verb == "ERROR":
            self.session.server_error(args["code"], args["text"])
        elif pending is not None:
            pending.reply.lines.append((verb, args))
            if pending.process:
                self.session.server_event(verb, args)
        elif request_id == NO_REQUEST_ID:
            self.session.server_event(verb, args)
        else:
            self.log.warn("reply {verb} for unknown request {request_id}", verb=verb,
                          request_id=request_id)
