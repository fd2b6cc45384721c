"""Tests for securechat.crypto.envelope: sealing, and the attacks it must stop."""

import os

from twisted.trial.unittest import SynchronousTestCase

from securechat.constants import PAD_BUCKET
from securechat.crypto.envelope import (
    EnvelopeError,
    LogPosition,
    MessageHeader,
    open_sealed,
    seal,
    verify_signature,
)
from securechat.crypto.roomkeys import new_room_key
from tests.identities import identity

KEY = new_room_key()
AT = LogPosition(5, b"h" * 32)


def header(room="#lab", epoch=2, seq=7, message_id=b"m" * 16):
    return MessageHeader(room, epoch, seq, message_id)


class EnvelopeTests(SynchronousTestCase):
    def setUp(self):
        self.alice = identity("alice")
        self.token, self.signature = seal(KEY, self.alice, header(), "hello \u00e9", 1234, AT)

    def open(self, hdr=None, token=None, signature=None, sender=None, key=KEY):
        return open_sealed(
            key,
            sender or self.alice.public,
            hdr or header(),
            self.token if token is None else token,
            self.signature if signature is None else signature,
        )

    def test_round_trip(self):
        """A sealed message opens to the same body, sender and timestamp."""
        envelope = self.open()
        self.assertEqual((envelope.body, envelope.sender, envelope.timestamp),
                         ("hello \u00e9", self.alice.fingerprint, 1234))

    def test_log_position_travels_signed(self):
        """The sender's log length and head come out of the envelope as sealed."""
        self.assertEqual(self.open().log, AT)

    def test_version_2_still_opens(self):
        """An envelope stored before the room logs opens, with no log position."""
        import base64
        import json

        from cryptography.fernet import Fernet

        from securechat.crypto import transcript as ctx
        import hashlib

        hdr = header()
        fields = {"v": 2, "room": hdr.room, "epoch": hdr.epoch,
                  "sender": self.alice.fingerprint.hex(), "seq": hdr.seq,
                  "id": hdr.message_id.hex(), "ts": 9, "n": 3}
        plain = json.dumps(fields).encode() + b"\nold"
        token = base64.urlsafe_b64decode(Fernet(KEY).encrypt(plain + b"\0" * 5))
        signature = self.alice.sign(ctx.MESSAGE, hdr.room, hdr.epoch, self.alice.fingerprint,
                                    hdr.seq, hdr.message_id, hashlib.sha256(token).digest())
        envelope = self.open(token=token, signature=signature)
        self.assertEqual((envelope.body, envelope.log), ("old", None))

    def test_padding_hides_length(self):
        """Bodies of different lengths within a bucket give tokens of the same size."""
        sizes = {len(seal(KEY, self.alice, header(), "x" * n, 1, AT)[0]) for n in (1, 20, 40)}
        self.assertEqual(len(sizes), 1)
        bigger = len(seal(KEY, self.alice, header(), "x" * (PAD_BUCKET * 2), 1, AT)[0])
        self.assertGreater(bigger, sizes.pop())

    def test_moved_to_other_room_or_epoch(self):
        """A token and signature moved to another room, epoch, seq or id fail."""
        for moved in [header(room="#ops"), header(epoch=3), header(seq=8),
                      header(message_id=b"n" * 16)]:
            with self.assertRaises(EnvelopeError):
                self.open(hdr=moved)

    def test_forged_sender(self):
        """Bob cannot pass off Alice's token as his, nor sign in her name."""
        bob = identity("bob")
        with self.assertRaises(EnvelopeError):
            self.open(sender=bob.public)
        forged_token, forged_signature = seal(KEY, bob, header(), "I am alice", 1, AT)
        with self.assertRaises(EnvelopeError):
            self.open(token=forged_token, signature=forged_signature)

    def test_resigned_token_does_not_match_envelope(self):
        """Bob re-signing Alice's token as his own is caught by the envelope's sender field."""
        from securechat.crypto import transcript as ctx
        import hashlib

        bob = identity("bob")
        hdr = header()
        resigned = bob.sign(ctx.MESSAGE, hdr.room, hdr.epoch, bob.fingerprint, hdr.seq,
                            hdr.message_id, hashlib.sha256(self.token).digest())
        verify_signature(bob.public, hdr, self.token, resigned)
        with self.assertRaises(EnvelopeError) as caught:
            self.open(signature=resigned, sender=bob.public)
        self.assertIn("does not match", caught.exception.reason)

    def test_truncated_or_flipped_token(self):
        """A truncated or bit-flipped token is refused, never a crash."""
        flipped = bytearray(self.token)
        flipped[40] ^= 1
        for token in [self.token[:-1], bytes(flipped), b"", b"\x80"]:
            with self.assertRaises(EnvelopeError):
                self.open(token=token)

    def test_wrong_key(self):
        """A correctly signed token under another key fails to decrypt, with a reason."""
        with self.assertRaises(EnvelopeError) as caught:
            self.open(key=new_room_key())
        self.assertIn("does not decrypt", caught.exception.reason)

    def test_oversized_body_refused(self):
        """A body beyond the limit given is refused before encryption."""
        self.assertRaises(ValueError, seal, KEY, self.alice, header(), "x" * 101, 1, AT, 100)

    def test_random_ids_differ(self):
        """Two seals of the same text give different tokens (fresh IV)."""
        other, _ = seal(KEY, self.alice, header(message_id=os.urandom(16)), "hello \u00e9", 1234,
                        AT)
        self.assertNotEqual(other, self.token)
