# -*- test-case-name: tests.test_client_roomlog -*-
"""What a client knows of each room: its log, checked entry by entry, and
the state every honest member derives from it. Pure: no I/O.

A client trusts nothing else about a room. The server's WHO, ROOM and role
lines are for display; who is a member, who may rotate, who gets a key and
what the policy is all come from here. The first log a client is shown is
trusted on first use (its genesis, like a first key); from then on the log
only grows, and an entry that does not extend what this client has already
checked means the server shows members different rooms: the room is
marked forked, and nothing is sent in it.
"""

from securechat.constants import HASHES_KEPT
from securechat.names import fold
from securechat.roomlog import LogError, RoomState, SignedEntry
from securechat.roomlog.entry import b64, unb64



class Forked(Exception):
    """The server showed an entry that contradicts the checked log."""

    def __init__(self, room: str, index: int):
        super().__init__(f"the server is showing members different rooms: entry {index} of "
                         f"{room} is not the one this client checked")
        self.room = room
        self.index = index


class RoomLog:
    """One room's checked log: its state, and the hashes of its last entries."""

    def __init__(self, name: str, state: RoomState | None = None, hashes: list | None = None,
                 forked: int | None = None):
        self.name = name
        self.state = state or RoomState(room=name)
        self._hashes: list[bytes] = hashes or []
        # The index at which the server contradicted this log, if it did.
        self.forked = forked
        # What to_dict made, kept until the log changes: the client's state is
        # saved after every message, and a room's log seldom changes.
        self._saved: tuple | None = None

    @property
    def length(self) -> int:
        return self.state.length

    def hash_at(self, index: int) -> bytes | None:
        """The hash of entry C{index}, if it is one of the last remembered."""
        first = self.length - len(self._hashes)
        return self._hashes[index - first] if first <= index < self.length else None

    def extend(self, index: int, signed: SignedEntry) -> bool:
        """Add entry C{index}; @return: whether it was new.

        @raise Forked: it contradicts an entry already checked.
        @raise LogError: it breaks a rule of the log (nothing changes).
        """
        if index < self.length:
            known = self.hash_at(index)
            if known is not None and known != signed.entry.hash():
                self.forked = index if self.forked is None else self.forked
                raise Forked(self.name, index)
            return False
        if index > self.length:
            raise LogError(f"entry {index} of {self.name} is ahead of the {self.length} checked")
        try:
            self.state.apply(signed)
        except LogError:
            if self.length and signed.entry.prev != self.state.head:
                self.forked = index if self.forked is None else self.forked
                raise Forked(self.name, index) from None
            raise
        self._hashes.append(signed.entry.hash())
        del self._hashes[:-HASHES_KEPT]
        return True

    def names_head(self, index: int, head: bytes) -> str:
        """Whether a message naming its sender's log as C{index} entries long,
        ending in C{head}, fits this log: "same", "ahead" (fetch the log and
        look again), "fork", or "unknown" (older than what is remembered)."""
        if index > self.length:
            return "ahead"
        if index == 0:
            return "same"
        known = self.hash_at(index - 1)
        if known is None:
            return "unknown"
        return "same" if known == head else "fork"

    def to_dict(self, identities: dict) -> dict:
        version = (self.length, self.forked)
        if self._saved is None or self._saved[0] != version:
            own: dict = {}
            saved = {"state": self.state.to_dict(own), "hashes": [b64(h) for h in self._hashes],
                     "forked": self.forked}
            self._saved = (version, saved, own)
        identities.update(self._saved[2])
        return self._saved[1]

    @classmethod
    def from_dict(cls, name: str, data: dict, identities: dict) -> "RoomLog":
        return cls(name, RoomState.from_dict(data["state"], identities),
                   [unb64(h) for h in data["hashes"]], data.get("forked"))


class RoomLogs:
    """Every room's checked log, by folded name; saved in the client's state."""

    def __init__(self, data: dict | None = None):
        data = data or {}
        identities = data.get("identities", {})
        self._logs: dict[str, RoomLog] = {
            key: RoomLog.from_dict(saved["state"]["room"], saved, identities)
            for key, saved in data.get("rooms", {}).items()}

    def get(self, room: str) -> RoomLog | None:
        return self._logs.get(fold(room))

    def open(self, room: str) -> RoomLog:
        """The room's log, empty if nothing of it was checked yet."""
        return self._logs.setdefault(fold(room), RoomLog(room))

    def forget(self, room: str) -> None:
        self._logs.pop(fold(room), None)

    def to_dict(self) -> dict:
        identities: dict = {}
        rooms = {key: log.to_dict(identities) for key, log in self._logs.items()}
        return {"rooms": rooms, "identities": identities}
