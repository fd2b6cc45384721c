"""Tests for securechat.crypto.keystore."""

import json

from twisted.trial.unittest import SynchronousTestCase

from securechat.constants import SCRYPT_MIN_N, SCRYPT_N
from securechat.crypto.keystore import (
    KdfParams,
    KeystoreError,
    open_identity,
    open_state,
    seal_identity,
    seal_state,
)
from tests.identities import identity

FAST = KdfParams.fresh(n=SCRYPT_MIN_N)


class KeystoreTests(SynchronousTestCase):
    def test_round_trip(self):
        """A sealed keystore opens with its passphrase to the same identity."""
        data, _ = seal_identity(identity("alice"), "correct horse", FAST)
        opened, _ = open_identity(data, "correct horse")
        self.assertEqual(opened.public, identity("alice").public)

    def test_wrong_passphrase(self):
        """A wrong passphrase is a one-line KeystoreError."""
        data, _ = seal_identity(identity("alice"), "correct horse", FAST)
        error = self.assertRaises(KeystoreError, open_identity, data, "battery staple")
        self.assertEqual(str(error), "wrong passphrase")

    def test_default_cost_is_strong(self):
        """By default the header records scrypt n=2^17, r=8, p=1 and the keys are encrypted."""
        params = KdfParams.fresh()
        self.assertEqual((params.n, params.r, params.p, len(params.salt)), (SCRYPT_N, 8, 1, 16))

    def test_weakened_header_refused(self):
        """A header edited to claim a cheap scrypt cost is refused."""
        data, _ = seal_identity(identity("alice"), "pw", FAST)
        document = json.loads(data)
        document["kdf"]["n"] = 2
        error = self.assertRaises(KeystoreError, open_identity, json.dumps(document).encode(), "pw")
        self.assertIn("weak", str(error))

    def test_damaged_file(self):
        """Garbage or a foreign JSON file is a KeystoreError, not a traceback."""
        for data in [b"", b"{}", b"[1]", b'{"format": "other", "version": 1}']:
            self.assertRaises(KeystoreError, open_identity, data, "pw")

    def test_private_keys_are_encrypted(self):
        """The file holds encrypted PKCS8, never a plain private key."""
        data, _ = seal_identity(identity("alice"), "pw", FAST)
        self.assertIn(b"BEGIN ENCRYPTED PRIVATE KEY", data)
        self.assertNotIn(b"BEGIN PRIVATE KEY", data)

    def test_state_round_trip_and_binding(self):
        """State sealed with one keystore's keys opens with them and no others."""
        _, keys = seal_identity(identity("alice"), "pw", FAST)
        _, other = seal_identity(identity("alice"), "pw", KdfParams.fresh(n=SCRYPT_MIN_N))
        sealed = seal_state({"pins": {"bob": "ab"}}, keys)
        self.assertEqual(open_state(sealed, keys), {"pins": {"bob": "ab"}})
        self.assertRaises(KeystoreError, open_state, sealed, other)
        self.assertRaises(KeystoreError, open_state, sealed[:-2], keys)
