# -*- test-case-name: tests.test_client_rotation -*-
"""Room keys on the move: making a room's next epoch, handing the current
key to a member who lacks it, and answering the server's requests to.

A new epoch goes to exactly the members the log names at the entry it
follows and whom this user trusts; its wraps are handed over first (WRAPS)
and the entry appended with them (ROTATE), so the server stores the epoch
and every wrap it promised together or not at all. In a shared room the
epoch carries the key before it, so a rotator that lacks that key asks for
it first: it never cuts the room's shared history while a member holds it.
"""

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger

from securechat.client.state import SharedOperations
from securechat.constants import REKEY_STAGGER_SECONDS
from securechat.crypto.roomkeys import wrap_key
from securechat.names import fold
from securechat.roomlog import author
from securechat.wire import Code, WireError, b64encode
from securechat.wire.grammar import WRAPS_PER_LINE

log = Logger()

# Times a rotation is built again after another entry took its place.
ROTATE_ATTEMPTS = 5



class KeyFirst(WireError):
    """A rotation that must wait for the current key (shared history)."""

    def __init__(self, room: str, epoch: int):
        super().__init__("KEY_FIRST", f"{room} shares its history: a new key must carry "
                                      f"epoch {epoch}'s, which this client is still waiting for")


class Rotator:
    """Epochs and key hand-overs for one L{securechat.client.session.ClientSession}."""

    def __init__(self, session):
        self._session = session
        self._rotating = SharedOperations()
        self._rekey_calls: dict[str, object] = {}
        # (room, member) hand-overs under way, so a busy outbox starts each once.
        self._sharing: set[tuple[str, bytes]] = set()

    def __contains__(self, room: str) -> bool:
        """Whether a rotation of C{room} is under way."""
        return fold(room) in self._rotating

    def cancel(self) -> None:
        for call in self._rekey_calls.values():
            if call.active():
                call.cancel()
        self._rekey_calls.clear()

    # -- when a room needs a new key ---------------------------------------------------

    def needed(self, state) -> str | None:
        """Why the room must get a new epoch before anything is sent, or None."""
        session = self._session
        if session.identity.fingerprint not in state.members:
            return None
        if not state.epoch:
            return "the room's log has no key yet" if state.legacy_epoch else "first key"
        stale = state.stale_holders()
        if stale:
            gone = sorted(state.names.get(fp, "someone") for fp in stale)
            return f"{', '.join(gone)} no longer {'is' if len(gone) == 1 else 'are'} a member"
        made_by = state.current().author
        nick = state.names.get(made_by, "")
        if not session.peers.accepted(nick, made_by):
            return f"the current key was made by a key of {nick} you have not accepted"
        if not state.shareable(state.epoch):
            me = session.identity.fingerprint
            lacking = sorted(state.members[fp].nick for fp in self.lacking(state) if fp != me)
            if me in self.lacking(state) and state.current().index < session.member_since(state):
                # A newcomer who wants to send makes the key that includes them;
                # one left out of a key made since they joined was left out on
                # purpose (their key not accepted), and asks instead.
                return "a key that includes me" if not lacking else \
                    f"a key that includes me and {', '.join(lacking)}"
            if lacking:
                return f"{', '.join(lacking)} {'has' if len(lacking) == 1 else 'have'} no key"
        return None

    def lacking(self, state) -> list[bytes]:
        """Members this user trusts whom the current key was not given to."""
        peers = self._session.peers
        return [fp for fp in state.lacking() if peers.trusted(state.members[fp].nick, fp) is None]

    def share_missing(self, room: str, state) -> None:
        """In a room sharing its history, hand the current key to the trusted
        members who lack it (a member just accepted, say), in the background."""
        session = self._session
        me = session.identity.fingerprint
        if not state.shareable(state.epoch) or not state.holds(me, state.epoch) \
                or session.keys.key(room, state.epoch) is None:
            return
        for fp in self.lacking(state):
            if (fold(room), fp) not in self._sharing:
                self._sharing.add((fold(room), fp))
                d = self._share(room, state.epoch, fp).addErrback(self._request_gone)
                d.addBoth(lambda _, key=(fold(room), fp): self._sharing.discard(key))

    def removal_seen(self, room: str, state, remover: bytes | None) -> None:
        """A member left: if this client holds the current key, re-key in turn."""
        session = self._session
        me = session.identity.fingerprint
        if not state.holds(me, state.epoch) or not self.needed(state):
            return
        holders = sorted(fp for fp in state.holders.get(state.epoch, ()) if fp in state.members)
        rank = 0 if remover == me else holders.index(me) + (remover in holders)
        key = fold(room)
        previous = self._rekey_calls.pop(key, None)
        if previous is not None and previous.active():
            previous.cancel()
        self._rekey_calls[key] = session.clock.callLater(
            rank * REKEY_STAGGER_SECONDS, self._rekey_now, room)

    def _rekey_now(self, room: str) -> None:
        self._rekey_calls.pop(fold(room), None)
        log_ = self._session.logs.get(room)
        if log_ is None or fold(room) not in self._session.rooms:
            return
        reason = self.needed(log_.state)
        if reason is not None:
            self.start(room, reason)

    def start(self, room: str, reason: str, automatic: bool = True) -> defer.Deferred:
        """Rotate in the background; a failure is told, never raised.

        @param automatic: see L{rotate}; False for reasons the log does not
            show (the key carried its share of messages, the server asks).
        """
        return self.rotate(room, reason, automatic=automatic).addErrback(self._failed, room)

    def _failed(self, failure, room: str) -> None:
        if failure.check(ConnectionLost, KeyFirst):
            return
        self._session.rotation_failed(room, failure)

    # -- rotating -----------------------------------------------------------------------

    def rotate(self, room: str, reason: str = "requested", history: str | None = None,
               automatic: bool = False) -> defer.Deferred:
        """Make the room's next epoch (concurrent calls share one).

        @param history: a new history policy, appended (by the owner) first.
        @param automatic: done only while the room still needs it (see
            L{needed}); a rotation the user asked for is done regardless.
        @return: a Deferred firing with the room's epoch after it.
        """
        session = self._session
        name = session.room(room).name
        d = self._rotating.run(fold(name), lambda: self._rotate(name, reason, history,
                                                                automatic))
        return d.addBoth(session.rotation_over)

    @defer.inlineCallbacks
    def _rotate(self, room: str, reason: str, history: str | None, automatic: bool):
        session = self._session
        if history is not None:
            yield session.log_sync.append(room, lambda state: None if state.history == history
                                          else author.policy(session.identity, state,
                                                             session.clock.seconds(),
                                                             history=history))
        start = (yield session.log_sync.fetch(room)).state.epoch
        for _ in range(ROTATE_ATTEMPTS):
            log_ = session.logs.open(room)
            state = log_.state
            if automatic and self.needed(state) is None:
                return state.epoch
            if not automatic and state.epoch > start:
                # Someone else's new epoch crossed ours: the key is new all the same.
                return state.epoch
            try:
                yield self._attempt(room, state, reason)
            except WireError as error:
                if error.code not in (Code.LOG_CONFLICT, Code.WRAPS_MISSING):
                    raise
                yield session.log_sync.fetch(room)
                continue
            return session.logs.open(room).state.epoch
        raise WireError(Code.LOG_CONFLICT, f"{room}'s log kept moving; try /rotate again")

    def recipients(self, state) -> list:
        """The members a new epoch goes to: every member this user trusts, and itself."""
        peers = self._session.peers
        return [state.keys[fp] for fp, member in sorted(state.members.items())
                if peers.trusted(member.nick, fp) is None]

    @defer.inlineCallbacks
    def _attempt(self, room: str, state, reason: str):
        session = self._session
        me = session.identity
        if me.fingerprint not in state.members:
            raise WireError(Code.NOT_MEMBER, f"you are not a member of {room} by its log")
        if session.log_sync.forked(room):
            raise session.log_sync.forked(room)
        previous = session.keys.key(room, state.epoch) if state.chains() else None
        if state.chains() and previous is None:
            holders = set(state.holders.get(state.epoch, ())) & set(state.members)
            if holders - {me.fingerprint}:
                session.keywaits.request(room)
                raise KeyFirst(room, state.epoch)
        recipients = self.recipients(state)
        key, signed, wraps = author.epoch(me, state, recipients, reason,
                                          session.clock.seconds(), previous)
        number = signed.entry.body["epoch"]
        others = sorted((fp, wrap) for fp, wrap in wraps.items() if fp != me.fingerprint)
        for start in range(0, len(others), WRAPS_PER_LINE):
            page = others[start:start + WRAPS_PER_LINE]
            yield session.request("WRAPS", room, str(number),
                                  " ".join(f"{b64encode(fp)}:{b64encode(w)}" for fp, w in page))
        yield session.request("ROTATE", room, str(signed.entry.index), b64encode(signed.data),
                              b64encode(signed.signature), b64encode(wraps[me.fingerprint]),
                              process=False)
        # Ours before the entry is taken, so that it is usable the moment it is.
        session.keys.add_own_key(room, number, key)
        session.log_sync.take(room, signed)
        session.emit("rotated", room=room, epoch=number, reason=reason, members=len(recipients))

    # -- handing the current key on -----------------------------------------------------

    def answer(self, room: str, epoch: int, nick: str) -> defer.Deferred:
        """The server asks us, a holder, for the key of C{room} for C{nick}."""
        session = self._session
        d = session.when_live().addCallback(lambda _: self._answer(room, epoch, nick))
        return d.addErrback(self._request_gone)

    @staticmethod
    def _request_gone(failure):
        """Answered meanwhile (by another holder, or by a rotation), or no longer
        ours to answer: nothing is owed."""
        failure.trap(WireError)
        if failure.value.code not in (Code.NO_SUCH_REQUEST, Code.STALE_EPOCH,
                                      Code.NOT_ALLOWED, Code.LOG_CONFLICT, "KEY_FIRST"):
            return failure
        return None

    @defer.inlineCallbacks
    def _answer(self, room: str, epoch: int, nick: str):
        session = self._session
        if fold(room) not in session.rooms:
            return
        state = (yield session.log_sync.fetch(room)).state
        if epoch != state.epoch:
            # Only the current key is handed out; anything else is stale or forged.
            return
        me = session.identity.fingerprint
        member = state.by_nick(nick)
        refusal = ("not_member", f"{nick} is not a member of {room} by its log") \
            if member is None else session.peers.trusted(nick, member)
        if refusal is None and session.keys.key(room, epoch) is None:
            refusal = ("unavailable", "this member's client does not hold the key")
        if refusal is not None:
            code, text = refusal
            session.emit("key_withheld_by_me", room=room, nick=nick, code=code, message=text)
            yield session.request("WITHHOLD", room, str(epoch), nick, code, text)
            return
        key = session.keys.key(room, epoch)
        if state.holds(member, epoch):
            # The log gave them this key; the server lost or spoiled their copy.
            yield self._hand(room, epoch, member, key, state)
            return
        if not state.shareable(epoch):
            # A newcomer reads only what follows their join: a new key, not this one.
            yield self.rotate(room, f"{nick} joined", automatic=False)
            return
        if state.holds(me, epoch):
            yield self._share(room, epoch, member)

    @defer.inlineCallbacks
    def _share(self, room: str, epoch: int, member: bytes):
        """A share entry handing C{member} the current key, then its wrap."""
        session = self._session
        key = session.keys.key(room, epoch)
        shared = yield session.log_sync.append(
            room, lambda s: None if s.epoch != epoch or s.holds(member, epoch)
            or member not in s.members else author.share(session.identity, s, member,
                                                         session.clock.seconds()))
        state = shared.state
        if state.epoch == epoch and state.holds(member, epoch):
            yield self._hand(room, epoch, member, key, state)
            session.emit("key_shared", room=room, nick=state.members[member].nick, epoch=epoch)

    def _hand(self, room: str, epoch: int, member: bytes, key: bytes, state) -> defer.Deferred:
        wrap = wrap_key(key, state.keys[member], state.room, epoch)
        return self._session.request("HANDOVER", room, str(epoch),
                                     f"{b64encode(member)}:{b64encode(wrap)}")

