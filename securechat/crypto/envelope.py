# -*- test-case-name: tests.test_envelope -*-
"""Messages: a padded envelope encrypted with the epoch's Fernet key and
signed by its sender.

Fernet alone proves only that *some* key holder wrote a token; the RSA-PSS
signature names the sender, and the envelope repeats the signed fields so a
token cannot be re-signed under another name or moved to another room,
epoch or position without the receiver noticing.
"""

import base64
import hashlib
import json
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken

from securechat.constants import PAD_BUCKET
from securechat.crypto import transcript as ctx
from securechat.crypto.identity import PrivateIdentity, PublicIdentity
from securechat.wire.codec import b64decode, b64encode
from securechat.wire.grammar import MAX_TOKEN_BYTES

# Version 3 names the sender's room log (its length and head) beside the
# fields it signs, so that a server showing members different logs is
# caught by the first message that crosses between them; its binary fields
# are base64url, so that a short message still fits one padding bucket. Version 2 carries
# the body as raw UTF-8 after a JSON header line, so a body's size is its
# size: version 1 escaped it inside the JSON, where a newline took two bytes
# and a control character six. Versions 1 and 2, stored before, are still read.
ENVELOPE_VERSION = 3
_VERSION_1, _VERSION_2 = 1, 2

# What Fernet adds to a plaintext that is a whole number of AES blocks: a
# version byte, a timestamp, an IV and an HMAC (57 bytes), and a block of
# PKCS7 padding.
_FERNET_OVERHEAD = 1 + 8 + 16 + 32 + 16

# The longest header: the longest room name and the largest numbers.
_WORST_HEADER = {"v": ENVELOPE_VERSION, "room": "#" + "x" * 32, "epoch": 2**63 - 1,
                 "sender": "f" * 43, "seq": 2**63 - 1, "id": "f" * 22, "ts": 2**63 - 1,
                 "n": 10**9 - 1, "log": 2**63 - 1, "head": "f" * 43}


class EnvelopeError(Exception):
    """A message that must not be shown; C{reason} says why, for the user."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MessageHeader:
    """The fields that travel in clear beside the token, and are signed."""

    room: str
    epoch: int
    seq: int
    message_id: bytes


@dataclass(frozen=True)
class LogPosition:
    """Where the sender's copy of the room's log stood: its length and the
    hash of its last entry."""

    length: int
    head: bytes


@dataclass(frozen=True)
class Envelope:
    """A decrypted, verified message. C{log} is None in envelopes from before
    the room logs (versions 1 and 2)."""

    header: MessageHeader
    sender: bytes
    timestamp: int
    body: str
    log: LogPosition | None = None


def _signed_fields(header: MessageHeader, sender: bytes, token: bytes):
    return (header.room, header.epoch, sender, header.seq, header.message_id,
            hashlib.sha256(token).digest())


def _header_line(fields: dict) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode("ascii") + b"\n"


def largest_body(max_token_bytes: int) -> int:
    """The most UTF-8 bytes a body may have for its token to be at most
    C{max_token_bytes}, whatever the room, counters and clock: the largest
    message a user may send."""
    plain = (max_token_bytes - _FERNET_OVERHEAD) // PAD_BUCKET * PAD_BUCKET
    return max(0, plain - len(_header_line(_WORST_HEADER)))


# The largest message body, in UTF-8 bytes, that this client seals and this
# server stores: what the line limit leaves for a token, less the envelope.
MAX_MESSAGE_BYTES = largest_body(MAX_TOKEN_BYTES)


def token_size(body_bytes: int) -> int:
    """An upper bound on the token of a body of C{body_bytes} (for pacing)."""
    plain = len(_header_line(_WORST_HEADER)) + body_bytes
    return -(-plain // PAD_BUCKET) * PAD_BUCKET + _FERNET_OVERHEAD


def seal(room_key: bytes, identity: PrivateIdentity, header: MessageHeader, body: str,
         timestamp: int, log: LogPosition, max_body: int | None = None) -> tuple[bytes, bytes]:
    """Encrypt and sign one message.

    @param log: the sender's log of the room as it stood when sealing.
    @param max_body: refuse a longer body (UTF-8 bytes), if given.
    @return: (token, signature); the token is the raw Fernet token bytes.
    """
    encoded_body = body.encode("utf-8")
    if max_body is not None and len(encoded_body) > max_body:
        raise ValueError(f"message body is over {max_body} bytes")
    head = _header_line({
        "v": ENVELOPE_VERSION,
        "room": header.room,
        "epoch": header.epoch,
        "sender": b64encode(identity.fingerprint),
        "seq": header.seq,
        "id": b64encode(header.message_id),
        "ts": timestamp,
        "n": len(encoded_body),
        "log": log.length,
        "head": b64encode(log.head),
    })
    plain = head + encoded_body
    plain += b"\0" * (-len(plain) % PAD_BUCKET)
    token = base64.urlsafe_b64decode(Fernet(room_key).encrypt(plain))
    signature = identity.sign(ctx.MESSAGE, *_signed_fields(header, identity.fingerprint, token))
    return token, signature


def verify_signature(sender: PublicIdentity, header: MessageHeader, token: bytes,
                     signature: bytes) -> None:
    """Check a message's signature alone: possible before its key has arrived."""
    if not sender.verify(signature, ctx.MESSAGE, *_signed_fields(header, sender.fingerprint, token)):
        raise EnvelopeError("signature does not verify")


