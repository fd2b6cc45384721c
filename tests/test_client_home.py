"""Tests for securechat.client.home: keystore and state on disk."""

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from securechat.client.home import KEYSTORE_FILE, STATE_FILE, Home
from securechat.constants import SCRYPT_MIN_N
from securechat.crypto.keystore import KdfParams, KeystoreError
from tests.identities import identity


class HomeTests(SynchronousTestCase):
    def setUp(self):
        self.home = Home(os.path.join(self.mktemp(), "home"))
        self.keys = self.home.create(identity("alice"), "pw", KdfParams.fresh(SCRYPT_MIN_N))

    def mode(self, name):
        return stat.S_IMODE(os.stat(os.path.join(self.home.path, name)).st_mode)

    def test_files_are_private(self):
        """The home is 0700 and its keystore and state files are 0600."""
        self.home.save_state({"x": 1}, self.keys)
        self.assertEqual(stat.S_IMODE(os.stat(self.home.path).st_mode), 0o700)
        self.assertEqual((self.mode(KEYSTORE_FILE), self.mode(STATE_FILE)), (0o600, 0o600))

    def test_round_trip(self):
        """The identity and the state come back with the passphrase."""
        self.home.save_state({"pins": {"bob": 1}}, self.keys)
        opened, keys = self.home.open("pw")
        self.assertEqual(opened.public, identity("alice").public)
        self.assertEqual(self.home.load_state(keys), {"pins": {"bob": 1}})

    def test_wrong_passphrase_overwrites_nothing(self):
        """A wrong passphrase fails in one line and leaves every file as it was."""
        self.home.save_state({"keep": True}, self.keys)
        before = {n: open(os.path.join(self.home.path, n), "rb").read()
                  for n in os.listdir(self.home.path)}
        self.assertEqual(str(self.assertRaises(KeystoreError, self.home.open, "nope")),
                         "wrong passphrase")
        after = {n: open(os.path.join(self.home.path, n), "rb").read()
                 for n in os.listdir(self.home.path)}
        self.assertEqual(before, after)

    def test_no_second_identity(self):
        """Creating an identity where one exists is refused."""
        self.assertRaises(KeystoreError, self.home.create, identity("bob"), "pw")

    def test_atomic_replace(self):
        """Saving leaves no temporary files behind."""
        for n in range(3):
            self.home.save_state({"n": n}, self.keys)
        self.assertEqual(sorted(os.listdir(self.home.path)), [KEYSTORE_FILE, STATE_FILE])
