"""Tests for securechat.server.operator: a running daemon applies what the
operator changed with securechat-admin."""

import os
import sqlite3

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from securechat.constants import OPERATOR_POLL_SECONDS
from securechat.server.accounts import AccountRegistry
from securechat.server.fanout import LocalFanOut
from securechat.server.operator import OperatorChanges
from securechat.server.sqlite_store import InlineRunner, SQLiteStore
from securechat.server.store import UserRow


class _Connection:
    def __init__(self):
        self.dropped = []

    def deliver(self, line):
        pass

    def drop(self, code, text):
        self.dropped.append(code)


class OperatorChangesTests(SynchronousTestCase):
    def setUp(self):
        self.path = os.path.join(self.mktemp())
        self.store = SQLiteStore(InlineRunner(self.path))
        self.addCleanup(self.store.close)
        self.store.load()
        bob = UserRow(0, "bob", b"s", b"e", b"x", b"fp")
        bob.id = self.successResultOf(self.store.add_user(bob, 0.0, None))
        self.accounts = AccountRegistry(self.successResultOf(self.store.load_users()), "open")
        self.fanout = LocalFanOut()
        self.connection = _Connection()
        self.fanout.attach(bob.id, self.connection)
        self.clock = task.Clock()
        self.changes = OperatorChanges(self.store, self.accounts, self.fanout, self.clock)
        self.changes.start()
        self.addCleanup(self.changes.stop)

    def admin_sets_banned(self, banned: bool) -> None:
        """What securechat-admin does: another connection, another process's commit."""
        with sqlite3.connect(self.path) as other:
            other.execute("UPDATE users SET banned = ? WHERE nick = 'bob'", (int(banned),))
        other.close()

    def test_ban_by_another_process_is_applied(self):
        """Within one poll a ban made elsewhere refuses logins and ends live sessions."""
        self.admin_sets_banned(True)
        self.clock.advance(OPERATOR_POLL_SECONDS)
        self.assertTrue(self.accounts.find("bob").banned)
        self.assertEqual(self.connection.dropped, ["ACCOUNT_BANNED"])

    def test_unban_is_applied(self):
        """A lifted ban lets the account log in again; nobody is disconnected."""
        self.admin_sets_banned(True)
        self.clock.advance(OPERATOR_POLL_SECONDS)
        self.admin_sets_banned(False)
        self.clock.advance(OPERATOR_POLL_SECONDS)
        self.assertFalse(self.accounts.find("bob").banned)
        self.assertEqual(self.connection.dropped, ["ACCOUNT_BANNED"])

    def test_own_writes_are_not_reloaded(self):
        """The daemon's own commits do not look like the operator's."""
        self.successResultOf(self.store.set_user_banned(self.accounts.find("bob").id, True))
        self.clock.advance(OPERATOR_POLL_SECONDS)
        self.assertFalse(self.accounts.find("bob").banned)

    def test_pruned_account_is_forgotten_and_its_sessions_end(self):
        """An account securechat-admin prune deleted is gone from the running daemon
        within one poll: no login, and its live sessions are told and closed."""
        with sqlite3.connect(self.path) as other:
            other.execute("DELETE FROM users WHERE nick = 'bob'")
        other.close()
        self.clock.advance(OPERATOR_POLL_SECONDS)
        self.assertIsNone(self.accounts.find("bob"))
        self.assertEqual(self.connection.dropped, ["NO_SUCH_USER"])
