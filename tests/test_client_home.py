"""Tests for securechat.client.home: keystore and state on disk."""

import os
import stat
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from securechat.client.home import KEYSTORE_FILE, LOCK_FILE, STATE_FILE, Home, HomeInUse
from securechat.constants import SCRYPT_MIN_N
from securechat.crypto.keystore import KdfParams, KeystoreError
from tests.daemon import ROOT, environment
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


class HomeLockTests(SynchronousTestCase):
    """One client per home directory."""

    def hold_in_a_child(self, path):
        """A process holding the home's lock until killed; it has its lock when this returns."""
        code = ("import sys, time; from securechat.client.home import Home; "
                "Home(sys.argv[1]).lock('console'); print('locked', flush=True); time.sleep(60)")
        child = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE,
                                 env=environment(), cwd=ROOT)
        self.addCleanup(child.kill)
        self.assertEqual(child.stdout.readline().strip(), b"locked")
        return child

    def test_second_client_is_refused_naming_the_first(self):
        """While one client holds a home, another is refused with who holds it since when."""
        path = os.path.abspath(self.mktemp())
        child = self.hold_in_a_child(path)
        with self.assertRaises(HomeInUse) as caught:
            Home(path).lock("--batch")
        self.assertIn(f"is in use by securechat-client console (pid {child.pid}, since ",
                      str(caught.exception))
        self.assertIn("quit that client first, or use another --home", str(caught.exception))

    def test_lock_of_a_dead_client_is_taken_over(self):
        """A client killed while holding a home leaves nothing that stops the next one."""
        path = os.path.abspath(self.mktemp())
        child = self.hold_in_a_child(path)
        child.kill()
        child.wait()
        Home(path).lock("--batch")
        with open(os.path.join(path, LOCK_FILE)) as f:
            self.assertIn(f"pid {os.getpid()}", f.read())
