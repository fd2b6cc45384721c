"""Tests for securechat.server.accounts: registration policy and login checks."""

from twisted.trial.unittest import SynchronousTestCase

from securechat.crypto.identity import login_signature
from securechat.server.accounts import AccountRegistry, public_identity
from securechat.server.passwords import token_digest
from securechat.server.store import UserRow
from securechat.wire import Code, WireError
from tests.identities import identity


def row(user_id, nick, name):
    public = identity(name).public
    return UserRow(user_id, nick, public.sign_der, public.enc_der, public.enc_signature,
                   public.fingerprint)


class AccountRegistryTests(SynchronousTestCase):
    def assertCode(self, code, f, *args):
        error = self.assertRaises(WireError, f, *args)
        self.assertEqual(error.code, code)

    def test_registration_policies(self):
        """open needs nothing, token needs a token, closed refuses everyone."""
        bob = identity("bob").public
        self.assertIsNone(AccountRegistry([], "open").check_registration("bob", bob, None))
        tokens = AccountRegistry([], "token")
        self.assertCode(Code.BAD_REGISTRATION_TOKEN, tokens.check_registration, "bob", bob, None)
        self.assertEqual(tokens.check_registration("bob", bob, "t0k"), token_digest("t0k"))
        self.assertCode(Code.REGISTRATION_CLOSED,
                        AccountRegistry([], "closed").check_registration, "bob", bob, None)
        self.assertRaises(ValueError, AccountRegistry, [], "sometimes")

    def test_nick_and_key_uniqueness(self):
        """Nicks are unique regardless of case, and one identity key has one account."""
        registry = AccountRegistry([row(1, "Alice", "alice")], "open")
        self.assertCode(Code.NICK_TAKEN, registry.check_registration, "ALICE",
                        identity("bob").public, None)
        self.assertCode(Code.KEY_IN_USE, registry.check_registration, "alice2",
                        identity("alice").public, None)
        self.assertCode(Code.BAD_NAME, registry.check_registration, "9lives",
                        identity("bob").public, None)
        self.assertCode(Code.BAD_NAME, registry.check_registration, "b\u00f6b",
                        identity("bob").public, None)

    def test_reservation(self):
        """A nick being registered is reserved until released or added."""
        registry = AccountRegistry([], "open")
        registry.check_registration("bob", identity("bob").public, None)
        self.assertCode(Code.NICK_TAKEN, registry.check_registration, "Bob",
                        identity("carol").public, None)
        registry.release("bob")
        registry.check_registration("Bob", identity("carol").public, None)

    def test_login(self):
        """A login signature proves the account; another key, nonce or session fails."""
        registry = AccountRegistry([row(1, "alice", "alice")], "open")
        good = login_signature(identity("alice"), "srv", "alice", b"n" * 32, b"b" * 32)
        self.assertEqual(registry.check_login("ALICE", good, "srv", b"n" * 32, b"b" * 32).id, 1)
        self.assertCode(Code.AUTH_FAILED, registry.check_login, "alice", good, "srv",
                        b"n" * 32, b"c" * 32)
        forged = login_signature(identity("bob"), "srv", "alice", b"n" * 32, b"b" * 32)
        self.assertCode(Code.AUTH_FAILED, registry.check_login, "alice", forged, "srv",
                        b"n" * 32, b"b" * 32)
        self.assertCode(Code.AUTH_FAILED, registry.check_login, "nobody", good, "srv",
                        b"n" * 32, b"b" * 32)

    def test_banned_account(self):
        """A banned account cannot log in even with a valid signature."""
        banned = row(1, "alice", "alice")
        banned.banned = True
        registry = AccountRegistry([banned], "open")
        good = login_signature(identity("alice"), "srv", "alice", b"n" * 32, b"b" * 32)
        self.assertCode(Code.ACCOUNT_BANNED, registry.check_login, "alice", good, "srv",
                        b"n" * 32, b"b" * 32)

    def test_bad_keys(self):
        """Unparseable keys are BAD_KEY."""
        error = self.assertRaises(WireError, public_identity, b"x", b"y", b"z")
        self.assertEqual(error.code, Code.BAD_KEY)
