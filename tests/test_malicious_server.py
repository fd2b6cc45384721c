"""The server is the adversary: each test is an attack a malicious daemon
makes on real client sessions (tests.maliciousserver), named after it, and
checks that the clients refuse it or show it to their users."""

import os

from twisted.trial.unittest import SynchronousTestCase

from securechat.crypto.envelope import LogPosition, MessageHeader, seal
from securechat.crypto.identity import format_safety_number, safety_number
from securechat.roomlog import author
from securechat.roomlog.entry import EPOCH, JOIN
from securechat.wire import SERVER_VERBS, WireError
from tests.identities import identity
from tests.maliciousserver import (
    MaliciousNetwork,
    b64encode,
    drop,
    entries_of_kind,
    entry_of,
    frame_of,
    line,
    on,
    rewrite,
    swallow,
)


class AttackTestCase(SynchronousTestCase):
    def setUp(self):
        self.net = MaliciousNetwork()

    def room(self, *names, room="#lab"):
        """Clients of C{names} in C{room} (the first made it), a key in use."""
        rigs = self.net.members(*names, room=room)
        self.say(rigs[0], "hello", room)
        return rigs

    def say(self, rig, text, room="#lab"):
        rig.session.send_text(room, text)
        self.net.settle()

    def log(self, rig, room="#lab"):
        return rig.session.logs.get(room)

    def epochs_sent(self, rig):
        """The epochs of every MSG the client put on the wire."""
        return [int(frame_of(raw).args[1]) for raw in rig.sent
                if frame_of(raw) is not None and frame_of(raw).verb == "MSG"]

    def key_holders(self, room="#lab"):
        """The nicks the server stored a wrap of the current key for."""
        service = self.net.service
        found = service.rooms.find(room)
        rows = service.store._runner.connection.execute(
            "SELECT user_id FROM wraps WHERE room_id = ? AND epoch = ?",
            (found.id, found.epoch)).fetchall()
        return sorted(service.accounts.by_id(uid).nick for (uid,) in rows)