def open_sealed(room_key: bytes, sender: PublicIdentity, header: MessageHeader, token: bytes,
                signature: bytes) -> Envelope:
    """Verify, decrypt and cross-check one message.

    @raise EnvelopeError: with a reason fit to show the user.
    """
    verify_signature(sender, header, token, signature)
    try:
        plain = Fernet(room_key).decrypt(base64.urlsafe_b64encode(token))
    except InvalidToken:
        raise EnvelopeError("token does not decrypt with the epoch's key") from None
    try:
        fields, body = _unpack(plain)
        inner = (fields["room"], fields["epoch"], fields["sender"], fields["seq"], fields["id"],
                 fields["ts"])
    except (ValueError, KeyError, TypeError):
        raise EnvelopeError("malformed envelope") from None
    if fields.get("v") == ENVELOPE_VERSION:
        expected = (header.room, header.epoch, b64encode(sender.fingerprint), header.seq,
                    b64encode(header.message_id))
    else:
        expected = (header.room, header.epoch, sender.fingerprint.hex(), header.seq,
                    header.message_id.hex())
    if inner[:5] != expected:
        raise EnvelopeError("envelope does not match its signed fields")
    if not isinstance(inner[5], int) or not isinstance(body, str):
        raise EnvelopeError("malformed envelope")
    try:
        position = _position(fields)
    except (ValueError, KeyError, TypeError):
        raise EnvelopeError("malformed envelope") from None
    return Envelope(header, sender.fingerprint, inner[5], body, position)


def _position(fields: dict) -> LogPosition | None:
    if fields["v"] != ENVELOPE_VERSION:
        return None
    length, head = fields["log"], b64decode(fields["head"])
    if type(length) is not int or length < 0 or len(head) != 32:
        raise ValueError("bad log position")
    return LogPosition(length, head)


def _unpack(plain: bytes) -> tuple[dict, str]:
    """The header fields and the body of a decrypted envelope of either version.

    @raise ValueError: for anything else (KeyError, TypeError for missing or
        mistyped fields).
    """
    head, newline, rest = plain.partition(b"\n")
    fields = json.loads(head)
    if fields["v"] == _VERSION_1 and not newline:
        return fields, fields["body"]
    if fields["v"] not in (_VERSION_2, ENVELOPE_VERSION) or not newline:
        raise ValueError("unknown envelope version")
    size = fields["n"]
    if not isinstance(size, int) or not 0 <= size <= len(rest) or rest[size:].strip(b"\0"):
        raise ValueError("body size does not match")
    return fields, rest[:size].decode("utf-8")
