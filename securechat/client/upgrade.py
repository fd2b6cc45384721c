# -*- test-case-name: tests.test_client_upgrade -*-
"""Rooms from before the signed logs get one, without losing anything.

The first member back online after the daemon's upgrade writes the room's
first entry, an upgrade genesis: their own role and the epoch the room had
reached, so the keys of its history stay what they were. They then admit
the room's other members, each with the key this client has pinned for
them (the trust the room had until now), and make the first epoch of the
log. Every other member fetches the log and checks it like any other.
"""

from twisted.internet import defer

from securechat.client.state import LocalRoom, SharedOperations
from securechat.crypto.identity import IdentityError, PublicIdentity
from securechat.names import fold
from securechat.roomlog import author
from securechat.wire import Code, WireError, b64encode


class LegacyRooms:
    """Moves rooms to signed logs, for one session."""

    def __init__(self, session):
        self._session = session
        self._running = SharedOperations()

    def admitting(self, state) -> bool:
        """Whether we wrote this room's upgrade and have members left to admit."""
        return state.admitting and state.upgrade_author == self._session.identity.fingerprint

    def upgrade(self, room: LocalRoom) -> defer.Deferred:
        """Give C{room} a log if it has none (once at a time); fires with its log."""
        return self._running.run(fold(room.name), lambda: self._upgrade(room))

    @defer.inlineCallbacks
    def _upgrade(self, room: LocalRoom):
        session = self._session
        log_ = yield session.log_sync.fetch(room.name)
        if log_.length and not self.admitting(log_.state):
            return log_
        if not log_.length:
            genesis = author.genesis(
                session.identity, room.name, session.nick, session.clock.seconds(),
                invite_only="invite_only" in room.flags,
                history="shared" if "shared" in room.flags else "joined",
                role=room.role, legacy_epoch=room.epoch, upgrade=True)
            try:
                yield session.request("APPEND", room.name, "0", b64encode(genesis.data),
                                      b64encode(genesis.signature))
            except WireError as error:
                if error.code != Code.LOG_CONFLICT:
                    raise
                # Another member wrote it first: theirs to finish.
                return (yield session.log_sync.fetch(room.name))
            session.log_sync.take(room.name, genesis)
            session.emit("notice", room=room.name,
                         message=f"{room.name} now has a signed log; its members are admitted "
                                 f"with the keys this client knows them by")
        yield self._admit_all(room)
        session.rotator.start(room.name, "the room moved to a signed log")
        return session.logs.open(room.name)

    @defer.inlineCallbacks
    def _admit_all(self, room: LocalRoom):
        session = self._session
        roster = yield session.paged("WHO", room.name)
        for _, member in roster:
            nick = member["nick"]
            try:
                identity = PublicIdentity.from_wire(member["sign_key"], member["enc_key"],
                                                    member["enc_signature"])
            except IdentityError:
                continue
            if fold(nick) == fold(session.nick):
                continue
            session.peers.meet(nick, identity, room.name)
            if not session.peers.accepted(nick, identity.fingerprint):
                session.emit("notice", room=room.name,
                             message=f"{nick} is not admitted to {room.name}'s log: their key "
                                     f"is not the one you know them by; they can join again")
                continue
            yield session.log_sync.append(room.name, lambda state, n=nick, i=identity, r=member[
                "role"]: None if not state.admitting or i.fingerprint in state.members
                else author.admit(session.identity, state, n, i, r, session.clock.seconds()))