class MembershipAttackTests(AttackTestCase):
    def test_hidden_kick(self):
        """The server swallows alice's kick of carol and answers OK. alice's own
        log has the kick; the server's does not: alice is told the server shows
        members different rooms, and sends nothing carol could read."""
        alice, bob, carol = self.room("alice", "bob", "carol")
        swallowed = []
        on(self.net.of("alice"), swallow("APPEND", log=swallowed), to_server=True)
        alice.session.kick("#lab", "carol")
        self.net.settle()
        self.assertEqual(len(swallowed), 1)
        self.assertTrue(alice.of("room_forked"))
        refused = self.assertRaises(WireError, alice.session.send_text, "#lab",
                                    "carol must not read this")
        self.assertEqual(refused.code, "ROOM_FORKED")
        self.net.settle()
        self.assertEqual(self.epochs_sent(alice), [1])

    def test_suppressed_rotation(self):
        """The server hides alice's new epoch (entry and key) from bob after the
        kick of carol, which bob saw. bob never encrypts under the key carol
        holds: he makes a new one himself, or sends nothing."""
        alice, bob, carol = self.room("alice", "bob", "carol")
        old = self.log(bob).state.epoch
        on(self.net.of("bob"), drop("ENTRY", entries_of_kind(EPOCH, identity("alice").fingerprint)))
        on(self.net.of("bob"), drop("KEY"))
        alice.session.kick("#lab", "carol")
        self.net.settle()
        self.assertEqual(carol.of("left")[0]["how"], "kick")
        bob.session.send_text("#lab", "for alice only")
        self.net.settle()
        self.assertTrue(all(epoch > old for epoch in self.epochs_sent(bob)[1:]))
        self.assertNotIn(("bob", "for alice only"), carol.texts())
        self.assertTrue(bob.of("warning") or bob.of("error"))

    def test_message_under_a_removed_members_key(self):
        """After carol's kick the server delivers a message sealed under the key
        she still holds (bob's, sent before bob saw the kick): alice sees it with
        a warning naming bob and carol."""
        alice, bob, carol = self.room("alice", "bob", "carol")
        log = self.log(bob)
        epoch, at = log.state.epoch, LogPosition(log.length, log.state.head)
        key = bob.session.keys.key("#lab", epoch)
        alice.session.kick("#lab", "carol")
        self.net.settle()
        message_id = os.urandom(16)
        token, signature = seal(key, identity("bob"), MessageHeader("#lab", epoch, 9, message_id),
                                "carol can read this", 1, at)
        self.net.of("alice").push(line(
            "MESSAGE", "#lab", "50", "bob", str(epoch), "9", b64encode(message_id),
            b64encode(token), b64encode(signature), "0"))
        self.net.settle()
        self.assertIn(("bob", "carol can read this"), alice.texts())
        [warning] = alice.of("warning")
        self.assertIn("bob sent this under a key carol still holds", warning["message"])
        self.assertIn("had not seen carol leave", warning["message"])

    def test_readmission(self):
        """After a kick the server lists carol as a member again. The log says she
        is not: no rotation wraps the key for her, and she reads nothing more."""
        alice, bob, carol = self.room("alice", "bob", "carol")
        alice.session.kick("#lab", "carol")
        self.net.settle()
        self.net.list_as_member("#lab", "carol")
        alice.session.rotate("#lab")
        self.net.settle()
        self.say(alice, "after carol")
        self.assertEqual(self.key_holders(), ["alice", "bob"])
        self.assertNotIn(("alice", "after carol"), carol.texts())
        alice.session.who("#lab")
        self.net.settle()
        [warning] = [w for w in alice.of("warning") if "carol" in w["message"]]
        self.assertIn("log has no such member", warning["message"])

    def test_readmission_by_a_replayed_join(self):
        """The server replays carol's old join entry (her spent invite) after her
        kick: it does not extend the log, and bob is told the room is tampered with."""
        alice, bob, carol = self.room("alice", "bob", "carol")
        joined = [f for f in (frame_of(raw) for raw in self.net.of("bob").seen)
                  if f is not None and f.verb == "ENTRY"
                  and entry_of(f).entry.kind == JOIN
                  and entry_of(f).entry.author == identity("carol").fingerprint]
        alice.session.kick("#lab", "carol")
        self.net.settle()
        fields = SERVER_VERBS["ENTRY"].bind(joined[0])
        length = self.log(bob).length
        self.net.of("bob").push(line("ENTRY", "#lab", str(length), b64encode(fields["entry"]),
                                     b64encode(fields["signature"])))
        self.net.settle()
        self.assertIsNone(self.log(bob).state.by_nick("carol"))
        self.assertTrue(bob.of("room_forked"))

    def test_ghost_via_newcomer(self):
        """In an invite-only room the server lists mallory, never invited, as a
        member. An honest newcomer trusts only the log: neither its rotation nor
        anyone's later one wraps the key for mallory."""
        alice, bob = self.room("alice", "bob", room="#ops")
        alice.session.configure("#ops", "invite_only", "on")
        self.net.settle()
        self.net.client("mallory")
        self.net.list_as_member("#ops", "mallory")
        dave = self.net.client("dave")
        alice.session.invite("#ops", "dave")
        self.net.settle()
        dave.session.join("#ops")
        self.net.settle()
        self.say(dave, "hi all", "#ops")
        self.say(alice, "welcome dave", "#ops")
        self.assertIn(("alice", "welcome dave"), dave.texts())
        self.assertNotIn("mallory", self.key_holders("#ops"))
        self.assertIsNone(self.log(dave, "#ops").state.by_nick("mallory"))

    def test_open_room_ghost(self):
        """The server lists one of its own accounts in an open room with no join
        entry: /who leaves it out and says so, and no key is wrapped for it."""
        alice, bob = self.room("alice", "bob")
        self.net.client("eve")
        self.net.list_as_member("#lab", "eve")
        members = alice.session.who("#lab")
        self.net.settle()
        self.assertEqual(sorted(m["nick"] for m in self.successResultOf(members)),
                         ["alice", "bob"])
        self.assertIn("eve", alice.of("warning")[-1]["message"])
        alice.session.rotate("#lab")
        self.net.settle()
        self.assertNotIn("eve", self.key_holders())

    def test_unsigned_flag(self):
        """The server tells bob, a key holder, that the room shares its history
        (a ROOM line, a SETTINGS line). The log says it does not: a newcomer
        gets a new key, never the old one, and reads nothing from before."""
        alice, bob = self.room("alice", "bob")
        self.say(bob, "before carol")

        def shared(frame):
            fields = list(frame.args)
            fields[4] = "shared"
            return line("ROOM", *fields, request_id=frame.request_id)

        on(self.net.of("bob"), rewrite("ROOM", shared))
        self.net.of("bob").push(line("SETTINGS", "#lab", "alice", "shared"))
        self.net.disconnect(alice)
        carol = self.net.client("carol")
        carol.session.join("#lab")
        self.net.settle()
        self.net.clock.advance(10)
        self.net.settle()
        self.assertNotIn(("bob", "before carol"), carol.texts())
        state = self.log(bob).state
        self.assertEqual(state.history, "joined")
        newcomer = identity("carol").fingerprint
        before = [n for n, info in state.epochs.items()
                  if info.index < state.members[newcomer].since]
        self.assertTrue(before)
        self.assertFalse(any(newcomer in state.holders[n] for n in before))

    def test_role_claim(self):
        """WHO says bob is an op; he is not, by the log. An invite bob signs is
        refused by the other members' clients, which say the room was tampered with."""
        alice, bob = self.room("alice", "bob")

        def op(frame):
            fields = list(frame.args)
            fields[1] = "op" if fields[3] == "bob" else fields[1]
            return line("MEMBER", *fields, request_id=frame.request_id)

        on(self.net.of("alice"), rewrite("MEMBER", op))
        members = alice.session.who("#lab")
        self.net.settle()
        self.assertEqual({m["nick"]: m["role"] for m in self.successResultOf(members)},
                         {"alice": "owner", "bob": "member"})
        state = self.log(bob).state
        invite = author.invite(identity("bob"), state, identity("dave").public, "dave", 1)
        self.net.of("alice").push(line("ENTRY", "#lab", str(state.length),
                                       b64encode(invite.data), b64encode(invite.signature)))
        self.net.settle()
        self.assertTrue(alice.of("room_forked"))
        self.assertEqual(self.log(alice).state.invites, {})

    def test_nick_alias(self):
        """The server offers bob's keys under the nick robert. alice's client
        refuses one key under two nicks: no invite for 'robert', and she is told."""
        alice, bob = self.room("alice", "bob")
        self.net.client("robert")
        keys = self.net.service.accounts.find("bob")

        def bobs_keys(frame):
            if frame.args[0] != "robert":
                return None
            return line("USER", "robert", b64encode(keys.sign_key), b64encode(keys.enc_key),
                        b64encode(keys.enc_signature), request_id=frame.request_id)

        on(self.net.of("alice"), rewrite("USER", bobs_keys))
        invited = alice.session.invite("#lab", "robert")
        self.net.settle()
        self.failureResultOf(invited)
        self.assertIn("robert", alice.of("identity_alias")[0]["message"])
        self.assertEqual(self.log(alice).state.invites, {})


