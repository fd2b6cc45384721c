# -*- test-case-name: tests.test_client_outbox -*-
"""Messages the user sent that the server has not yet acknowledged.

An entry keeps its message id and, once first sealed, its seq for good: if
the connection drops, the same message goes out again after reconnecting
and the server recognises the retry (DUPLICATE) instead of storing it twice.
The outbox is saved in the encrypted state, so unsent messages survive a
restart of the client too.
"""

import os
from dataclasses import dataclass

from securechat.constants import MESSAGE_ID_BYTES
from securechat.names import fold
from securechat.wire import b64decode, b64encode


@dataclass
class OutboxEntry:
    room: str
    text: str
    message_id: bytes
    seq: int | None = None
    in_flight: bool = False
    # The epoch it was last sealed in; not saved, since it is re-sealed anyway.
    epoch: int = 0
    # Whether the server made it wait (a budget, a full disk); not saved.
    waited: bool = False

    @property
    def room_key(self) -> str:
        return fold(self.room)

    def to_dict(self) -> dict:
        return {"room": self.room, "text": self.text, "id": b64encode(self.message_id),
                "seq": self.seq}

    @classmethod
    def from_dict(cls, data: dict) -> "OutboxEntry":
        return cls(data["room"], data["text"], b64decode(data["id"]), data["seq"])


class Outbox:
    def __init__(self, entries: list[dict] | None = None):
        self._entries = [OutboxEntry.from_dict(e) for e in entries or []]
        self._in_flight = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(list(self._entries))

    def to_list(self) -> list[dict]:
        return [e.to_dict() for e in self._entries]

    def add(self, room: str, text: str) -> OutboxEntry:
        entry = OutboxEntry(room, text, os.urandom(MESSAGE_ID_BYTES))
        self._entries.append(entry)
        return entry

    def waiting(self):
        """Entries not on the wire right now, oldest first."""
        return [e for e in self._entries if not e.in_flight]

    def in_flight(self) -> int:
        return self._in_flight

    def sending(self, entry: OutboxEntry) -> None:
        """C{entry} is on the wire now."""
        if not entry.in_flight:
            entry.in_flight = True
            self._in_flight += 1

    def returned(self, entry: OutboxEntry) -> None:
        """C{entry} came back unsent (refused for a reason that a retry fixes)."""
        if entry.in_flight:
            entry.in_flight = False
            self._in_flight -= 1

    def remove(self, entry: OutboxEntry) -> None:
        self.returned(entry)
        self._entries.remove(entry)

    def drop_room(self, room: str) -> list[OutboxEntry]:
        dropped = [e for e in self._entries if fold(e.room) == fold(room)]
        for entry in dropped:
            self.remove(entry)
        return dropped

    def connection_lost(self) -> None:
        for entry in self._entries:
            entry.in_flight = False
        self._in_flight = 0
