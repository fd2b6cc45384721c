# -*- test-case-name: tests.test_roomlog -*-
"""Making entries: what a member signs to change a room, at the end of the
log as it knows it. Each function returns the next entry of C{state}'s
log, signed by C{identity}; appending it is the server's business, and
checking it everybody's (L{securechat.roomlog.state})."""

from cryptography.fernet import Fernet

from securechat.crypto.identity import PrivateIdentity, PublicIdentity
from securechat.crypto.roomkeys import key_id, new_room_key, wrap_key
from securechat.roomlog.entry import (
    ADMIT,
    BAN,
    EPOCH,
    GENESIS,
    INVITE,
    JOIN,
    KICK,
    NO_ENTRY,
    PART,
    POLICY,
    REKEY,
    ROLE,
    SHARE,
    UNBAN,
    SignedEntry,
    b64,
    keys_body,
    make,
)
from securechat.roomlog.state import RoomState


def _next(identity: PrivateIdentity, state: RoomState, kind: str, now: float,
          **body) -> SignedEntry:
    return make(identity, state.room, state.length, state.head, kind, now, **body)


def genesis(identity: PrivateIdentity, room: str, nick: str, now: float,
            invite_only: bool = False, history: str = "joined", role: str = "owner",
            legacy_epoch: int = 0, upgrade: bool = False) -> SignedEntry:
    """A new room (or, with C{upgrade}, a room from before the log)."""
    return make(identity, room, 0, NO_ENTRY, GENESIS, now, nick=nick,
                keys=keys_body(identity.public), role=role, invite_only=invite_only,
                history=history, legacy_epoch=legacy_epoch, upgrade=upgrade)


def admit(identity: PrivateIdentity, state: RoomState, nick: str, member: PublicIdentity,
          role: str, now: float) -> SignedEntry:
    return _next(identity, state, ADMIT, now, nick=nick, keys=keys_body(member), role=role)


def join(identity: PrivateIdentity, state: RoomState, nick: str, now: float,
         invite: bytes = b"") -> SignedEntry:
    return _next(identity, state, JOIN, now, nick=nick, keys=keys_body(identity.public),
                 invite=b64(invite) if invite else "")


def invite(identity: PrivateIdentity, state: RoomState, invitee: PublicIdentity, nick: str,
           now: float) -> SignedEntry:
    return _next(identity, state, INVITE, now, invitee=b64(invitee.fingerprint), nick=nick)


def part(identity: PrivateIdentity, state: RoomState, reason: str, now: float) -> SignedEntry:
    return _next(identity, state, PART, now, reason=reason)


def kick(identity: PrivateIdentity, state: RoomState, target: bytes, reason: str, now: float,
         ban: bool = False) -> SignedEntry:
    return _next(identity, state, BAN if ban else KICK, now, target=b64(target), reason=reason)


def unban(identity: PrivateIdentity, state: RoomState, target: bytes, now: float) -> SignedEntry:
    return _next(identity, state, UNBAN, now, target=b64(target))


def role(identity: PrivateIdentity, state: RoomState, target: bytes, new_role: str,
         now: float) -> SignedEntry:
    return _next(identity, state, ROLE, now, target=b64(target), role=new_role)


def policy(identity: PrivateIdentity, state: RoomState, now: float,
           invite_only: bool | None = None, history: str | None = None) -> SignedEntry:
    return _next(identity, state, POLICY, now,
                 invite_only=state.invite_only if invite_only is None else invite_only,
                 history=history or state.history)


def share(identity: PrivateIdentity, state: RoomState, recipient: bytes,
          now: float) -> SignedEntry:
    return _next(identity, state, SHARE, now, epoch=state.epoch, recipient=b64(recipient))


def rekey(identity: PrivateIdentity, state: RoomState, old: bytes, nick: str,
          now: float) -> SignedEntry:
    return _next(identity, state, REKEY, now, old=b64(old), nick=nick,
                 keys=keys_body(identity.public))


def epoch(identity: PrivateIdentity, state: RoomState, recipients: list[PublicIdentity],
          reason: str, now: float, previous_key: bytes | None = None
          ) -> tuple[bytes, SignedEntry, dict[bytes, bytes]]:
    """A new epoch: its key, its entry and one wrap per recipient (by fingerprint).

    In a shared room the entry carries C{previous_key} under the new one, so
    the newest key unlocks the history; without it, it says that shared
    history restarts here (valid only when no member holds the previous key).
    """
    number = max(state.epoch, state.legacy_epoch) + 1
    key = new_room_key()
    chained = state.chains() and previous_key is not None
    prev_box = Fernet(key).encrypt(previous_key) if chained else b""
    entry = _next(identity, state, EPOCH, now, epoch=number,
                  key_id=b64(key_id(key, state.room, number)),
                  recipients=sorted(b64(r.fingerprint) for r in recipients),
                  prev_box=b64(prev_box), restart=state.chains() and not chained,
                  reason=reason)
    wraps = {r.fingerprint: wrap_key(key, r, state.room, number) for r in recipients}
    return key, entry, wraps
