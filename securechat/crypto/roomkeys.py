# -*- test-case-name: tests.test_roomkeys -*-
"""Room keys: one Fernet key per epoch, wrapped to each member, announced by
a signed epoch record that commits to the key and chains the epochs.

The server stores records and wraps but can do nothing with them: it cannot
unwrap a key, and it cannot forge or alter a record without a member's
identity key.
"""

import base64
import hashlib
import hmac
import json
from dataclasses import asdict, dataclass

from cryptography.fernet import Fernet, InvalidToken

from securechat.constants import KEY_ID_BYTES
from securechat.crypto import transcript as ctx
from securechat.crypto.identity import PrivateIdentity, PublicIdentity

HISTORY_POLICIES = ("joined", "shared")

# Epochs are numbered from 1; 0 means a room has no key yet.
FIRST_EPOCH = 1

# The hash that chains the first epoch record; there is no record before it.
GENESIS_HASH = b"\x00" * 32


class RoomKeyError(Exception):
    """A wrap, record or chained key that does not check out."""


def new_room_key() -> bytes:
    """A fresh Fernet key (32 random bytes, base64url), made by a client."""
    return Fernet.generate_key()


def key_id(room_key: bytes, room: str, epoch: int) -> bytes:
    """A commitment to C{room_key}: members who were handed different keys
    for the same epoch compute different ids, and the record names one."""
    mac = hmac.new(base64.urlsafe_b64decode(room_key), ctx.transcript(ctx.KEY_ID, room, epoch),
                   hashlib.sha256)
    return mac.digest()[:KEY_ID_BYTES]


def wrap_label(room: str, epoch: int, recipient: bytes) -> bytes:
    """The OAEP label of a wrap: a wrap cannot be replayed to another room,
    epoch or member, because decryption under another label fails."""
    return ctx.transcript(ctx.WRAP_LABEL, room, epoch, recipient)


def wrap_key(room_key: bytes, recipient: PublicIdentity, room: str, epoch: int) -> bytes:
    return recipient.encrypt(room_key, wrap_label(room, epoch, recipient.fingerprint))


def unwrap_key(identity: PrivateIdentity, wrapped: bytes, room: str, epoch: int) -> bytes:
    """Recover a room key wrapped to us; RoomKeyError if it was meant elsewhere."""
    try:
        key = identity.decrypt(wrapped, wrap_label(room, epoch, identity.fingerprint))
        Fernet(key)
    except ValueError:
        raise RoomKeyError(f"the key for {room} epoch {epoch} was not wrapped for us") from None
    return key


def member_set_hash(fingerprints) -> bytes:
    """A hash of the member set, independent of order."""
    return hashlib.sha256(ctx.transcript(ctx.MEMBER_SET, *sorted(fingerprints))).digest()


@dataclass(frozen=True)
class EpochRecord:
    """The signed announcement of a room's new epoch.

    @ivar prev_hash: L{hash} of the previous epoch's record (GENESIS_HASH for
        epoch 0), chaining the epochs as MLS does.
    @ivar members: the member set's hash; the rotator wrapped to exactly these.
    @ivar key_id: the commitment to the new key.
    @ivar prev_box: in "shared" rooms, the previous key encrypted under the
        new one, so the newest key unlocks all history; empty otherwise.
    """

    room: str
    epoch: int
    prev_hash: bytes
    members: bytes
    key_id: bytes
    rotator: bytes
    reason: str
    history: str
    created: int
    prev_box: bytes = b""

    def encode(self) -> bytes:
        """Canonical bytes: what is signed, stored and sent."""
        fields = {
            k: base64.urlsafe_b64encode(v).decode() if isinstance(v, bytes) else v
            for k, v in asdict(self).items()
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> "EpochRecord":
        try:
            fields = json.loads(data)
            record = cls(
                room=fields["room"],
                epoch=fields["epoch"],
                prev_hash=base64.urlsafe_b64decode(fields["prev_hash"]),
                members=base64.urlsafe_b64decode(fields["members"]),
                key_id=base64.urlsafe_b64decode(fields["key_id"]),
                rotator=base64.urlsafe_b64decode(fields["rotator"]),
                reason=fields["reason"],
                history=fields["history"],
                created=fields["created"],
                prev_box=base64.urlsafe_b64decode(fields["prev_box"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise RoomKeyError("malformed epoch record") from None
        if (
            type(record.epoch) is not int
            or type(record.created) is not int
            or not all(isinstance(v, str) for v in (record.room, record.reason, record.history))
            or record.epoch < FIRST_EPOCH
            or record.history not in HISTORY_POLICIES
            or record.encode() != data
        ):
            raise RoomKeyError("malformed epoch record")
        return record

    def hash(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    def sign(self, identity: PrivateIdentity) -> bytes:
        return identity.sign(ctx.EPOCH, self.encode())

    def verify(self, signature: bytes, rotator: PublicIdentity) -> bool:
        return rotator.fingerprint == self.rotator and rotator.verify(
            signature, ctx.EPOCH, self.encode()
        )

    def check_key(self, room_key: bytes) -> None:
        """Raise RoomKeyError unless C{room_key} is the key this record commits to."""
        if not hmac.compare_digest(key_id(room_key, self.room, self.epoch), self.key_id):
            raise RoomKeyError(
                f"the key for {self.room} epoch {self.epoch} is not the one its record commits to"
            )

    def previous_key(self, room_key: bytes) -> bytes:
        """In a shared-history room, the previous epoch's key, unlocked by this one."""
        if not self.prev_box:
            raise RoomKeyError(f"{self.room} epoch {self.epoch} does not share earlier history")
        try:
            return Fernet(room_key).decrypt(self.prev_box)
        except InvalidToken:
            raise RoomKeyError("the chained previous key does not decrypt") from None


def new_epoch(
    identity: PrivateIdentity,
    room: str,
    epoch: int,
    previous: EpochRecord | None,
    previous_key: bytes | None,
    members: list[PublicIdentity],
    reason: str,
    history: str,
    now: int,
) -> tuple[bytes, EpochRecord, bytes, dict[bytes, bytes]]:
    """Everything a rotation publishes: the new key, its signed record and one
    wrap per member (by fingerprint). The rotator must be among C{members}.

    @return: (new key, record, record signature, {fingerprint: wrap}).
    """
    if history not in HISTORY_POLICIES:
        raise ValueError(f"history policy must be one of {HISTORY_POLICIES}")
    if identity.fingerprint not in {m.fingerprint for m in members}:
        raise ValueError("the rotator must be a member")
    room_key = new_room_key()
    prev_box = b""
    if history == "shared" and previous_key is not None:
        prev_box = Fernet(room_key).encrypt(previous_key)
    record = EpochRecord(
        room=room,
        epoch=epoch,
        prev_hash=previous.hash() if previous else GENESIS_HASH,
        members=member_set_hash(m.fingerprint for m in members),
        key_id=key_id(room_key, room, epoch),
        rotator=identity.fingerprint,
        reason=reason,
        history=history,
        created=now,
        prev_box=prev_box,
    )
    wraps = {m.fingerprint: wrap_key(room_key, m, room, epoch) for m in members}
    return room_key, record, record.sign(identity), wraps
