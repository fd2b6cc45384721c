# -*- test-case-name: tests.test_service -*-
"""The server's side of the room logs: it orders them, never writes them.

Every change to a room is an entry a member signed. The server replays each
room's log (the same rules as every client, securechat.roomlog), refuses an
entry that breaks them or its own gates (a ban, a password, a limit, an
entry signed by someone other than the connection's user), stores the rest
by compare-and-set on the log's length, mirrors what they change into the
tables the rest of the daemon reads (members, bans, the rekey flag), and
sends each new entry to the room's members. It cannot make an entry, so it
cannot add a member, hide a removal from the log or change a policy.
"""

from twisted.internet import defer
from twisted.logger import Logger

from securechat.constants import LOG_PAGE, REPLY_BUDGET_BYTES
from securechat.names import check_room, fold
from securechat.roomlog import LogError, RoomState, SignedEntry
from securechat.roomlog.entry import (
    ADMIT,
    BAN,
    EPOCH,
    GENESIS,
    INVITE,
    JOIN,
    KICK,
    PART,
    POLICY,
    REKEY,
    identity_of,
    unb64,
)
from securechat.server import events
from securechat.server.passwords import check_room_password
from securechat.server.store import LogConflict, LogEffects, NameTaken, RoomRow, UserRow
from securechat.wire import Code, WireError

log = Logger()

OK = "OK"

# Kinds a client appends with APPEND; joining is JOIN, a new epoch ROTATE.
APPENDED = frozenset({"genesis", "admit", "invite", "part", "kick", "ban", "unban", "role",
                      "policy", "share", "rekey"})

# What a removal is called where members are told of it.
_HOW = {PART: "part", KICK: "kick", BAN: "ban"}


def decode(data: bytes, signature: bytes) -> SignedEntry:
    try:
        return SignedEntry.decode(data, signature)
    except LogError as error:
        raise WireError(Code.BAD_ENTRY, error.reason) from None