class IdentityAttackTests(AttackTestCase):
    def test_verification_recorded(self):
        """/verify bob, then /verify bob yes, marks bob verified for good; a client
        sharing keys only with verified members then wraps for bob, not carol."""
        alice, bob, carol = self.room("alice", "bob", "carol")
        alice = self.net.restart_client(alice, share_with_verified_only=True)
        alice.session.verify("bob")
        alice.session.verify("bob", confirm=True)
        self.net.settle()
        alice = self.net.restart_client(alice, share_with_verified_only=True)
        self.assertTrue(alice.session.pins.verified("bob"))
        alice.session.rotate("#lab")
        self.net.settle()
        self.assertEqual(self.key_holders(), ["alice", "bob"])
        self.say(alice, "verified ears only")
        self.assertIn(("alice", "verified ears only"), bob.texts())
        self.assertNotIn(("alice", "verified ears only"), carol.texts())

    def reset(self, name, *rooms):
        """The operator resets C{name}; the user comes back with new keys."""
        token = self.net.reset_user(name)
        old = next(r for r in self.net.rigs if r.name == name and r.pump is not None)
        self.net.disconnect(old)
        self.net.settle()
        return self.net.client(name, key=f"{name}-new", registration_token=token)

    def test_reset_user(self):
        """erin is reset and comes back with new keys. Her rooms re-key at once
        without her new key; each member is told once that her key changed; the
        accepted members go on talking with no STALE_EPOCH loop; her own client
        says once per room that earlier messages were sent before its key
        existed; once alice accepts her key, erin reads what follows."""
        alice, bob, erin = self.room("alice", "bob", "erin")
        self.say(erin, "erin's last words with the old key")
        before = self.log(alice).state.epoch
        erin = self.reset("erin")
        self.net.settle()
        self.assertGreater(self.log(alice).state.epoch, before)
        self.assertNotIn("erin", self.key_holders())
        for rig in (alice, bob):
            self.assertEqual([e["nick"] for e in rig.of("identity_changed")], ["erin"])
        self.say(alice, "alice goes on")
        self.say(bob, "bob too")
        self.assertIn(("alice", "alice goes on"), bob.texts())
        # Each message went out once or twice (a refusal and its retry), never in a loop.
        for rig in (alice, bob):
            self.assertLessEqual(len(self.epochs_sent(rig)), 2 * len(rig.of("sent")))
        # Nothing was sealed under a key erin's new, unaccepted key made.
        state = self.log(alice).state
        by_new_key = {n for n, e in state.epochs.items()
                      if e.author == identity("erin-new").fingerprint}
        self.assertFalse(by_new_key & set(self.epochs_sent(alice) + self.epochs_sent(bob)))
        before_key = [e for e in erin.of("undecryptable")
                      if "before this key existed" in e["message"]]
        self.assertEqual(len(before_key), 1)
        # Left out on purpose, erin asks for the key and is told why; she makes none.
        erin.session.send_text("#lab", "it's me, new keys")
        self.net.settle()
        self.net.clock.advance(10)
        self.net.settle()
        self.assertIn("identity_changed", {e["code"] for e in erin.of("key_withheld")})
        self.assertFalse([e for e in self.log(alice).state.epochs.values()
                          if e.author == identity("erin-new").fingerprint])
        alice.session.accept("erin")
        bob.session.accept("erin")
        self.net.settle()
        self.net.clock.advance(10)
        self.net.settle()
        self.say(alice, "welcome back erin")
        self.assertIn(("alice", "welcome back erin"), erin.texts())
        self.assertIn(("erin", "it's me, new keys"), alice.texts())

    def test_old_safety_number(self):
        """After erin's key changed, /verify erin shows the new safety number beside
        the old one, before anything is accepted: they can be compared first."""
        alice, erin = self.room("alice", "erin")
        old = format_safety_number(safety_number(identity("alice").public, "alice",
                                                 identity("erin").public, "erin"))
        self.reset("erin")
        self.net.settle()
        alice.session.verify("erin")
        self.net.settle()
        [shown] = alice.of("safety_number")
        new = format_safety_number(safety_number(identity("alice").public, "alice",
                                                 identity("erin-new").public, "erin"))
        self.assertEqual((shown["number"], shown["previous"]), (new, old))

    def test_verified_peer_key_change_blocks_sending(self):
        """alice verified bob; bob's key changes. alice's messages to rooms with bob
        wait, with a notice, until she decides; then they go."""
        alice, bob = self.room("alice", "bob")
        alice.session.verify("bob")
        alice.session.verify("bob", confirm=True)
        self.net.settle()
        bob = self.reset("bob")
        self.net.settle()
        alice.session.send_text("#lab", "held")
        self.net.settle()
        self.assertEqual(len(alice.of("send_held")), 1)
        self.assertNotIn("held", [s["text"] for s in alice.of("sent")])
        alice.session.verify("bob")
        alice.session.verify("bob", confirm=True)
        self.net.settle()
        self.net.clock.advance(10)
        self.net.settle()
        self.assertIn("held", [s["text"] for s in alice.of("sent")])
        self.assertIn(("alice", "held"), bob.texts())

    def test_forged_rekey(self):
        """The server appends an entry replacing alice's key with its own. alice's
        client says the server is impersonating her there, and sends nothing more."""
        alice, bob = self.room("alice", "bob")
        state = self.log(alice).state
        forged = author.rekey(identity("mallory"), state, identity("alice").fingerprint,
                              "alice", 1)
        self.net.of("alice").push(line("ENTRY", "#lab", str(state.length),
                                       b64encode(forged.data), b64encode(forged.signature)))
        self.net.settle()
        [told] = alice.of("room_forked")
        self.assertIn("impersonating you", told["message"])
        self.assertRaises(WireError, alice.session.send_text, "#lab", "no")


