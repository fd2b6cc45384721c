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

from securechat.constants import MAX_BODY_BYTES, PAD_BUCKET
from securechat.crypto import transcript as ctx
from securechat.crypto.identity import PrivateIdentity, PublicIdentity

ENVELOPE_VERSION = 1


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
class Envelope:
    """A decrypted, verified message."""

    header: MessageHeader
    sender: bytes
    timestamp: int
    body: str


def _signed_fields(header: MessageHeader, sender: bytes, token: bytes):
    return (header.room, header.epoch, sender, header.seq, header.message_id,
            hashlib.sha256(token).digest())


def seal(room_key: bytes, identity: PrivateIdentity, header: MessageHeader, body: str,
         timestamp: int) -> tuple[bytes, bytes]:
    """Encrypt and sign one message.

    @return: (token, signature); the token is the raw Fernet token bytes.
    """
    encoded_body = body.encode("utf-8")
    if len(encoded_body) > MAX_BODY_BYTES:
        raise ValueError(f"message body is over {MAX_BODY_BYTES} bytes")
    fields = {
        "v": ENVELOPE_VERSION,
        "room": header.room,
        "epoch": header.epoch,
        "sender": identity.fingerprint.hex(),
        "seq": header.seq,
        "id": header.message_id.hex(),
        "ts": timestamp,
        "body": body,
        "pad": "",
    }
    plain = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
    fields["pad"] = "0" * (-len(plain) % PAD_BUCKET)
    plain = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
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
        fields = json.loads(plain)
        inner = (fields["v"], fields["room"], fields["epoch"], fields["sender"], fields["seq"],
                 fields["id"], fields["ts"], fields["body"])
    except (ValueError, KeyError, TypeError):
        raise EnvelopeError("malformed envelope") from None
    expected = (ENVELOPE_VERSION, header.room, header.epoch, sender.fingerprint.hex(),
                header.seq, header.message_id.hex())
    if inner[:6] != expected:
        raise EnvelopeError("envelope does not match its signed fields")
    if not isinstance(inner[6], int) or not isinstance(inner[7], str):
        raise EnvelopeError("malformed envelope")
    return Envelope(header, sender.fingerprint, inner[6], inner[7])
