# -*- test-case-name: tests.test_client_session -*-
"""Being in rooms: joining (or creating) one, leaving it (at once, or after
the next login when offline), and the changes an op or the owner makes
(invites, kicks, bans, roles, invite-only): each an entry of the room's
log, signed here, appended by the server. Who is in a room is what its log
says; the server's roster is only asked for who is online."""

from twisted.internet import defer

from securechat.names import fold
from securechat.roomlog import author
from securechat.wire import Code, WireError, b64encode


class Membership:
    """The user's rooms as they join and leave them, for one
    L{securechat.client.session.ClientSession}.

    @ivar parts_waiting: rooms left while offline (folded name to name and
        reason); each part is appended after the next login, before
        anything else, and kept (and saved) until the server has taken it.
    """

    def __init__(self, session, parts_waiting: list):
        self._session = session
        self.parts_waiting: dict[str, tuple[str, str]] = {
            fold(name): (name, reason) for name, reason in parts_waiting}
        # The server's last seq of rooms as we join them: a newcomer to a room
        # whose history is not shared starts reading there.
        self._server_last_seq: dict[str, int] = {}

    @defer.inlineCallbacks
    def send_waiting_parts(self):
        """The rooms left while offline, left now, before SYNC lists them again."""
        session = self._session
        for key, (name, reason) in list(self.parts_waiting.items()):
            try:
                yield session.log_sync.append(name, lambda state, r=reason: self.part_entry(
                    state, r))
            except WireError as error:
                if error.code not in (Code.NOT_MEMBER, Code.NO_SUCH_ROOM):
                    session.emit("error", code=str(error.code),
                                 message=f"could not leave {name}: {error.text}; trying again "
                                         f"after the next reconnection")
                    continue
            del self.parts_waiting[key]
            session.save()

    @defer.inlineCallbacks
    def join(self, name: str, password: str | None = None):
        """Join (or create) a room: append our join (or its genesis) to its log.
        In a shared-history room a newcomer reads from the beginning; otherwise
        from the moment they joined."""
        session = self._session
        new = fold(name) not in session.rooms
        extra = [password] if password else []
        try:
            log_ = yield session.log_sync.fetch(name)
        except WireError as error:
            if error.code == Code.NOT_MEMBER:
                raise WireError(Code.INVITE_ONLY, f"{name} is invite-only: ask an op to "
                                                  f"invite you") from None
            if error.code != Code.NO_SUCH_ROOM:
                raise
            log_ = None
        if log_ is None or not log_.length:
            created = yield self._create(name, extra)
            if not created:
                log_ = yield session.log_sync.fetch(name)
        if log_ is not None and log_.length:
            yield self._join_log(name, extra)
        room = session.room(name)
        state = session.logs.get(room.name).state
        room.history, room.epoch = state.history, max(room.epoch, state.epoch)
        if new and room.history != "shared":
            room.last_seq = self._server_last_seq.pop(fold(name), room.last_seq)
        session.save()
        session.emit("joined", room=room.name,
                     role=state.role(session.identity.fingerprint) or "member",
                     epoch=state.epoch, history=state.history, topic=room.topic)
        session.epoch_arrived(room.name)
        if state.epoch and session.keys.key(room.name, state.epoch) is None:
            session.keywaits.request(room.name)
        if new and room.history == "shared":
            # From the beginning, or from where this client was when it left.
            yield session.catch_up(room.name, room.position())
        return room

    @defer.inlineCallbacks
    def _create(self, name: str, extra: list):
        """The room, new, with our genesis; False if someone made it first."""
        session = self._session
        genesis = author.genesis(session.identity, name, session.nick, session.clock.seconds())
        try:
            reply = yield session.request("JOIN", name, "0", b64encode(genesis.data),
                                          b64encode(genesis.signature), *extra)
        except WireError as error:
            if error.code in (Code.LOG_CONFLICT, Code.BAD_ENTRY):
                return False
            raise
        self._note_last_seq(reply)
        session.log_sync.take(name, genesis)
        return True

    @defer.inlineCallbacks
    def _join_log(self, name: str, extra: list):
        session = self._session
        me = session.identity.fingerprint

        def build(state):
            if me in state.members and fold(name) in session.rooms:
                return None
            invite = next((h for h, i in state.invites.items() if i.invitee == me), b"")
            if me in state.banned:
                raise WireError(Code.BANNED, f"you are banned from {name}")
            if state.invite_only and not invite and me not in state.members:
                raise WireError(Code.INVITE_ONLY, f"{name} is invite-only: ask an op to "
                                                  f"invite you")
            return author.join(session.identity, state, session.nick, session.clock.seconds(),
                               invite)

        log_ = session.logs.open(name)
        if me in log_.state.members and fold(name) not in session.rooms:
            # A member by the log whose client forgot the room: the server says so.
            signed = build(log_.state)
            reply = yield session.request("JOIN", name, str(signed.entry.index),
                                          b64encode(signed.data), b64encode(signed.signature),
                                          *extra)
            self._note_last_seq(reply)
            return
        yield session.log_sync.append(name, build, "JOIN", *extra,
                                      on_reply=self._note_last_seq)

    def _note_last_seq(self, reply) -> None:
        for verb, args in reply.lines:
            if verb == "ROOM":
                self._server_last_seq[fold(args["room"])] = args["last_seq"]

    def part_entry(self, state, reason: str | None):
        session = self._session
        if session.identity.fingerprint not in state.members:
            return None
        return author.part(session.identity, state, reason or "", session.clock.seconds())

    @defer.inlineCallbacks
    def part(self, name: str, reason: str | None = None):
        """Leave a room; while offline, the room is left here at once and the
        part goes out after the next login, like a message."""
        session = self._session
        room = session.room(name)
        if not session.live:
            self.parts_waiting[fold(room.name)] = (room.name, reason or "")
            session.drop_room(room.name)
            session.emit("left", room=room.name, how="part", by="",
                         reason="the server is told once reconnected")
            return
        yield session.legacy.upgrade(room)
        yield session.log_sync.append(room.name, lambda state: self.part_entry(state, reason))
        session.drop_room(room.name)

    def configure(self, room: str, setting: str, value: str | None) -> defer.Deferred:
        """Room settings: invite-only is the log's (signed by the owner); the
        password and retention are the server's own."""
        session = self._session
        name = session.room(room).name
        if setting == "invite_only":
            wanted = value in ("on", "yes", "true", "1")
            return session.log_sync.append(
                name, lambda state: None if state.invite_only == wanted else author.policy(
                    session.identity, state, session.clock.seconds(), invite_only=wanted))
        return session.request("SET", name, setting, *([value] if value else []))

    @defer.inlineCallbacks
    def invite(self, room_name: str, nick: str):
        session = self._session
        room = session.room(room_name)
        invitee = yield session.peers.identity_of(nick)
        if invitee is None:
            raise WireError(Code.BAD_KEY, f"{nick}'s identity is in doubt; /verify {nick} first")
        yield session.log_sync.append(room.name, lambda state: author.invite(
            session.identity, state, invitee, nick, session.clock.seconds()))

    @defer.inlineCallbacks
    def kick(self, room_name: str, nick: str, reason: str | None = None, ban: bool = False):
        session = self._session
        room = session.room(room_name)
        state = (yield session.log_sync.fetch(room.name)).state
        target = state.by_nick(nick)
        if target is None and ban:
            identity = yield session.peers.identity_of(nick)
            target = identity.fingerprint if identity is not None else None
        if target is None:
            raise WireError(Code.NOT_MEMBER, f"{nick} is not a member of {room.name}")
        yield session.log_sync.append(room.name, lambda s: None if (
            (target in s.banned) if ban else (target not in s.members)) else author.kick(
                session.identity, s, target, reason or "", session.clock.seconds(), ban=ban))

    @defer.inlineCallbacks
    def unban(self, room_name: str, nick: str):
        session = self._session
        room = session.room(room_name)
        state = (yield session.log_sync.fetch(room.name)).state
        target = next((fp for fp in state.banned
                       if fold(state.names.get(fp, "")) == fold(nick)), None)
        if target is None:
            identity = yield session.peers.identity_of(nick)
            target = identity.fingerprint if identity is not None else None
        if target is None or target not in state.banned:
            raise WireError(Code.NOT_ALLOWED, f"{nick} is not banned from {room.name}")
        yield session.log_sync.append(room.name, lambda s: None if target not in s.banned
                                      else author.unban(session.identity, s, target,
                                                        session.clock.seconds()))

    @defer.inlineCallbacks
    def set_role(self, room_name: str, nick: str, role: str):
        session = self._session
        room = session.room(room_name)
        state = (yield session.log_sync.fetch(room.name)).state
        target = state.by_nick(nick)
        if target is None:
            raise WireError(Code.NOT_MEMBER, f"{nick} is not a member of {room.name}")
        yield session.log_sync.append(room.name, lambda s: None if s.role(target) == role
                                      else author.role(session.identity, s, target, role,
                                                       session.clock.seconds()))

    @defer.inlineCallbacks
    def who(self, room_name: str):
        """The room's members by its log, with the server's word on who is online.
        A name the server lists that the log does not is reported, not shown."""
        session = self._session
        room = session.room(room_name)
        state = (yield session.log_sync.fetch(room.name)).state
        roster = yield session.paged("WHO", room.name)
        listed = {fold(args["nick"]): args for _, args in roster}
        members = [{"nick": m.nick, "role": m.role,
                    "online": bool(listed.get(fold(m.nick), {}).get("online")),
                    "verified": session.pins.verified(m.nick),
                    "identity_changed": session.pins.has_change(m.nick)}
                   for m in sorted(state.members.values(), key=lambda m: fold(m.nick))]
        ghosts = sorted(args["nick"] for key, args in listed.items()
                        if state.by_nick(key) is None)
        if ghosts:
            session.emit("warning", room=room.name,
                         message=f"the server lists {', '.join(ghosts)} in {room.name}, but "
                                 f"the room's log has no such member: not shown, given no key")
        return members

    def room_code(self, room_name: str) -> str:
        """The room's code, for members to compare like a safety number."""
        session = self._session
        room = session.room(room_name)
        log_ = session.logs.get(room.name)
        if log_ is None or not log_.length:
            raise WireError(Code.NO_LOG, f"{room.name} has no signed log yet")
        code = log_.state.room_code()
        session.emit("room_code", room=room.name, code=code, entries=log_.length,
                     message=f"room code of {room.name} at entry {log_.length}: {code}. "
                             f"Members who see the same code at the same entry are shown "
                             f"the same room")
        return code
