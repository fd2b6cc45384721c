# -*- test-case-name: tests.test_client_session -*-
"""Whom a client trusts: pinned identities, and which members of a room may
be given its keys or may make its epochs (see docs/security.md)."""

from twisted.internet import defer

from securechat.client.pins import CHANGED, HELD, NEW
from securechat.client.state import LocalRoom
from securechat.crypto.identity import (
    IdentityError,
    PublicIdentity,
    format_safety_number,
    safety_number,
    verify_invite,
)
from securechat.crypto.roomkeys import member_set_hash
from securechat.names import fold
from securechat.wire import Code, WireError


class MembershipTrust:
    """Part of L{securechat.client.session.ClientSession}; see there for the state
    it uses."""

    def identity_of(self, nick: str) -> defer.Deferred:
        """The pinned identity of C{nick}, fetching and pinning it on first sight."""
        pinned = self.pins.pinned(nick)
        if pinned is not None:
            return defer.succeed(pinned)

        def fetch():
            d = self.request("USERKEYS", nick, process=False)
            return d.addCallback(lambda reply: self._observe(nick, reply.lines[0][1]))

        return self._fetching.run(fold(nick), fetch)

    def _observe(self, nick: str, keys: dict) -> PublicIdentity | None:
        """Pin or compare an identity the server presented; @return: it if usable."""
        try:
            identity = PublicIdentity.from_wire(keys["sign_key"], keys["enc_key"],
                                                keys["enc_signature"])
        except IdentityError as error:
            self.emit("verification_failed", nick=nick, reason=f"unusable keys: {error}")
            return None
        status = self.pins.observe(nick, identity)
        if status == NEW:
            self.save()
        elif status == HELD:
            return None
        elif status == CHANGED:
            self.save()
            self.emit("identity_changed", nick=nick,
                      message=f"{nick}'s identity key changed. Until you accept it with "
                              f"/accept {nick}, you send them no keys and their new "
                              f"signatures are not trusted; compare safety numbers first.")
            return None
        return self.pins.usable(nick)

    def verify(self, nick: str) -> defer.Deferred:
        d = self.identity_of(nick)

        def show(identity):
            if identity is None:
                raise WireError(Code.NO_SUCH_USER, f"no usable identity for {nick}")
            number = safety_number(self.identity.public, self.nick, identity, nick)
            self.emit("safety_number", nick=nick, number=format_safety_number(number),
                      changed=self.pins.has_change(nick))
            return number

        return d.addCallback(show)

    def accept(self, nick: str) -> bool:
        accepted = self.pins.accept_change(nick)
        self.save()
        self.emit("identity_accepted" if accepted else "notice", nick=nick,
                  message=f"now trusting {nick}'s new key" if accepted
                  else f"{nick}'s key has not changed")
        return accepted

    @defer.inlineCallbacks
    def _members(self, room: LocalRoom):
        """WHO, page by page, with each member's identity checked against our pins."""
        members = {}
        for _, args in (yield self.paged("WHO", room.name)):
            identity = self._observe(args["nick"], args)
            members[fold(args["nick"])] = {**args, "identity": identity}
        self._vouch(room, members)
        return members

    def _vouch(self, room: LocalRoom, members: dict) -> None:
        """Extend the vouched set from what we can check ourselves."""
        room.vouched.add(fold(self.nick))
        if not room.invite_only or not room.roster_pinned:
            room.vouched.update(members)
            room.roster_pinned = True
            return
        own = members.get(fold(self.nick))
        if own is not None and own.get("inviter"):
            inviter = members.get(fold(own["inviter"]))
            if inviter is not None and self._invite_valid(room, inviter, own):
                room.vouched.add(fold(own["inviter"]))
        changed = True
        while changed:
            changed = False
            for key, member in members.items():
                if key in room.vouched or not member.get("inviter"):
                    continue
                inviter = members.get(fold(member["inviter"]))
                if (inviter is not None and fold(member["inviter"]) in room.vouched
                        and inviter["role"] in ("op", "owner")
                        and self._invite_valid(room, inviter, member)):
                    room.vouched.add(key)
                    changed = True

    @staticmethod
    def _invite_valid(room: LocalRoom, inviter: dict, member: dict) -> bool:
        return (inviter["identity"] is not None and member["identity"] is not None
                and verify_invite(inviter["identity"], member["invite_signature"] or b"",
                                  room.name, member["nick"], member["identity"]))

    def _refusal(self, room: LocalRoom, members: dict, nick: str):
        """Why we must not give C{nick} the key of C{room}, or None."""
        member = members.get(fold(nick))
        if member is None:
            return "not_member", f"{nick} is not in {room.name}"
        if member["identity"] is None:
            return "identity_changed", f"{nick}'s identity key changed and is not accepted yet"
        if room.invite_only and fold(nick) not in room.vouched:
            return "not_invited", f"{nick} has no valid invite signed by a trusted op of {room.name}"
        if self.verified_only and fold(nick) != fold(self.nick) and not self.pins.verified(nick):
            return "unverified", (f"{self.nick} shares keys only with verified members; "
                                  f"compare safety numbers with /verify {self.nick}")
        return None

    def _vouch_member_set(self, room: LocalRoom, epoch: int, members: dict) -> None:
        """A trusted rotator signed the member set of this epoch: if it is the set
        the server shows now, all of them are members we may trust."""
        signed = self.keys.record(room.name, epoch)
        present = [m for m in members.values() if m["identity"] is not None]
        if signed and member_set_hash(m["identity"].fingerprint for m in present) \
                == signed.record.members:
            room.vouched.update(fold(m["nick"]) for m in present)

