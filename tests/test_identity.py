"""Tests for securechat.crypto.identity."""

import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.trial.unittest import SynchronousTestCase

from securechat.crypto import transcript as ctx
from securechat.crypto.identity import (
    IdentityError,
    PublicIdentity,
    format_safety_number,
    login_signature,
    safety_number,
    verify_login,
)
from tests.identities import identity


class PublicIdentityTests(SynchronousTestCase):
    def test_round_trip(self):
        """A public identity rebuilt from its wire form equals the original."""
        public = identity("alice").public
        self.assertEqual(
            PublicIdentity.from_wire(public.sign_der, public.enc_der, public.enc_signature), public
        )

    def test_fingerprint_is_sha256_of_spki(self):
        """The fingerprint is SHA-256 of the identity key's DER SubjectPublicKeyInfo."""
        public = identity("alice").public
        spki = public.sign_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.assertEqual(public.fingerprint, hashlib.sha256(spki).digest())

    def test_subkey_must_be_signed_by_identity(self):
        """An encryption subkey signed by someone else is refused."""
        alice, bob = identity("alice").public, identity("bob").public
        self.assertRaises(
            IdentityError, PublicIdentity.from_wire, alice.sign_der, bob.enc_der, bob.enc_signature
        )

    def test_weak_or_garbage_keys_refused(self):
        """Keys that are not RSA-3072, or not keys at all, are refused."""
        small = rsa.generate_private_key(65537, 2048).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        alice = identity("alice").public
        self.assertRaises(IdentityError, PublicIdentity.from_wire, small, alice.enc_der, b"")
        self.assertRaises(IdentityError, PublicIdentity.from_wire, b"junk", alice.enc_der, b"")

    def test_signature_contexts_do_not_mix(self):
        """A signature made for one purpose does not verify for another."""
        alice = identity("alice")
        signature = alice.sign(ctx.ROOM_LOG, "#lab", "bob")
        self.assertTrue(alice.public.verify(signature, ctx.ROOM_LOG, "#lab", "bob"))
        self.assertFalse(alice.public.verify(signature, ctx.AUTH, "#lab", "bob"))
        self.assertFalse(alice.public.verify(signature, ctx.ROOM_LOG, "#lab", "carol"))
        self.assertFalse(identity("bob").public.verify(signature, ctx.ROOM_LOG, "#lab", "bob"))


class LoginTests(SynchronousTestCase):
    def test_login_binds_session(self):
        """A login signature verifies only with the same server, nick, nonce and TLS exporter."""
        alice = identity("alice")
        signature = login_signature(alice, "chat", "alice", b"n" * 32, b"e" * 32)
        self.assertTrue(verify_login(alice.public, signature, "chat", "alice", b"n" * 32, b"e" * 32))
        for args in [("other", "alice", b"n" * 32, b"e" * 32),
                     ("chat", "mallory", b"n" * 32, b"e" * 32),
                     ("chat", "alice", b"m" * 32, b"e" * 32),
                     ("chat", "alice", b"n" * 32, b"f" * 32)]:
            self.assertFalse(verify_login(alice.public, signature, *args))
        self.assertFalse(
            verify_login(identity("bob").public, signature, "chat", "alice", b"n" * 32, b"e" * 32)
        )


class SafetyNumberTests(SynchronousTestCase):
    def test_symmetric_and_sixty_digits(self):
        """Both users compute the same 60-digit number, whatever the nicks' case."""
        alice, bob = identity("alice").public, identity("bob").public
        number = safety_number(alice, "alice", bob, "bob")
        self.assertEqual(number, safety_number(bob, "Bob", alice, "ALICE"))
        self.assertEqual(len(number), 60)
        self.assertTrue(number.isdigit())
        self.assertEqual(len(format_safety_number(number).split()), 12)

    def test_substituted_key_changes_number(self):
        """If the server shows Alice a different key for Bob, their numbers differ."""
        alice, bob, mallory = (identity(n).public for n in ("alice", "bob", "mallory"))
        self.assertNotEqual(
            safety_number(alice, "alice", bob, "bob"), safety_number(alice, "alice", mallory, "bob")
        )
