"""Tests for securechat.admin against a temporary data dir."""

import io
import os

from twisted.trial.unittest import SynchronousTestCase

from securechat import admin
from securechat.server.passwords import token_digest
from securechat.server.sqlite_store import InlineRunner, SQLiteStore
from securechat.server.tls import ensure_self_signed
from securechat.server.store import UserRow


class AdminTests(SynchronousTestCase):
    def setUp(self):
        self.data_dir = self.mktemp()
        os.mkdir(self.data_dir)
        store = SQLiteStore(InlineRunner(os.path.join(self.data_dir, admin.DATABASE_FILE)))
        store.load()
        store.close()

    def run_admin(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        code = admin.main(["--data-dir", self.data_dir, *argv], out, err)
        return code, out.getvalue(), err.getvalue()

    def test_token_create(self):
        """Created tokens are printed once and stored only as digests, usable once."""
        code, out, _ = self.run_admin("token", "create", "--count", "2")
        tokens = out.split()
        self.assertEqual((code, len(tokens)), (0, 2))
        path = os.path.join(self.data_dir, admin.DATABASE_FILE)
        with open(path, "rb") as f:
            self.assertNotIn(tokens[0].encode(), f.read())
        store = SQLiteStore(InlineRunner(path))
        self.addCleanup(store.close)
        store.load()
        user = UserRow(0, "bob", b"s", b"e", b"x", b"fp")
        self.successResultOf(store.add_user(user, 0.0, token_digest(tokens[0])))

    def test_fingerprint(self):
        """fingerprint prints the certificate's SHA-256 as openssl does."""
        ensure_self_signed(self.data_dir)
        code, out, _ = self.run_admin("fingerprint")
        self.assertEqual(code, 0)
        self.assertRegex(out, r"^sha256 Fingerprint=([0-9A-F]{2}:){31}[0-9A-F]{2}\n$")

    def test_errors_are_one_line(self):
        """A missing database or certificate is one line on stderr and exit code 2."""
        self.data_dir = self.mktemp()
        for argv in (["token", "create"], ["fingerprint"]):
            code, _, err = self.run_admin(*argv)
            self.assertEqual((code, len(err.splitlines())), (2, 1))
            self.assertTrue(err.startswith("securechat-admin: "))
