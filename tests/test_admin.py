"""Tests for securechat.admin against a temporary data dir."""

import io
import os

from twisted.trial.unittest import SynchronousTestCase

from securechat import admin
from securechat.server.passwords import token_digest
from securechat.server.sqlite_store import InlineRunner, SQLiteStore
from securechat.server.tls import ensure_self_signed
from securechat.server.store import RegistrationTokenInvalid, UserRow


def new_data_dir(test) -> tuple[str, SQLiteStore]:
    """A data dir with an empty, migrated database; the store is open for setup."""
    data_dir = test.mktemp()
    os.mkdir(data_dir)
    store = SQLiteStore(InlineRunner(os.path.join(data_dir, admin.DATABASE_FILE)))
    store.load()
    test.addCleanup(store.close)
    return data_dir, store


class AdminTests(SynchronousTestCase):
    def setUp(self):
        self.data_dir, _ = new_data_dir(self)

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

    def test_postgres_database_is_refused_in_one_line(self):
        """A daemon configured for PostgreSQL gets one line saying admin manages SQLite only."""
        config = self.mktemp()
        with open(config, "w") as f:
            f.write('[storage]\ndatabase = "postgresql://chat@db.internal/chat"\n')
        code, _, err = self.run_admin("--config", config, "users")
        self.assertEqual(code, 2)
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("SQLite databases only", err)

    def test_errors_are_one_line(self):
        """A missing database or certificate is one line on stderr and exit code 2."""
        self.data_dir = self.mktemp()
        for argv in (["token", "create"], ["fingerprint"]):
            code, _, err = self.run_admin(*argv)
            self.assertEqual((code, len(err.splitlines())), (2, 1))
            self.assertTrue(err.startswith("securechat-admin: "))


