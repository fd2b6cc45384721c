# -*- test-case-name: tests.test_fanout -*-
"""Who is connected, and delivering one encoded line to many of them.

The service publishes each event once; the fan-out encodes nothing and
copies nothing per recipient: every connection gets the same bytes. Today
delivery is in-process; an implementation over Redis pub/sub, for several
daemons, provides the same interface.
"""

from zope.interface import Interface, implementer


class IConnection(Interface):
    """What fan-out needs of a client connection."""

    def deliver(line):
        """Queue one complete line (bytes, LF included) for the client."""

    def drop(code, text):
        """Tell the client why with an ERROR line, then close the connection."""


class IFanOut(Interface):
    def publish(user_ids, line, exclude=None):
        """Deliver C{line} to every connection of C{user_ids}, except C{exclude}."""

    def online(user_id):
        """Whether the user has at least one connection."""

    def online_users():
        """The set of user ids with a connection."""


@implementer(IFanOut)
class LocalFanOut:
    """Fan-out within one daemon: a map from user id to live connections."""

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

    def online(self, user_id: int) -> bool:
        return user_id in self._sessions

    def online_users(self) -> set[int]:
        return set(self._sessions)