class MessageAttackTests(AttackTestCase):
    def test_unchecked_history(self):
        """/history output gets the live checks: a message the server sends twice,
        or out of order, is shown with the reason, not as a message."""
        alice, bob = self.room("alice", "bob")
        for text in ("one", "two", "three"):
            self.say(bob, text)

        replies = []

        def reorder(raw):
            frame = frame_of(raw)
            if frame is None or frame.verb != "MESSAGE" or frame.request_id == "*":
                return None
            replies.append(raw)
            if len(replies) == 4:
                return [replies[3], replies[2], replies[1]]
            return [] if len(replies) > 1 else None

        on(self.net.of("alice"), reorder)
        shown = alice.session.history("#lab", 10)
        self.net.settle()
        rows = self.successResultOf(shown)
        self.assertEqual(rows[0]["text"], "hello")
        self.assertTrue(any("out of order" in row.get("reason", "") for row in rows[1:]))

    def test_forks_reported(self):
        """The server acknowledges bob's invite without storing it, and stores
        alice's entry at that place instead: bob's log and alice's differ. The
        first message from alice names her log; bob is told the room is forked."""
        alice, bob = self.room("alice", "bob")
        self.net.client("dave")
        self.net.client("frank")
        alice.session.set_role("#lab", "bob", "op")
        self.net.settle()
        on(self.net.of("bob"), swallow("APPEND"), to_server=True)
        on(self.net.of("bob"), drop("ENTRY"))
        bob.session.invite("#lab", "dave")
        self.net.settle()
        alice.session.invite("#lab", "frank")
        self.net.settle()
        self.say(alice, "which room are you in?")
        self.assertTrue(bob.of("room_forked"))
        refused = self.assertRaises(WireError, bob.session.send_text, "#lab", "still here?")
        self.assertEqual(refused.code, "ROOM_FORKED")

    def test_second_epoch_for_a_known_place(self):
        """The server shows bob another epoch entry (one alice also signed, which
        it acknowledged and dropped) where bob already has one: bob is told the
        server shows members different rooms."""
        alice, bob = self.room("alice", "bob")
        log = self.log(bob)
        before = log.state.copy()
        before_length = log.length
        alice.session.rotate("#lab")
        self.net.settle()
        recipients = [identity("alice").public, identity("bob").public]
        _, other, _ = author.epoch(identity("alice"), before, recipients, "another", 1)
        self.net.of("bob").push(line("ENTRY", "#lab", str(before_length),
                                     b64encode(other.data), b64encode(other.signature)))
        self.net.settle()
        self.assertTrue(bob.of("room_forked"))

    def test_unparseable_entry(self):
        """The server sends an entry too deeply nested to parse: the room is marked
        tampered with, and the client goes on (it does not fail on every fetch)."""
        alice, bob = self.room("alice", "bob")
        length = self.log(bob).length
        self.net.of("bob").push(line("ENTRY", "#lab", str(length), b64encode(b"[" * 5000),
                                     b64encode(b"s" * 384)))
        self.net.settle()
        self.assertTrue(bob.of("room_forked"))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_forged_rekey_of_the_owner(self):
        """The server makes a key of its own and claims alice's nick with it. bob
        is told alice's key changed; the new key owns nothing, so an invite it
        signs is refused and the room is shown as tampered with."""
        alice, bob = self.room("alice", "bob")
        state = self.log(bob).state
        forged = author.rekey(identity("mallory"), state, identity("alice").fingerprint,
                              "alice", 1)
        self.net.of("bob").push(line("ENTRY", "#lab", str(state.length),
                                     b64encode(forged.data), b64encode(forged.signature)))
        self.net.settle()
        self.assertEqual([e["nick"] for e in bob.of("identity_changed")], ["alice"])
        state = self.log(bob).state
        self.assertEqual(state.role(identity("mallory").fingerprint), "member")
        invite = author.invite(identity("mallory"), state, identity("eve").public, "eve", 1)
        self.net.of("bob").push(line("ENTRY", "#lab", str(state.length),
                                     b64encode(invite.data), b64encode(invite.signature)))
        self.net.settle()
        self.assertTrue(bob.of("room_forked"))

    def test_withheld_key_request(self):
        """The server never passes carol's key request on. After a few minutes she
        is told nobody answered and the server may be withholding her key."""
        alice, bob = self.room("alice", "bob")
        carol = self.net.client("carol")
        on(self.net.of("carol"), swallow("KEYREQ", ("OK", "1")), to_server=True)
        self.net.disconnect(alice)
        self.net.disconnect(bob)
        carol.session.join("#lab")
        self.net.settle()
        self.net.clock.advance(200)
        self.net.settle()
        [stalled] = carol.of("key_stalled")
        self.assertIn("no member has answered for 3 minutes", stalled["message"])
        self.assertIn("withholding", stalled["message"])