class ListingTests(SynchronousTestCase):
    def setUp(self):
        self.data_dir, store = new_data_dir(self)
        user_id = self.successResultOf(store.add_user(UserRow(0, "Alice", b"s", b"e", b"x",
                                                              b"\x01" * 32), 0.0, None))
        store.create_room("#lab", user_id, 0.0)

    def run_admin(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        return admin.main(["--data-dir", self.data_dir, *argv], out, err), out.getvalue(), err.getvalue()

    def test_users_and_rooms(self):
        """users and rooms list what the database holds."""
        code, out, _ = self.run_admin("users")
        self.assertEqual(code, 0)
        self.assertTrue(out.startswith("Alice\t01:01:"))
        self.assertIn("active", out)
        code, out, _ = self.run_admin("rooms")
        self.assertEqual(out, "#lab\topen\t1 members\tepoch 0\t0 messages\n")

    def test_backup_and_check(self):
        """backup writes an owner-only copy that passes the integrity check; an existing
        destination is refused."""
        destination = os.path.join(self.data_dir, "copy.db")
        self.assertEqual(self.run_admin("backup", destination)[0], 0)
        self.assertEqual(os.stat(destination).st_mode & 0o777, 0o600)
        restored = self.mktemp()
        os.mkdir(restored)
        os.rename(destination, os.path.join(restored, admin.DATABASE_FILE))
        listing = io.StringIO()
        self.assertEqual(admin.main(["--data-dir", restored, "users"], listing, io.StringIO()), 0)
        self.assertIn("Alice", listing.getvalue())
        code, out, _ = self.run_admin("check")
        self.assertEqual((code, out.split(";")[0]), (0, "configuration ok"))
        open(destination, "w").close()
        code, _, err = self.run_admin("backup", destination)
        self.assertEqual(code, 2)
        self.assertIn("exists", err)


class UserCommandTests(SynchronousTestCase):
    def setUp(self):
        self.data_dir, self.store = new_data_dir(self)
        self.bob = UserRow(0, "Bob", b"s", b"e", b"x", b"fp")
        self.bob.id = self.successResultOf(self.store.add_user(self.bob, 0.0, None))

    def run_admin(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        code = admin.main(["--data-dir", self.data_dir, *argv], out, err)
        return code, out.getvalue(), err.getvalue()

    def banned(self) -> bool:
        [row] = self.successResultOf(self.store.load_users())
        return row.banned

    def test_ban_and_unban(self):
        """user ban marks the account banned (case-blind nick); unban lifts it."""
        code, out, _ = self.run_admin("user", "ban", "bob")
        self.assertEqual(code, 0)
        self.assertIn("Bob is banned", out)
        self.assertTrue(self.banned())
        self.run_admin("user", "unban", "BOB")
        self.assertFalse(self.banned())

    def test_reset_token_resets_only_that_user(self):
        """user reset prints a one-time token that gives Bob new keys, once."""
        code, out, _ = self.run_admin("user", "reset", "bob")
        token = out.split()[0]
        self.assertEqual(code, 0)
        self.assertIn("--token", out)
        new = UserRow(self.bob.id, "Bob", b"s2", b"e2", b"x2", b"fp2")
        self.successResultOf(self.store.reset_user(new, token_digest(token)))
        [row] = self.successResultOf(self.store.load_users())
        self.assertEqual(row.fingerprint, b"fp2")
        self.failureResultOf(self.store.reset_user(new, token_digest(token)),
                             RegistrationTokenInvalid)

    def test_reset_token_is_not_a_registration_token_for_others(self):
        """A reset token cannot reset somebody else."""
        carol = UserRow(0, "carol", b"s3", b"e3", b"x3", b"fp3")
        carol.id = self.successResultOf(self.store.add_user(carol, 0.0, None))
        token = self.run_admin("user", "reset", "bob")[1].split()[0]
        self.failureResultOf(self.store.reset_user(carol, token_digest(token)),
                             RegistrationTokenInvalid)

    def test_unknown_nick(self):
        """An unknown nick is one line naming it, exit code 2."""
        code, _, err = self.run_admin("user", "ban", "nobody")
        self.assertEqual(code, 2)
        self.assertEqual(err, "securechat-admin: no user nobody; `securechat-admin users` "
                              "lists them\n")


class PruneTests(SynchronousTestCase):
    def setUp(self):
        self.data_dir, self.store = new_data_dir(self)
        old = 1_000_000.0
        for n, nick in enumerate(("idle", "member", "fresh")):
            row = UserRow(0, nick, b"s%d" % n, b"e", b"x", b"fp%d" % n)
            row.id = self.successResultOf(self.store.add_user(
                row, old if nick != "fresh" else 1e12, None))
            setattr(self, nick, row.id)
        self.successResultOf(self.store.create_room("#lab", self.member, old,
                                                    (b"genesis", b"sig")))

    def run_admin(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        code = admin.main(["--data-dir", self.data_dir, *argv], out, err)
        return code, out.getvalue(), err.getvalue()

    def test_prune_deletes_only_old_accounts_never_in_a_room(self):
        """prune deletes accounts old enough that never joined a room (and the invite
        naming one); a member and a new account stay; --dry-run deletes nothing."""
        code, out, _ = self.run_admin("prune", "--dry-run")
        self.assertEqual((code, out.splitlines()[0]), (0, "idle"))
        self.assertIn("would be deleted", out)
        code, out, _ = self.run_admin("prune", "--idle-days", "7")
        self.assertEqual(out.splitlines(), ["idle", "# 1 account never in a room and 7+ days "
                                                   "old were deleted"])
        users = self.successResultOf(self.store.load_users())
        self.assertEqual(sorted(u.nick for u in users), ["fresh", "member"])

    def test_bad_days_is_one_line(self):
        """--idle-days 0 is refused in one line, exit 2."""
        code, _, err = self.run_admin("prune", "--idle-days", "0")
        self.assertEqual((code, err), (2, "securechat-admin: --idle-days takes 1 or more\n"))