class RoomLogs:
    """Room logs for one L{ChatService} (whose registries, store and fan-out it uses)."""

    def __init__(self, service):
        self._service = service

    # -- reading --------------------------------------------------------------

    def adopt(self, room: RoomRow) -> None:
        """A room as the store has it: replay its log (the store's entries were
        checked when they were appended) into the state the daemon keeps."""
        if room.log is None:
            room.state = None
            return
        state = RoomState(room=room.name)
        for data, signature in room.log:
            state.apply(SignedEntry.decode(data, signature), verify=False)
        state.forget_holders()
        room.state, room.log = state, None

    def may_read(self, room: RoomRow, user: UserRow) -> bool:
        """Members read a room's log; so does anyone invited, and, in an open
        room, anyone who might join."""
        if user.id in room.members or room.state is None:
            return user.id in room.members
        state = room.state
        fingerprint = user.fingerprint
        return not state.invite_only or any(i.invitee == fingerprint
                                            for i in state.invites.values())

    @defer.inlineCallbacks
    def read(self, user: UserRow, name: str, from_index: int):
        """LOG: entries from C{from_index}, a page at a time. OK says how many
        came, how long the log is, and where the next page starts if any."""
        service = self._service
        room = yield self.find(check_room(name))
        if room is None:
            raise WireError(Code.NO_SUCH_ROOM, f"no room {name}")
        if not self.may_read(room, user):
            raise WireError(Code.NOT_MEMBER, f"{room.name} is invite-only")
        # A member may have been sent an entry (through the bus) that this
        # daemon's copy of the room does not have yet.
        room = yield self.caught_up(room, from_index)
        rows = yield service.store.log(room.id, from_index, LOG_PAGE)
        lines, size = [], 0
        for index, data, signature in rows:
            size += (len(data) + len(signature)) * 4 // 3 + 64
            if lines and size > REPLY_BUDGET_BYTES:
                break
            lines.append(events.entry(room, index, data, signature))
        following = (str(from_index + len(lines)),) if len(lines) < len(rows) or \
            len(rows) == LOG_PAGE else ()
        length = room.state.length if room.state is not None else 0
        if rows:
            # The store may be ahead of this daemon's copy (another daemon's notice).
            length = max(length, rows[-1][0] + 1)
        return [*lines, (OK, (str(len(lines)), str(length), *following))]

    # -- joining ----------------------------------------------------------------

    @defer.inlineCallbacks
    def join(self, user: UserRow, name: str, index: int, data: bytes, signature: bytes,
             password: str | None):
        """JOIN: a genesis entry creates the room; a join entry adds its author."""
        service = self._service
        signed = decode(data, signature)
        room = yield self.find(check_room(name))
        if room is None and signed.entry.kind == GENESIS:
            created = yield self._create(user, name, signed)
            if created is not None:
                return [service.room_state(created, user), (OK, ())]
            room = service.rooms.require(name)
        if room is None:
            raise WireError(Code.NO_SUCH_ROOM, f"no room {name}; a genesis entry creates it")
        room = yield self.caught_up(room, index)
        if room.state is None:
            raise WireError(Code.NO_LOG, f"{room.name} is being moved to a signed log; try "
                                         f"again when one of its members is back online")
        if user.fingerprint in room.state.members and user.id in room.members:
            return [(yield self._state_for(room, user)), (OK, ())]
        if signed.entry.kind != JOIN:
            raise WireError(Code.BAD_ENTRY, "JOIN takes a genesis or a join entry")
        self._check_own(user, signed)
        if user.fingerprint in room.state.banned or user.id in room.bans:
            raise WireError(Code.BANNED, f"you are banned from {room.name}")
        if room.state.invite_only and not signed.entry.body.get("invite"):
            raise WireError(Code.INVITE_ONLY,
                            f"{room.name} is invite-only: ask an op to invite you")
        if room.password_hash:
            matches = yield service.run_blocking(check_room_password, password or "",
                                                 room.password_hash)
            if not matches:
                raise WireError(Code.BAD_PASSWORD, f"wrong password for {room.name}")
        service.rooms.check_join(room, user.id)
        yield self.append_checked(room, user, index, signed)
        return [(yield self._state_for(room, user)), (OK, ())]

    @defer.inlineCallbacks
    def _state_for(self, room: RoomRow, user: UserRow):
        """The ROOM line for a member who just joined: with the seq their next
        message takes, which a part and a rejoin do not reset."""
        next_seq = yield self._service.store.next_seq(room.id, user.id)
        return self._service.room_state(room, user, next_seq)

    @defer.inlineCallbacks
    def _create(self, user: UserRow, name: str, signed: SignedEntry):
        """The new room, its genesis stored with it; None if another daemon made
        it first (it is then read in, and joined as any existing room)."""
        service = self._service
        entry = signed.entry
        self._check_own(user, signed)
        if fold(entry.room) != fold(name) or entry.body.get("upgrade"):
            raise WireError(Code.BAD_ENTRY, f"a genesis entry of {entry.room} cannot create "
                                            f"{name}")
        state = RoomState(room=name)
        try:
            state.apply(signed)
        except LogError as error:
            raise WireError(Code.BAD_ENTRY, error.reason) from None
        service.rooms.check_create(name, user.id)
        try:
            room_id = yield service.store.create_room(name, user.id, service.now(),
                                                      (signed.data, signed.signature))
        except NameTaken:
            service.rooms.release(name)
            room_id = yield service.store.room_id(name)
            if room_id is None:
                raise WireError(Code.NO_SUCH_ROOM, f"{name} was deleted meanwhile") from None
            yield service.replica.reload_room(room_id)
            return None
        service.rooms.release(name)
        room = RoomRow(room_id, name, "", state.invite_only, None, False, service.now(),
                       members={user.id: "owner"}, state=state)
        service.rooms.add_room(room)
        service.fanout.room_changed(room.id)
        log.info("{nick} created {room}", nick=user.nick, room=name)
        return room

    # -- appending ----------------------------------------------------------------

    @defer.inlineCallbacks
    def append(self, user: UserRow, name: str, index: int, data: bytes, signature: bytes):
        """APPEND: any entry but a join or an epoch, by a member, for themselves."""
        service = self._service
        signed = decode(data, signature)
        kind = signed.entry.kind
        if kind not in APPENDED:
            raise WireError(Code.BAD_ENTRY, f"{kind} entries go with "
                                            f"{'JOIN' if kind == JOIN else 'ROTATE'}")
        room = service.rooms.require_member(name, user.id)
        if room.state is None and kind != GENESIS:
            raise WireError(Code.NO_LOG, f"{room.name} has no signed log yet: its first "
                                         f"entry is an upgrade genesis")
        self._check_own(user, signed)
        if kind == GENESIS:
            self._check_upgrade(room, user, signed)
        elif kind == ADMIT:
            self._check_admit(room, signed)
        elif kind == INVITE:
            self._known_identity(signed.entry, "invitee")
        yield self.append_checked(room, user, index, signed)
        if kind == INVITE:
            invitee = service.accounts.by_fingerprint(unb64(signed.entry.body["invitee"]))
            service.push(invitee.id, events.invited(room, user.nick))
        return [(OK, (str(index),))]

    def _check_own(self, user: UserRow, signed: SignedEntry) -> None:
        """A connection appends only its own user's entries, under their nick:
        a member cannot relay somebody else's signed entry."""
        entry = signed.entry
        if entry.author != user.fingerprint:
            raise WireError(Code.BAD_ENTRY, "the entry is not signed by your identity key")
        if entry.kind in (GENESIS, JOIN, REKEY) and fold(entry.body.get("nick", "")) \
                != fold(user.nick):
            raise WireError(Code.BAD_ENTRY, f"the entry names another nick than {user.nick}")
        if entry.kind == REKEY:
            old = self._service.accounts.by_fingerprint(unb64(entry.body.get("old")))
            if old is None or old.id != user.id:
                raise WireError(Code.BAD_ENTRY, "the entry replaces a key that was not yours")

    def _check_upgrade(self, room: RoomRow, user: UserRow, signed: SignedEntry) -> None:
        body = signed.entry.body
        if room.state is not None or not body.get("upgrade"):
            raise WireError(Code.LOG_CONFLICT, f"{room.name} has a log already")
        if body.get("role") != room.members[user.id] or body.get("legacy_epoch") != room.epoch:
            raise WireError(Code.BAD_ENTRY, f"an upgrade of {room.name} gives its author their "
                                            f"role and the room's epoch ({room.epoch})")

    def _check_admit(self, room: RoomRow, signed: SignedEntry) -> None:
        """An upgrade lists members the room already had, and only those."""
        body = signed.entry.body
        try:
            admitted = identity_of(body.get("keys"))
        except LogError as error:
            raise WireError(Code.BAD_ENTRY, error.reason) from None
        account = self._service.accounts.by_fingerprint(admitted.fingerprint)
        if account is None or account.id not in room.members \
                or fold(account.nick) != fold(body.get("nick", "")) \
                or room.members[account.id] != body.get("role"):
            raise WireError(Code.BAD_ENTRY, "an upgrade admits only the room's members, with "
                                            "their nicks and roles")

    def _known_identity(self, entry, field: str) -> UserRow:
        account = self._service.accounts.by_fingerprint(unb64(entry.body.get(field)))
        if account is None or account.fingerprint != unb64(entry.body.get(field)) \
                or fold(account.nick) != fold(entry.body.get("nick", "")):
            raise WireError(Code.NO_SUCH_USER, "no user has that nick and key")
        return account

    @defer.inlineCallbacks
    def append_checked(self, room: RoomRow, user: UserRow, index: int, signed: SignedEntry,
                       epoch_effects: LogEffects | None = None):
        """Check C{signed} against the log, store it with what it changes, apply
        it, and tell the members (and whoever it removed)."""
        service = self._service
        room = yield self.caught_up(room, index)
        state = room.state or RoomState(room=room.name)
        if index != state.length or signed.entry.index != index:
            raise WireError(Code.LOG_CONFLICT, f"the log of {room.name} has {state.length} "
                                               f"entries; fetch them and try again")
        after = state.copy()
        try:
            after.apply(signed)
        except LogError as error:
            raise WireError(Code.BAD_ENTRY, error.reason) from None
        if signed.entry.kind == EPOCH:
            after.forget_holders()
        effects = epoch_effects or LogEffects()
        members, bans = self.mirror(room, after)
        before_members = dict(room.members)
        effects.members = {uid: role for uid, role in members.items()
                           if before_members.get(uid) != role}
        effects.members.update({uid: None for uid in before_members if uid not in members})
        effects.bans = {uid: user.id for uid in bans - room.bans}
        effects.bans.update({uid: None for uid in room.bans - bans})
        rekey = self._rekey_after(room, state, after, signed.entry)
        if after.invite_only != room.invite_only:
            effects.room["invite_only"] = after.invite_only
        if rekey != room.rekey_required and signed.entry.kind != EPOCH:
            effects.room["rekey_required"] = rekey
        try:
            yield service.store.append_entry(room.id, index, signed.data, signed.signature,
                                             service.now(), effects)
        except LogConflict:
            yield service.replica.reload_room(room.id)
            raise WireError(Code.LOG_CONFLICT, f"another entry took place {index} of the log "
                                               f"of {room.name}; fetch it and try again") from None
        removed = set(before_members) - set(members)
        room.state = after
        service.rooms.set_members(room, members)
        room.bans, room.invite_only = bans, after.invite_only
        if signed.entry.kind != EPOCH:
            room.rekey_required = rekey
        for uid in removed:
            service.requests.remove(room.id, uid)
        service.fanout.room_changed(room.id)
        service.publish(room, events.entry(room, index, signed.data, signed.signature),
                        extra=removed)
        self._log(room, user, signed)

    @defer.inlineCallbacks
    def find(self, name: str):
        """The room by that name, or None; with several daemons, one another
        daemon made a moment ago is read in first."""
        service = self._service
        room = service.rooms.find(name)
        if room is None and service.fanout.several_daemons:
            room_id = yield service.store.room_id(name)
            if room_id is not None:
                yield service.replica.reload_room(room_id)
                room = service.rooms.find(name)
        return room

    @defer.inlineCallbacks
    def caught_up(self, room: RoomRow, index: int):
        """The room, read again first if an entry is offered beyond the end of
        its log as this daemon knows it: another daemon appended meanwhile and
        its notice has not come (or never will)."""
        length = room.state.length if room.state is not None else 0
        if index > length and self._service.fanout.several_daemons:
            yield self._service.replica.fresh(room.id)
            name, room = room.name, self._service.rooms.get(room.id)
            if room is None:
                raise WireError(Code.NO_SUCH_ROOM, f"{name} was deleted meanwhile")
        return room

    def mirror(self, room: RoomRow, state: RoomState) -> tuple[dict[int, str], set[int]]:
        """The members (user id to role) and bans (user ids) a log state means
        for the daemon's tables. While an upgrade admits the room's members, the
        ones not admitted yet stay."""
        accounts = self._service.accounts
        members = {}
        for fingerprint, member in state.members.items():
            account = accounts.by_fingerprint(fingerprint)
            if account is not None:
                members[account.id] = member.role
        if state.admitting:
            members = {**{u: r for u, r in room.members.items() if u not in members}, **members}
        bans = {accounts.by_fingerprint(fp).id for fp in state.banned
                if accounts.by_fingerprint(fp) is not None}
        return members, bans

    def _rekey_after(self, room: RoomRow, before: RoomState, after: RoomState, entry) -> bool:
        """Whether messages need a new epoch after C{entry}: somebody holding the
        current key is no longer a member, a newcomer in a room where newcomers
        read only what follows their join, or a change of the history policy."""
        if entry.kind == EPOCH:
            return False
        return (room.rekey_required or bool(after.stale_holders())
                or (entry.kind == JOIN and after.history == "joined" and after.epoch > 0)
                or (entry.kind == POLICY and after.history != before.history))

    def _log(self, room: RoomRow, user: UserRow, signed: SignedEntry) -> None:
        entry = signed.entry
        if entry.kind in _HOW or entry.kind in (JOIN, INVITE, GENESIS, REKEY):
            log.info("{nick} appended a {kind} to {room}", nick=user.nick, kind=entry.kind,
                     room=room.name)
