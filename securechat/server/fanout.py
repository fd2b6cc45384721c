# -*- test-case-name: tests.test_fanout -*-
"""Who is connected, and delivering one encoded line to many of them.

The service publishes each event once; the fan-out encodes nothing and
copies nothing per recipient: every connection gets the same bytes. Today
delivery is in-process; an implementation over Redis pub/sub, for several
daemons, provides the same interface.
"""

from contextlib import contextmanager

from twisted.internet import defer
from zope.interface import Attribute, Interface, implementer


class IConnection(Interface):
    """What fan-out needs of a client connection."""

    def deliver(line):
        """Queue one complete line (bytes, LF included) for the client."""

    def write_lines(lines):
        """Send several complete lines at once (one TLS record, not one each)."""

    def drop(code, text):
        """Tell the client why with an ERROR line, then close the connection."""


class IFanOut(Interface):
    def attach(user_id, connection):
        """A connection logged in as C{user_id} on this daemon."""

    def detach(user_id, connection):
        """A connection closed; @return: whether the user has no other one here."""

    def connections(user_id):
        """The user's connections on this daemon."""

    def publish(user_ids, line, exclude=None):
        """Deliver C{line} to every connection of C{user_ids}, except C{exclude}."""

    def message_stored(room_id, server_seq, epoch, line):
        """A room has messages up to C{server_seq}, this one C{line}: other
        daemons deliver it to their own connections, or read what they missed
        from the database first."""

    def deliver_here(user_ids, line, exclude=None):
        """Deliver a message line to this daemon's connections only."""

    def start(listener):
        """Start hearing from other daemons (an L{IClusterListener}); a Deferred."""

    def stop():
        """Stop; a Deferred."""

    def room_changed(room_id):
        """A committed change to a room: other daemons re-read it."""

    def user_changed(user_id):
        """A committed change to an account: other daemons re-read it."""

    def online(user_id):
        """Whether the user has at least one connection, on any daemon."""

    def online_users():
        """The set of user ids with a connection, on any daemon."""

    def online_here():
        """The set of user ids with a connection to this daemon."""

    several_daemons = Attribute("Whether other daemons share this one's rooms.")


@implementer(IFanOut)
class LocalFanOut:
    """Fan-out within one daemon: a map from user id to live connections."""

    several_daemons = False

    def __init__(self):
        self._sessions: dict[int, list] = {}

    def attach(self, user_id: int, connection) -> None:
        self._sessions.setdefault(user_id, []).append(connection)

    def detach(self, user_id: int, connection) -> bool:
        """Forget a connection; @return: whether the user is now offline."""
        connections = self._sessions.get(user_id, [])
        if connection in connections:
            connections.remove(connection)
        if not connections:
            self._sessions.pop(user_id, None)
            return True
        return False

    def connections(self, user_id: int) -> list:
        return list(self._sessions.get(user_id, ()))

    def publish(self, user_ids, line: bytes, exclude=None) -> None:
        for user_id in user_ids:
            for connection in self._sessions.get(user_id, ()):
                if connection is not exclude:
                    connection.deliver(line)

    def message_stored(self, room_id: int, server_seq: int, epoch: int, line: bytes) -> None:
        """One daemon: it delivered the message itself."""

    def deliver_here(self, user_ids, line: bytes, exclude=None) -> None:
        self.publish(user_ids, line, exclude)

    def start(self, listener):
        return defer.succeed(None)

    def stop(self):
        return defer.succeed(None)

    def room_changed(self, room_id: int) -> None:
        """One daemon: nobody else holds a copy of the room."""

    def user_changed(self, user_id: int) -> None:
        """One daemon: nobody else holds a copy of the account."""

    def online(self, user_id: int) -> bool:
        return user_id in self._sessions

    def online_users(self) -> set[int]:
        return set(self._sessions)

    online_here = online_users


class OutputBatch:
    """Every line the daemon sends, held until the end of its reactor turn (or
    of an explicit batch), then written with one write per connection.

    One write is one TLS record and one C{send()}. A member of a busy room, or
    a client whose request has a reply of several lines, would otherwise pay
    for one per line. Twisted's own TLS transport coalesces too, but with a
    timer per connection per write; here one timer serves the whole daemon.
    A group commit opens an explicit batch, so its acks and deliveries leave
    as soon as it has been applied, without waiting for the turn to end.
    """

    def __init__(self, clock):
        self._clock = clock
        self._held: dict | None = None
        self._depth = 0
        self._turn_end = None

    @contextmanager
    def held(self):
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth:
                self.flush()

    def hold(self, connection, line: bytes) -> None:
        """Keep C{line} for C{connection} until the batch or the turn ends."""
        if self._held is None:
            self._held = {}
            if not self._depth:
                self._turn_end = self._clock.callLater(0, self.flush)
        self._held.setdefault(connection, []).append(line)

    def flush(self) -> None:
        """Write everything held, one write per connection, in the order held."""
        if self._turn_end is not None:
            if self._turn_end.active():
                self._turn_end.cancel()
            self._turn_end = None
        held, self._held = self._held, None
        for connection, lines in (held or {}).items():
            connection.write_lines(lines)

    def release(self, connection) -> None:
        """Write what is held for C{connection} now (it is about to close)."""
        if self._held and connection in self._held:
            connection.write_lines(self._held.pop(connection))
