# -*- test-case-name: tests.test_rooms -*-
"""Rooms: membership, roles, bans, invites and the checks that guard them.

Pure state, like Twisted Words' service.py: the service asks this registry
whether an operation is allowed, persists it, then applies it here.
"""

from dataclasses import dataclass

from securechat.constants import MAX_MEMBERS_PER_ROOM, MAX_ROOMS_PER_USER, MAX_TOPIC_LENGTH
from securechat.crypto.roomkeys import EpochRecord, RoomKeyError
from securechat.names import check_room, fold
from securechat.server.store import RoomRow
from securechat.wire import Code, WireError

@dataclass(frozen=True)
class RoomLimits:
    max_rooms_per_user: int = MAX_ROOMS_PER_USER
    max_members_per_room: int = MAX_MEMBERS_PER_ROOM
    max_topic_length: int = MAX_TOPIC_LENGTH


class RoomRegistry:
    """Every room, by id and by folded name, and each user's rooms."""

    def __init__(self, rooms: list[RoomRow], limits: RoomLimits = RoomLimits()):
        self.limits = limits
        self._by_id: dict[int, RoomRow] = {}
        self._by_name: dict[str, RoomRow] = {}
        self._rooms_of: dict[int, set[int]] = {}
        self._reserved: set[str] = set()
        for room in rooms:
            self.add_room(room)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self):
        return iter(self._by_id.values())

    # -- lookups ---------------------------------------------------------------

    def find(self, name: str) -> RoomRow | None:
        return self._by_name.get(fold(name))

    def by_id(self, room_id: int) -> RoomRow:
        return self._by_id[room_id]

    def get(self, room_id: int) -> RoomRow | None:
        return self._by_id.get(room_id)

    def require(self, name: str) -> RoomRow:
        room = self.find(name)
        if room is None:
            raise WireError(Code.NO_SUCH_ROOM, f"no room {name}")
        return room

    def require_member(self, name: str, user_id: int) -> RoomRow:
        room = self.require(name)
        if user_id not in room.members:
            raise WireError(Code.NOT_MEMBER, f"you are not in {room.name}")
        return room

    def require_role(self, name: str, user_id: int, *roles: str) -> RoomRow:
        room = self.require_member(name, user_id)
        if room.members[user_id] not in roles:
            raise WireError(Code.NOT_ALLOWED, f"that needs {' or '.join(roles)} in {room.name}")
        return room

    def rooms_of(self, user_id: int) -> list[RoomRow]:
        return [self._by_id[r] for r in sorted(self._rooms_of.get(user_id, ()))]

    def public_rooms(self) -> list[RoomRow]:
        return sorted((r for r in self if not r.invite_only), key=lambda r: fold(r.name))

    # -- checks ----------------------------------------------------------------

    def check_create(self, name: str, user_id: int) -> None:
        """Allow creating C{name}, and reserve it until the creation commits."""
        check_room(name)
        if fold(name) in self._reserved or fold(name) in self._by_name:
            raise WireError(Code.NOT_ALLOWED, f"{name} is being created; try again")
        self._check_room_count(user_id)
        self._reserved.add(fold(name))

    def release(self, name: str) -> None:
        self._reserved.discard(fold(name))

    def check_join(self, room: RoomRow, user_id: int) -> None:
        """The server's own limits on a join (the log's rules come first)."""
        if len(room.members) >= self.limits.max_members_per_room:
            raise WireError(Code.ROOM_FULL, f"{room.name} has its maximum of members")
        self._check_room_count(user_id)

    def _check_room_count(self, user_id: int) -> None:
        if len(self._rooms_of.get(user_id, ())) >= self.limits.max_rooms_per_user:
            raise WireError(
                Code.TOO_MANY_ROOMS,
                f"you are in {self.limits.max_rooms_per_user} rooms already; part one first",
            )

    # -- changes (applied after the store committed them) --------------------

    def add_room(self, room: RoomRow) -> None:
        self.release(room.name)
        self._by_id[room.id] = room
        self._by_name[fold(room.name)] = room
        for user_id in room.members:
            self._rooms_of.setdefault(user_id, set()).add(room.id)

    def set_members(self, room: RoomRow, members: dict[int, str]) -> None:
        """The room's members (user id to role) after a change its log made."""
        for user_id in set(room.members) - set(members):
            self._rooms_of.get(user_id, set()).discard(room.id)
            room.holders.discard(user_id)
        for user_id in members:
            self._rooms_of.setdefault(user_id, set()).add(room.id)
        room.members = dict(members)

    def replace_room(self, room: RoomRow) -> None:
        """The room as another daemon left it, re-read from the database.

        Copied into the object already held, not swapped for it: a request in
        flight (a message waiting for its commit) holds that object, and
        what it changes must land on the room everybody sees."""
        current = self._by_id.get(room.id)
        if current is None:
            self.add_room(room)
            return
        for user_id in current.members:
            self._rooms_of.get(user_id, set()).discard(room.id)
        vars(current).update(vars(room))
        for user_id in current.members:
            self._rooms_of.setdefault(user_id, set()).add(room.id)

    def delete_room(self, room: RoomRow) -> None:
        del self._by_id[room.id]
        del self._by_name[fold(room.name)]
        for user_id in room.members:
            self._rooms_of.get(user_id, set()).discard(room.id)


def legacy_history(record: bytes | None) -> str:
    """The history policy of a room from before the logs, as its last signed
    epoch record names it: "joined" when there is none, or it cannot be read
    (the stricter of the two). The room's upgrade genesis carries it on."""
    if not record:
        return "joined"
    try:
        return EpochRecord.decode(record).history
    except RoomKeyError:
        return "joined"
