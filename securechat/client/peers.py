# -*- test-case-name: tests.test_client_peers -*-
"""The people a user shares rooms with: the key each nick was first seen
with, whether the user compared its safety number, and what happens when
a key changes. The rooms' logs say which key a member signs with; this
says whether the user trusts that key to be the person behind the nick.

A new key is an event the user is told of ("compare safety numbers"); a
changed one is told once, prominently, and is not trusted with a key or
believed about one until the user accepts it; one key offered under two
nicks is refused; a verified peer whose key changes blocks sending where
they are until the user decides.
"""

from twisted.internet import defer

from securechat.client.pins import ALIAS, CHANGED, NEW, PinStore
from securechat.crypto.identity import (
    IdentityError,
    PublicIdentity,
    format_safety_number,
    safety_number,
)
from securechat.client.state import SharedOperations
from securechat.names import fold
from securechat.wire import Code, WireError


class Peers:
    """Pinned identities and their verification, for one session.

    @param session: emits events, makes requests, saves.
    """

    def __init__(self, session, pins: PinStore, verified_only: bool):
        self._session = session
        self.pins = pins
        self.verified_only = verified_only
        self._fetching = SharedOperations()
        # The key whose safety number was last shown for each nick: confirming
        # a verification confirms that key, not whatever is pinned by then.
        self._shown: dict[str, bytes] = {}

    # -- meeting keys ------------------------------------------------------------

    def meet(self, nick: str, identity: PublicIdentity, room: str | None = None) -> str:
        """A key shown for C{nick} (by a room's log, or by the server); tell the
        user what it means. @return: the pin status (see L{PinStore.observe})."""
        session = self._session
        if fold(nick) == fold(session.nick) and identity == session.identity.public:
            return "own"
        status = self.pins.observe(nick, identity)
        where = f" in {room}" if room else ""
        if status == NEW:
            session.save()
            if fold(nick) != fold(session.nick):
                session.emit("first_contact", nick=nick, room=room or "",
                             message=f"first contact with {nick}{where}: compare safety "
                                     f"numbers with /verify {nick}")
        elif status == CHANGED:
            session.save()
            session.emit("identity_changed", nick=nick, room=room or "",
                         message=f"{nick}'s identity key changed. Until you accept it, "
                                 f"{nick} gets no room keys from you and keys from that new "
                                 f"key are not used: /verify {nick} to compare the new safety "
                                 f"number with the old, then /accept {nick}")
        elif status == ALIAS:
            owner = self.pins.nick_of(identity.fingerprint)
            session.emit("identity_alias", nick=nick, room=room or "",
                         message=f"{owner}'s key is offered under the nick {nick}{where}; "
                                 f"one person, one nick: it is refused")
        return status

    def identity_of(self, nick: str) -> defer.Deferred:
        """The accepted identity of C{nick}: pinned, else fetched and pinned
        now (trust on first use). Fires None when it is in doubt."""
        usable = self.pins.usable(nick)
        if usable is not None:
            return defer.succeed(usable)
        if self.pins.pinned(nick) is not None:
            return defer.succeed(None)

        def fetch():
            d = self._session.request("USERKEYS", nick, process=False)
            return d.addCallback(lambda reply: self._fetched(nick, reply.lines[0][1]))

        return self._fetching.run(fold(nick), fetch)

    def _fetched(self, nick: str, keys: dict) -> PublicIdentity | None:
        try:
            identity = PublicIdentity.from_wire(keys["sign_key"], keys["enc_key"],
                                                keys["enc_signature"])
        except IdentityError as error:
            self._session.emit("verification_failed", nick=nick, reason=f"unusable keys: {error}",
                               message=f"{nick}'s keys from the server are unusable: {error}")
            return None
        self.meet(nick, identity)
        return self.pins.usable(nick)

    # -- trust ---------------------------------------------------------------------

    def accepted(self, nick: str, fingerprint: bytes) -> bool:
        """Whether C{fingerprint} is the key the user holds to be C{nick}'s."""
        if fingerprint == self._session.identity.fingerprint:
            return True
        pinned = self.pins.pinned(nick)
        return pinned is not None and pinned.fingerprint == fingerprint

    def trusted(self, nick: str, fingerprint: bytes) -> str | None:
        """Why a member with this key must not be given a room key by us, or None."""
        if fingerprint == self._session.identity.fingerprint:
            return None
        if not self.accepted(nick, fingerprint):
            return "identity_changed", (f"{nick}'s key is not the one you accepted for "
                                        f"{nick}; /verify {nick}, then /accept {nick}")
        if self.verified_only and not self.pins.verified(nick):
            return "unverified", (f"{self._session.nick} shares keys only with verified "
                                  f"members; compare safety numbers with "
                                  f"/verify {self._session.nick}")
        return None

    def holding_up(self, state) -> list[str]:
        """Verified members of a room (by its log state) whose key changed since:
        nothing is sent there until the user decides about each."""
        return sorted(m.nick for fp, m in state.members.items()
                      if self.pins.verified_then_changed(m.nick))

    # -- the user's decisions ------------------------------------------------------

    @defer.inlineCallbacks
    def verify(self, nick: str, confirm: bool = False):
        """Show the safety number with C{nick} (and, after a key change, the new
        one beside the old); with C{confirm}, record that the user compared the
        number last shown and it matched. @return: the number shown or confirmed."""
        session = self._session
        if fold(nick) == fold(session.nick):
            raise WireError(Code.BAD_ARGUMENTS, "that is you; /verify someone else")
        if confirm:
            return self._confirm(nick)
        pinned = self.pins.pinned(nick)
        if pinned is None:
            yield self.identity_of(nick)
            pinned = self.pins.pinned(nick)
        if pinned is None:
            raise WireError(Code.NO_SUCH_USER, f"no usable identity for {nick}")
        changed = self.pins.changed(nick)
        shown = changed or pinned
        number = format_safety_number(safety_number(session.identity.public, session.nick,
                                                    shown, nick))
        old = format_safety_number(safety_number(session.identity.public, session.nick,
                                                 pinned, nick)) if changed else ""
        self._shown[fold(nick)] = shown.fingerprint
        session.emit("safety_number", nick=nick, number=number, previous=old,
                     changed=changed is not None, verified=self.pins.verified(nick),
                     message=f"safety number with {nick}: {number}"
                             + (f" (new key; it was {old})" if changed else "")
                             + f". Compare it with {nick} in person; if it matches, "
                               f"/verify {nick} yes")
        return number

    def _confirm(self, nick: str) -> str:
        session = self._session
        shown = self._shown.pop(fold(nick), None)
        if shown is None:
            raise WireError(Code.BAD_ARGUMENTS, f"first /verify {nick} to see the safety "
                                                f"number, then compare it")
        if not self.pins.mark_verified(nick, shown):
            raise WireError(Code.BAD_KEY, f"{nick}'s key changed after the number was shown; "
                                          f"/verify {nick} again")
        session.save()
        session.emit("verified", nick=nick, message=f"{nick} is verified")
        session.trust_changed()
        return nick

    def accept(self, nick: str) -> bool:
        """Trust C{nick}'s new key (unverified) after a change."""
        accepted = self.pins.accept_change(nick)
        session = self._session
        session.save()
        session.emit("identity_accepted" if accepted else "notice", nick=nick,
                     message=f"now trusting {nick}'s new key" if accepted
                     else f"{nick}'s key has not changed")
        if accepted:
            session.trust_changed()
        return accepted
