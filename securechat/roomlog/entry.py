# -*- test-case-name: tests.test_roomlog -*-
"""One entry of a room's signed log: its canonical bytes, its hash, and the
signature of the member who made it.

Every change to a room's membership, roles, policy and keys is an entry.
Each names the hash of the entry before it, so the log is a chain, and is
signed by its author's identity key, so the server that stores and orders
the log cannot make or alter one. Pure: no I/O.
"""

import base64
import hashlib
import json
from dataclasses import dataclass, field

from securechat.crypto import transcript as ctx
from securechat.crypto.identity import IdentityError, PrivateIdentity, PublicIdentity
from securechat.wire.grammar import MAX_ENTRY_BYTES

LOG_VERSION = 1

# What chains the genesis entry: there is no entry before it.
NO_ENTRY = b"\x00" * 32

# Every kind of entry, and who may make it (see securechat.roomlog.state).
GENESIS, ADMIT, JOIN, INVITE, PART, KICK, BAN, UNBAN = (
    "genesis", "admit", "join", "invite", "part", "kick", "ban", "unban")
ROLE, POLICY, EPOCH, SHARE, REKEY = "role", "policy", "epoch", "share", "rekey"
KINDS = (GENESIS, ADMIT, JOIN, INVITE, PART, KICK, BAN, UNBAN, ROLE, POLICY, EPOCH, SHARE, REKEY)

ROLES = ("owner", "op", "member")

# An epoch entry names each recipient's fingerprint (47 bytes of JSON): what
# an entry may take, less the rest of the largest epoch entry, bounds how
# many members a room may have.
_EPOCH_ENTRY_OVERHEAD = 2048
MAX_ROOM_MEMBERS = (MAX_ENTRY_BYTES - _EPOCH_ENTRY_OVERHEAD) // 47
HISTORY_POLICIES = ("joined", "shared")


class LogError(Exception):
    """An entry that cannot be part of the log; C{reason} says why, for people."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def unb64(text) -> bytes:
    if not isinstance(text, str):
        raise LogError("a binary field is not a string")
    try:
        return base64.urlsafe_b64decode(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise LogError("a binary field is not base64") from None


def keys_body(identity: PublicIdentity) -> dict:
    """A member's public keys as an entry carries them."""
    return {"sign": b64(identity.sign_der), "enc": b64(identity.enc_der),
            "enc_sig": b64(identity.enc_signature)}


def identity_of(keys) -> PublicIdentity:
    """The identity an entry's C{keys} field names, checked (sizes, subkey signature)."""
    if not isinstance(keys, dict) or set(keys) != {"sign", "enc", "enc_sig"}:
        raise LogError("malformed keys")
    try:
        return PublicIdentity.from_wire(unb64(keys["sign"]), unb64(keys["enc"]),
                                        unb64(keys["enc_sig"]))
    except IdentityError as error:
        raise LogError(f"unusable keys: {error}") from None


@dataclass(frozen=True)
class LogEntry:
    """An entry, as signed. C{body} holds the kind's own fields, JSON values
    only (binary as base64url), so that the encoding is canonical."""

    room: str
    index: int
    prev: bytes
    kind: str
    author: bytes
    time: int
    body: dict = field(default_factory=dict)

    def encode(self) -> bytes:
        """Canonical bytes: what is signed, hashed, stored and sent."""
        return json.dumps({"v": LOG_VERSION, "room": self.room, "index": self.index,
                           "prev": b64(self.prev), "kind": self.kind, "author": b64(self.author),
                           "time": self.time, "body": self.body},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> "LogEntry":
        """@raise LogError: for anything but the canonical encoding of an entry."""
        try:
            fields = json.loads(data)
            entry = cls(fields["room"], fields["index"], unb64(fields["prev"]), fields["kind"],
                        unb64(fields["author"]), fields["time"], fields["body"])
            version = fields["v"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise LogError("malformed log entry") from None
        if (version != LOG_VERSION or type(entry.index) is not int or entry.index < 0
                or type(entry.time) is not int or not isinstance(entry.room, str)
                or entry.kind not in KINDS or not isinstance(entry.body, dict)
                or len(entry.prev) != 32 or len(entry.author) != 32
                or entry.encode() != data):
            raise LogError("malformed log entry")
        return entry

    def hash(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    def sign(self, identity: PrivateIdentity) -> bytes:
        return identity.sign(ctx.ROOM_LOG, self.encode())

    def verify(self, signature: bytes, author: PublicIdentity) -> bool:
        return author.fingerprint == self.author and author.verify(
            signature, ctx.ROOM_LOG, self.encode())


@dataclass(frozen=True)
class SignedEntry:
    """An entry with its signature: what the server stores and sends."""

    entry: LogEntry
    signature: bytes

    @property
    def data(self) -> bytes:
        return self.entry.encode()

    @classmethod
    def decode(cls, data: bytes, signature: bytes) -> "SignedEntry":
        return cls(LogEntry.decode(data), signature)


def make(identity: PrivateIdentity, room: str, index: int, prev: bytes, kind: str, now: int,
         **body) -> SignedEntry:
    """A new entry by C{identity}, signed."""
    entry = LogEntry(room, index, prev, kind, identity.fingerprint, int(now), body)
    return SignedEntry(entry, entry.sign(identity))
