"""Upgrading from version 1 (rooms without a signed log): a daemon data dir
and three users' saved client states made by version 1 of securechat
(tests/fixtures/v1, made by its own code) keep working with this one. The
rooms get a log without losing their history, members stay members, an
invite-only room stays closed, and an older client is told to upgrade."""

import json
import os
import shutil

from cryptography.hazmat.primitives import serialization
from twisted.trial.unittest import SynchronousTestCase

from securechat.client.session import ClientSession
from securechat.crypto.identity import PrivateIdentity
from tests import identities
from tests.clientharness import Network

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "v1")

# What each user read or wrote under version 1 (tests/fixtures/v1).
LAB = ["lab one", "lab two", "lab three"]
PRIV = ["priv one", "priv two"]


def load_user(name: str) -> dict:
    """The saved state of a version-1 client, its identity adopted as C{name}-v1."""
    with open(os.path.join(FIXTURE, f"{name}.json")) as f:
        saved = json.load(f)
    keys = [serialization.load_pem_private_key(saved[k].encode(), None)
            for k in ("sign_key", "enc_key")]
    identities._cache[f"{name}-v1"] = PrivateIdentity(*keys)
    return saved["state"]


class UpgradeTests(SynchronousTestCase):
    def setUp(self):
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "securechat.sqlite")
        shutil.copy(os.path.join(FIXTURE, "securechat.sqlite"), path)
        self.net = Network(path=path)
        self.states = {name: load_user(name) for name in ("alice", "bob", "carol")}

    def back(self, name, connect=True):
        return self.net.client(name, self.states[name], connect=connect, key=f"{name}-v1")

    def history(self, rig, room):
        shown = rig.session.history(room, 50)
        self.net.settle()
        return [row["text"] for row in self.successResultOf(shown)]

    def test_rooms_get_a_log_and_keep_their_history(self):
        """Back online, the members' rooms get a signed log with everyone in it;
        the messages from before read as they did, and new ones go to everyone."""
        alice, bob, carol = (self.back(n) for n in ("alice", "bob", "carol"))
        self.net.settle()
        service = self.net.server.service
        for room, members in (("#lab", {"alice", "bob", "carol"}), ("#priv", {"alice", "bob"})):
            state = service.rooms.find(room).state
            self.assertEqual({m.nick for m in state.members.values()}, members)
            self.assertGreaterEqual(state.epoch, 1)
        self.assertEqual(self.history(bob, "#lab"), LAB)
        self.assertEqual(self.history(carol, "#lab"), LAB)
        self.assertEqual(self.history(alice, "#priv"), PRIV)
        alice.session.send_text("#lab", "after the upgrade")
        bob.session.send_text("#priv", "still private")
        self.net.settle()
        self.assertIn(("alice", "after the upgrade"), carol.texts())
        self.assertIn(("bob", "still private"), alice.texts())
        for rig in (alice, bob, carol):
            self.assertEqual(rig.of("undecryptable") + rig.of("verification_failed")
                             + rig.of("room_forked"), [])

    def test_one_member_writes_the_upgrade(self):
        """Members back at once race to move a room to a log: one upgrade is
        stored, each member admitted once, and the others follow it."""
        rigs = [self.back(n, connect=False) for n in ("alice", "bob", "carol")]
        for rig in rigs:
            self.net.connect(rig)
        self.net.settle()
        state = self.net.server.service.rooms.find("#lab").state
        self.assertEqual(len(state.members), 3)
        self.assertEqual(self.history(rigs[2], "#lab"), LAB)

    def test_member_away_during_the_upgrade_catches_up(self):
        """carol, offline while alice moves #lab to a log and talks on, reads
        everything when she is back."""
        alice = self.back("alice")
        self.net.settle()
        alice.session.send_text("#lab", "while carol is away")
        self.net.settle()
        carol = self.back("carol")
        self.net.settle()
        self.assertIn(("alice", "while carol is away"), carol.texts())

    def test_invite_only_room_stays_closed(self):
        """#priv was invite-only: carol still cannot join it, and dave, invited
        now, reads from his join on, and is told why the older messages are not his."""
        alice, bob = self.back("alice"), self.back("bob")
        carol, dave = self.back("carol"), self.net.client("dave")
        self.net.settle()
        refused = carol.session.join("#priv")
        self.net.settle()
        self.assertEqual(self.failureResultOf(refused).value.code, "INVITE_ONLY")
        alice.session.invite("#priv", "dave")
        self.net.settle()
        dave.session.join("#priv")
        self.net.settle()
        bob.session.send_text("#priv", "hello dave")
        self.net.settle()
        self.assertEqual(dave.texts(), [("bob", "hello dave")])
        reasons = {e["reason"] for e in dave.of("undecryptable")}
        self.assertEqual(len(reasons), 1)
        self.assertIn("before #priv had a signed log", reasons.pop())


class OlderPeerTests(SynchronousTestCase):
    def test_other_protocol_versions_are_told_which_side_to_upgrade(self):
        """A client meeting a server of another protocol version stops at the
        greeting with one line saying which side to upgrade, and never hangs."""
        for version, advice in ((1, "ask its operator to upgrade it"), (3, "upgrade this client")):
            events = []
            session = ClientSession(identities.identity("alice"), "alice", {}, None,
                                    lambda state: None, lambda transport: b"")
            session.subscribe(events.append)
            session._on_hello("securechat", version, "chat.example", b"n" * 32, "")
            [fatal] = [e.fields for e in events if e.kind == "fatal"]
            self.assertIn(f"the server speaks securechat {version}", fatal["message"])
            self.assertIn(advice, fatal["message"])
