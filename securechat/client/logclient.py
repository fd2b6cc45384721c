# -*- test-case-name: tests.test_client_roomlog -*-
"""Keeping each room's log current: fetching what the server has, taking
the entries it pushes, appending our own, and telling the user what each
change means. The log itself, and the rules, are L{securechat.client.roomlog}.

An entry the server shows that breaks the log's rules, or contradicts what
this client checked before, is never obeyed: the room is marked forked (the
server shows members different rooms, or tampered with one), the user is
told, and nothing is sent there again.
"""

from twisted.internet import defer
from twisted.logger import Logger

from securechat.client.keyring import Commitment
from securechat.client.roomlog import Forked, RoomLog
from securechat.client.state import SharedOperations
from securechat.crypto.roomkeys import RoomKeyError
from securechat.names import fold
from securechat.roomlog import LogError, SignedEntry
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
    ROLE,
    SHARE,
    identity_of,
    unb64,
)
from securechat.wire import Code, WireError, b64encode

log = Logger()

# Times an append is built again after another entry took its place.
APPEND_ATTEMPTS = 5

_HOW = {PART: "part", KICK: "kick", BAN: "ban"}


class LogSync:
    """Room logs on the wire, for one L{securechat.client.session.ClientSession}."""

    def __init__(self, session):
        self._session = session
        self._fetches = SharedOperations()

    # -- reading ------------------------------------------------------------------

    def fetch(self, room: str, until: int = 0) -> defer.Deferred:
        """Bring the room's log up to what the server has (at least C{until}
        entries): one fetch at a time per room, shared by whoever asks."""
        log_ = self._session.logs.open(room)
        if until and log_.length >= until:
            return defer.succeed(log_)
        return self._fetches.run(fold(room), lambda: self._fetch(room))

    @defer.inlineCallbacks
    def _fetch(self, room: str):
        session = self._session
        log_ = session.logs.open(room)
        while True:
            start = log_.length
            reply = yield session.request("LOG", room, str(start), process=False)
            for _, args in reply.lines:
                self._take(log_, args["index"], args["entry"], args["signature"])
            claimed = _number(reply.final[1].get("b"))
            if log_.forked is None and claimed < log_.length:
                # Entries it acknowledged, or showed us, are gone from its log.
                log_.forked = claimed
                session.room_forked(log_.name, f"the server's log of {log_.name} has "
                                               f"{claimed} entries, fewer than the {log_.length} "
                                               f"this client checked: it dropped or is hiding "
                                               f"some; the server is showing members "
                                               f"different rooms")
            if log_.length == start:
                if claimed > log_.length and log_.forked is None:
                    session.emit("warning", room=log_.name,
                                 message=f"the server says {log_.name}'s log has {claimed} "
                                         f"entries but gives only {log_.length}: it is "
                                         f"withholding part of the room's log")
                return log_
            if not reply.final[1].get("c") and claimed <= log_.length:
                return log_

    def on_entry(self, room: str, index: int, entry: bytes, signature: bytes):
        """An entry the server pushed: taken if it is next, else the log is fetched."""
        log_ = self._session.logs.get(room)
        if log_ is None:
            return None
        if index > log_.length:
            return self.fetch(room, index + 1)
        self._take(log_, index, entry, signature)
        return None

    def take(self, room: str, signed: SignedEntry) -> bool:
        """Our own entry, appended: into the log as any other."""
        return self._take(self._session.logs.open(room), signed.entry.index, signed.data,
                          signed.signature)

    def forked(self, room: str) -> WireError | None:
        """The refusal for anything sent in C{room}, if its log is forked."""
        log_ = self._session.logs.get(room)
        if log_ is None or log_.forked is None:
            return None
        return WireError("ROOM_FORKED", f"{log_.name} is forked: the server shows members "
                                        f"different rooms; nothing is sent there")

    def _take(self, log_: RoomLog, index: int, data: bytes, signature: bytes) -> bool:
        """Check one entry from the server into the log; report what it changed.
        @return: whether it was new."""
        session = self._session
        if log_.forked is not None:
            return False
        try:
            signed = SignedEntry.decode(data, signature)
            new = log_.extend(index, signed)
        except Forked as fork:
            session.room_forked(log_.name, str(fork))
            return False
        except LogError as error:
            log_.forked = index
            session.room_forked(log_.name, f"the server showed entry {index} of {log_.name}, "
                                           f"which breaks the room's rules ({error.reason})")
            return False
        if new:
            if signed.entry.kind == EPOCH:
                log_.state.forget_holders(frozenset({session.identity.fingerprint}))
            session.log_changed(log_.name)
            self._react(log_, signed)
            session.save()
        return new

    # -- what an entry means -------------------------------------------------------

    def _react(self, log_: RoomLog, signed: SignedEntry) -> None:
        """Tell the user what a new entry changed, and act on it."""
        session, entry, state = self._session, signed.entry, log_.state
        room = session.rooms.get(fold(log_.name))
        name = room.name if room is not None else log_.name
        me = session.identity.fingerprint
        by = state.names.get(entry.author, "someone")
        if entry.kind in (GENESIS, ADMIT, JOIN, REKEY):
            joined = entry.author if entry.kind != ADMIT else \
                identity_of(entry.body["keys"]).fingerprint
            session.peers.meet(state.names[joined], state.keys[joined], name)
        if entry.kind == EPOCH:
            self._commit(log_, entry.body["epoch"])
            if entry.author != me:
                session.emit("rotation", room=name, epoch=entry.body["epoch"], by=by,
                             reason=entry.body.get("reason", ""))
            session.epoch_arrived(name)
        elif entry.kind == JOIN and entry.author != me:
            session.emit("member_joined", room=name, nick=by, role=state.role(entry.author))
        elif entry.kind == REKEY:
            old = unb64(entry.body["old"])
            if old == me and entry.author != me:
                log_.forked = entry.index
                session.room_forked(name, f"the server replaced your key in {name} with one "
                                          f"that is not yours: it is impersonating you there")
            else:
                session.member_removed(name, log_.state, None)
        elif entry.kind in _HOW:
            self._removal(log_, entry, name, by)
        elif entry.kind == INVITE:
            session.emit("notice", room=name, message=f"{by} invited {entry.body['nick']}")
        elif entry.kind == ROLE:
            target = unb64(entry.body["target"])
            session.emit("role", room=name, nick=state.members[target].nick,
                         role=entry.body["role"], by=by)
        elif entry.kind == POLICY:
            flags = [state.history] + (["invite_only"] if state.invite_only else [])
            session.emit("settings", room=name, by=by, flags=",".join(flags))
        elif entry.kind == SHARE and unb64(entry.body["recipient"]) == me:
            session.epoch_arrived(name)

    def _removal(self, log_: RoomLog, entry, name: str, by: str) -> None:
        session, state = self._session, log_.state
        target = entry.author if entry.kind == PART else unb64(entry.body["target"])
        if not state.removals or state.removals[-1] != (entry.index, target):
            return  # a ban of someone who was not a member
        how, reason = _HOW[entry.kind], entry.body.get("reason", "")
        nick = state.names[target]
        if target == session.identity.fingerprint:
            session.emit("left", room=name, how=how, by="" if how == "part" else by,
                         reason=reason)
            session.drop_room(name)
            return
        session.emit("member_left", room=name, nick=nick, how=how,
                     by="" if how == "part" else by, reason=reason)
        session.member_removed(name, log_.state, None if how == "part" else entry.author)

    def _commit(self, log_: RoomLog, number: int) -> None:
        """An epoch's key commitment, from its checked entry, into the keyring."""
        info = log_.state.epochs[number]
        try:
            self._session.keys.commit(Commitment(log_.state.room, number, info.key_id,
                                                 info.prev_box))
        except RoomKeyError as error:
            # Another commitment for this epoch was checked before: two logs.
            log_.forked = info.index
            self._session.room_forked(log_.name, f"the server is showing members different "
                                                 f"rooms: {error}")

    # -- appending ------------------------------------------------------------------

    @defer.inlineCallbacks
    def append(self, room: str, build, verb: str = "APPEND", *extra: str, on_reply=None):
        """Append the entry C{build(state)} makes (a SignedEntry, or None if there
        is nothing to do any more); when another entry took its place, fetch
        and build again. An entry the log's rules refuse is refused here, with
        the rule's reason, before it is sent. @return: the room's log after it."""
        session = self._session
        for _ in range(APPEND_ATTEMPTS):
            log_ = session.logs.open(room)
            if not log_.length:
                log_ = yield self.fetch(room)
            if self.forked(room):
                raise self.forked(room)
            signed = build(log_.state)
            if signed is None:
                return log_
            try:
                log_.state.copy().apply(signed, verify=False)
            except LogError as error:
                raise WireError(Code.NOT_ALLOWED, error.reason) from None
            try:
                reply = yield session.request(verb, room, str(signed.entry.index),
                                              b64encode(signed.data), b64encode(signed.signature),
                                              *extra)
            except WireError as error:
                if error.code != Code.LOG_CONFLICT:
                    raise
                yield self.fetch(room)
                continue
            if on_reply is not None:
                on_reply(reply)
            self._take(log_, signed.entry.index, signed.data, signed.signature)
            return log_
        raise WireError(Code.LOG_CONFLICT, f"{room}'s log kept moving; try again")


def _number(text) -> int:
    return int(text) if isinstance(text, str) and text.isdigit() else 0
