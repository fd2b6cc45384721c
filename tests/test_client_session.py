"""Tests for securechat.client.session: real sessions against the real
service in one process (see tests.clientharness), and the attacks a member
(or the server) can make with single messages and key lines. Attacks on
rooms (their logs) are in tests.test_malicious_server."""

import os

from twisted.trial.unittest import SynchronousTestCase

from securechat.client.keyring import Commitment, RoomKeyring
from securechat.crypto.envelope import LogPosition, MessageHeader, seal
from securechat.crypto.identity import safety_number
from securechat.crypto.roomkeys import key_id, new_room_key, wrap_key
from tests.clientharness import Network
from tests.identities import identity


class ConversationTests(SynchronousTestCase):
    def setUp(self):
        self.net = Network()
        self.alice = self.net.client("alice")
        self.bob = self.net.client("bob")
        self.alice.session.join("#lab")
        self.net.settle()
        self.bob.session.join("#lab")
        self.net.settle()

    def say(self, rig, text, room="#lab"):
        rig.session.send_text(room, text)
        self.net.settle()

    def test_two_members_talk(self):
        """Each member reads the other's messages; each sender gets a 'sent' acknowledgement."""
        self.say(self.alice, "hello bob")
        self.say(self.bob, "hi alice")
        self.assertEqual(self.bob.texts(), [("alice", "hello bob")])
        self.assertEqual(self.alice.texts(), [("bob", "hi alice")])
        self.assertEqual([s["text"] for s in self.alice.of("sent")], ["hello bob"])

    def test_lost_wrap_is_asked_for_before_giving_up(self):
        """A member whose wrap for an epoch never arrived (its push lost, as when
        another daemon stored it while the bus between them was down) asks the
        server for it before saying he was never given the key, and reads the
        message, even once the room has moved on to a later epoch."""
        self.say(self.alice, "first")
        original, lost = self.bob.session.keywaits.on_key, []

        def lose_the_next_wrap(room, epoch, wrapper, wrap):
            if not lost:
                lost.append(epoch)
                return None
            return original(room, epoch, wrapper, wrap)

        self.bob.session.keywaits.on_key = lose_the_next_wrap
        # Nor does bob ask for it at once (his request would be lost too).
        self.bob.session.keywaits.request = lambda room: None
        self.alice.session.rotate("#lab")
        self.net.settle()
        self.say(self.alice, "in the epoch whose wrap was lost")
        self.alice.session.rotate("#lab")
        self.net.settle()
        self.assertEqual((lost, self.bob.session.rooms["#lab"].epoch), ([2], 3))
        self.assertEqual(self.bob.of("undecryptable"), [])
        self.assertIn(("alice", "in the epoch whose wrap was lost"), self.bob.texts())

    def test_request_crossing_our_wrap_gets_it_again(self):
        """A key request that crossed the wrap we made for that member (pushed
        again by the server, or by another daemon) is answered with that wrap,
        not with a new epoch: one join, one rotation."""
        self.say(self.alice, "first")
        epoch = self.alice.session.rooms["#lab"].epoch
        self.alice.session.rotator.answer("#lab", epoch, "bob")
        self.net.settle()
        self.assertEqual(self.alice.session.rooms["#lab"].epoch, epoch)
        self.assertIsNotNone(self.bob.session.keys.key("#lab", epoch))
        self.say(self.alice, "same epoch")
        self.assertIn(("alice", "same epoch"), self.bob.texts())

    def test_request_we_cannot_answer_any_more_is_let_go(self):
        """A key request pushed to a member the server no longer counts as a
        holder (its view moved on meanwhile) is let go quietly: the refusal of
        our answer is no error."""
        self.say(self.alice, "first")
        carol = self.net.client("carol")
        carol.session.keywaits.request = lambda room: None
        carol.session.join("#lab")
        self.net.settle()
        epoch = carol.session.rooms["#lab"].epoch
        self.assertIsNone(carol.session.keys.key("#lab", epoch))
        carol.session.rotator.answer("#lab", epoch, "bob")
        self.net.settle()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_server_cannot_read(self):
        """What the server stores is ciphertext: no message text appears in its database."""
        self.say(self.alice, "the launch code is 0000")
        connection = self.net.server.service.store._runner.connection
        dump = "\n".join(connection.iterdump()).encode()
        self.assertNotIn(b"launch code", dump)
        for (token,) in connection.execute("SELECT token FROM messages"):
            self.assertNotIn(b"launch", token)

    def test_newcomer_while_everyone_offline(self):
        """Carol joins while no key holder is online: she is told she waits, and once
        alice is back she gets a key and reads what follows."""
        self.say(self.alice, "before carol")
        self.net.disconnect(self.alice)
        self.net.disconnect(self.bob)
        carol = self.net.client("carol")
        carol.session.join("#lab")
        self.net.settle()
        self.assertEqual(carol.of("key_pending")[0]["message"], "waiting for a room key from a member")
        alice = self.net.restart_client(self.alice)
        self.net.settle()
        self.assertTrue(carol.of("key_received"))
        self.say(alice, "welcome carol")
        self.assertIn(("alice", "welcome carol"), carol.texts())
        self.assertNotIn(("alice", "before carol"), carol.texts())

    def test_shared_history_backlog(self):
        """In a shared-history room, a newcomer served while everyone was offline reads
        the whole backlog once a holder comes back."""
        self.alice.session.rotate("#lab", "share history", history="shared")
        self.net.settle()
        self.say(self.alice, "old news")
        self.say(self.bob, "older still? no, newer")
        self.net.disconnect(self.alice)
        self.net.disconnect(self.bob)
        carol = self.net.client("carol")
        carol.session.join("#lab")
        self.net.settle()
        self.assertEqual(carol.texts(), [])
        self.net.restart_client(self.bob)
        self.assertEqual(carol.texts(), [("alice", "old news"), ("bob", "older still? no, newer")])

    def test_kicked_member_cannot_read_after_rotation(self):
        """After a kick, the next message goes out under a key the kicked member never gets."""
        carol = self.net.client("carol")
        carol.session.join("#lab")
        self.net.settle()
        self.say(self.alice, "all three")
        self.alice.session.kick("#lab", "carol")
        self.net.settle()
        self.assertEqual(carol.of("left")[0]["how"], "kick")
        self.say(self.alice, "carol is gone")
        self.assertIn(("alice", "carol is gone"), self.bob.texts())
        self.assertNotIn(("alice", "carol is gone"), carol.texts())
        epoch = self.alice.session.rooms["#lab"].epoch
        self.assertIsNone(carol.session.keys.key("#lab", epoch))
        self.assertIsNotNone(self.bob.session.keys.key("#lab", epoch))

    def test_simultaneous_rotations_lose_nothing(self):
        """Two members rotating at once: one epoch wins, and both members' messages arrive."""
        self.alice.session.rotate("#lab")
        self.bob.session.rotate("#lab")
        self.alice.session.send_text("#lab", "from alice")
        self.bob.session.send_text("#lab", "from bob")
        self.net.settle()
        self.assertIn(("bob", "from bob"), self.alice.texts())
        self.assertIn(("alice", "from alice"), self.bob.texts())
        self.assertEqual(self.alice.session.rooms["#lab"].epoch, self.bob.session.rooms["#lab"].epoch)

    def test_offline_member_catches_up(self):
        """A member who was offline reads what was sent meanwhile when they come back."""
        self.say(self.alice, "first")
        self.net.disconnect(self.bob)
        self.say(self.alice, "while you were away")
        bob = self.net.restart_client(self.bob)
        self.assertEqual(bob.texts(), [("alice", "while you were away")])

    def test_outbox_survives_disconnect(self):
        """Messages queued while disconnected go out after reconnecting, once each."""
        self.net.disconnect(self.alice)
        self.alice.session.send_text("#lab", "queued 1")
        self.alice.session.send_text("#lab", "queued 2")
        alice = self.net.restart_client(self.alice)
        self.assertEqual([s["text"] for s in alice.of("sent")], ["queued 1", "queued 2"])
        self.assertEqual(self.bob.texts(), [("alice", "queued 1"), ("alice", "queued 2")])

    def test_lost_ack_is_retried_idempotently(self):
        """If the connection drops after the server stored a message but before its ack
        arrived, the retry is recognised and the message is shown once."""
        self.alice.session.send_text("#lab", "exactly once")
        pump = self.alice.pump
        pump.serverIO.bufferReceived(pump.clientIO.getOutBuffer())
        self.net.clock.advance(0)
        self.assertIn(b"OK", pump.serverIO.getOutBuffer())
        self.net.disconnect(self.alice)
        self.assertEqual(self.alice.of("sent"), [])
        alice = self.net.restart_client(self.alice)
        self.assertEqual([s["text"] for s in alice.of("sent")], ["exactly once"])
        self.assertEqual(self.bob.texts(), [("alice", "exactly once")])


    def test_rotation_cut_by_disconnect_resumes(self):
        """If the connection drops after the server stored a rotation but before its
        reply arrived, the client re-keys after reconnecting and the burst goes out."""
        for n in range(101):
            self.alice.session.send_text("#lab", f"m {n}")
        pump = self.alice.pump
        for _ in range(1000):
            if b"ROTATE" in b"".join(pump.clientIO.stream):
                break
            pump.pump()
            self.net.clock.advance(0.01)
        rotate = pump.clientIO.getOutBuffer()
        self.assertIn(b"ROTATE", rotate)
        pump.serverIO.bufferReceived(rotate)
        self.net.clock.advance(1)
        self.assertIn(b"OK", pump.serverIO.getOutBuffer())
        self.net.disconnect(self.alice)
        alice = self.net.restart_client(self.alice)
        self.net.settle()
        self.assertIn("m 100", [s["text"] for s in alice.of("sent")])
        self.assertEqual(self.bob.texts(), [("alice", f"m {n}") for n in range(101)])
    def test_burst_across_forced_rotations(self):
        """A burst longer than an epoch may carry is paced, re-keyed every 100 messages,
        and arrives whole and in order."""
        carol = self.net.client("carol")
        carol.session.join("#lab")
        self.net.settle()
        for n in range(250):
            self.alice.session.send_text("#lab", f"burst {n}")
        self.net.settle()
        self.assertEqual(len(self.alice.of("sent")), 250)
        self.assertEqual(self.bob.texts(), [("alice", f"burst {n}") for n in range(250)])
        self.assertEqual(len(carol.texts()), 250)
        self.assertLessEqual(len(self.alice.of("rotated")), 4)

    def test_state_from_an_earlier_version_loads(self):
        """Saved rooms without the newer fields, and plain-number sender counters, load."""
        self.say(self.alice, "before")
        saved = self.bob.saved
        for room in saved["rooms"]:
            for key in ("told", "unreadable"):
                room.pop(key, None)
            room["senders"] = {"alice": 1}
        self.net.disconnect(self.bob)
        bob = self.net.client("bob", saved)
        self.say(self.alice, "after")
        self.assertEqual(bob.texts(), [("alice", "after")])

    def test_sequence_numbers_survive_a_part_and_a_rejoin(self):
        """After a part and a rejoin, a member's messages go on from the seq they had
        reached (the server refuses a seq used before): none is lost (class D)."""
        for n in range(3):
            self.say(self.bob, f"before {n}")
        self.bob.session.part("#lab")
        self.net.settle()
        self.bob.session.join("#lab")
        self.net.settle()
        self.say(self.bob, "after the rejoin")
        self.assertEqual(self.bob.of("error"), [])
        self.assertIn(("bob", "after the rejoin"), self.alice.texts())

    def test_seq_reused_is_sent_again_not_lost(self):
        """A client that lost its counters (a state from an old backup) has its
        message refused as SEQ_REUSED: it goes again under a new seq, never lost."""
        self.say(self.bob, "one")
        self.say(self.bob, "two")
        self.bob.session.sender.next_seqs.clear()
        self.say(self.bob, "three")
        self.assertEqual(self.bob.of("error"), [])
        self.assertEqual([t for _, t in self.alice.texts()], ["one", "two", "three"])

    def test_verify_safety_number(self):
        """/verify shows the same safety number on both sides."""
        self.alice.session.verify("bob")
        self.bob.session.verify("alice")
        self.net.settle()
        [a], [b] = self.alice.of("safety_number"), self.bob.of("safety_number")
        self.assertEqual(a["number"], b["number"])
        expected = safety_number(identity("alice").public, "alice", identity("bob").public, "bob")
        self.assertEqual(a["number"].replace(" ", ""), expected)

    def test_verification_is_recorded_and_kept(self):
        """/verify NICK then /verify NICK yes marks the peer verified, and the mark
        survives a restart of the client."""
        self.alice.session.verify("bob")
        self.alice.session.verify("bob", confirm=True)
        self.net.settle()
        self.assertTrue(self.alice.session.pins.verified("bob"))
        alice = self.net.restart_client(self.alice)
        self.assertTrue(alice.session.pins.verified("bob"))

    def test_confirming_needs_the_number_shown(self):
        """Confirming a verification without having been shown the number is refused."""
        failure = self.failureResultOf(self.alice.session.verify("bob", confirm=True))
        self.assertIn("first /verify bob", failure.getErrorMessage())
        self.assertFalse(self.alice.session.pins.verified("bob"))


class MessageAttackTests(SynchronousTestCase):
    """Single messages and key lines as a malicious server or member makes them."""

    def setUp(self):
        self.net = Network()
        self.alice, self.bob = self.net.members("alice", "bob")
        self.alice.session.send_text("#lab", "hello")
        self.net.settle()

    def forge_message(self, signer, claimed_sender, text, seq=50, epoch=None, room="#lab"):
        """A MESSAGE line as a malicious server or member could make it."""
        log = self.alice.session.logs.get("#lab")
        epoch = epoch or log.state.epoch
        key = self.alice.session.keys.key("#lab", epoch)
        message_id = os.urandom(16)
        token, signature = seal(key, identity(signer), MessageHeader(room, epoch, seq, message_id),
                                text, 1, LogPosition(log.length, log.state.head))
        return {"room": "#lab", "server_seq": 99, "sender": claimed_sender, "epoch": epoch,
                "seq": seq, "message_id": message_id, "token": token, "signature": signature,
                "received_ms": 0}

    def stored(self):
        row = self.net.server.service.store._runner.connection.execute(
            "SELECT server_seq, epoch, seq, message_id, token, signature FROM messages").fetchone()
        return {"room": "#lab", "sender": "alice", "received_ms": 0,
                **dict(zip(["server_seq", "epoch", "seq", "message_id", "token", "signature"],
                           row))}

    def test_replayed_message_shown_once(self):
        """A message the server delivers twice is shown once."""
        [original] = self.bob.of("message")
        self.bob.session.server_event("MESSAGE", self.stored())
        self.net.settle()
        self.assertEqual(self.bob.of("message"), [original])

    def test_old_message_replayed_after_seen_window(self):
        """A message replayed after its id left the remembered window is still refused."""
        self.bob.session.rooms["#lab"].seen.clear()
        self.bob.session.server_event("MESSAGE", self.stored())
        self.net.settle()
        self.assertEqual(len(self.bob.of("message")), 1)
        [refused] = self.bob.of("verification_failed")
        self.assertIn("a replay", refused["reason"])

    def test_first_seen_out_of_order_is_not_a_replay(self):
        """A sender's earlier message shown after a later one is not mistaken for a replay,
        and a huge seq jump costs no memory."""
        room = self.bob.session.rooms["#lab"]
        room.senders.clear()
        late = self.forge_message("alice", "alice", "ten", seq=10)
        early = self.forge_message("alice", "alice", "nine", seq=9)
        huge = self.forge_message("alice", "alice", "far", seq=2**62)
        for message in (late, early, huge):
            self.bob.session.server_event("MESSAGE", message)
            self.net.settle()
        self.assertEqual([m["text"] for m in self.bob.of("message")][-3:], ["ten", "nine", "far"])
        self.assertLessEqual(len(room.senders["alice"]["holes"]), 1000)

    def test_message_moved_to_other_room(self):
        """A token moved to another room fails verification, visibly."""
        self.bob.session.join("#other")
        self.net.settle()
        forged = self.forge_message("alice", "alice", "secret", room="#lab")
        self.bob.session.server_event("MESSAGE", {**forged, "room": "#other", "epoch": 1})
        self.net.settle()
        failures = self.bob.of("verification_failed") + self.bob.of("undecryptable")
        self.assertTrue(failures)
        self.assertNotIn("secret", [m["text"] for m in self.bob.of("message")])

    def test_member_forges_sender(self):
        """Bob signing a message as alice is caught: shown as failed, never as alice's words."""
        self.bob.session.server_event("MESSAGE", self.forge_message("bob", "alice", "I owe bob $100"))
        self.net.settle()
        [failed] = self.bob.of("verification_failed")
        self.assertIn("failed verification", failed["message"])
        self.assertNotIn(("alice", "I owe bob $100"), self.bob.texts())

    def test_message_from_someone_not_in_the_log(self):
        """A message under a nick the room's log does not have is refused, named."""
        self.net.client("mallory")
        forged = self.forge_message("mallory", "mallory", "let me in")
        self.bob.session.server_event("MESSAGE", forged)
        self.net.settle()
        [failed] = self.bob.of("verification_failed")
        self.assertIn("no member mallory", failed["reason"])

    def test_bit_flipped_token(self):
        """A corrupted token is reported, not shown and not a crash."""
        forged = self.forge_message("alice", "alice", "intact")
        token = bytearray(forged["token"])
        token[30] ^= 0x01
        self.bob.session.server_event("MESSAGE", {**forged, "token": bytes(token)})
        self.net.settle()
        self.assertEqual(len(self.bob.of("verification_failed")), 1)

    def test_sequence_gap_reported(self):
        """If the server drops a message, the receiver is told how many are missing."""
        self.bob.session.server_event("MESSAGE", self.forge_message("alice", "alice", "later", seq=4))
        self.net.settle()
        [gap] = self.bob.of("gap")
        self.assertEqual((gap["nick"], gap["missing"]), ("alice", 2))
        self.assertEqual(gap["message"], "2 messages from alice missing")

    def test_no_gap_notice_for_a_message_reported_unreadable(self):
        """A message already reported unreadable is not counted missing again by the
        gap check when the sender's next one arrives (class E)."""
        flipped = self.forge_message("alice", "alice", "lost", seq=2)
        token = bytearray(flipped["token"])
        token[30] ^= 0x01
        self.bob.session.server_event("MESSAGE", {**flipped, "token": bytes(token)})
        self.net.settle()
        self.bob.session.server_event("MESSAGE", self.forge_message("alice", "alice", "next",
                                                                    seq=3))
        self.net.settle()
        self.assertEqual(len(self.bob.of("verification_failed")), 1)
        self.assertEqual(self.bob.of("gap"), [])

    def test_pending_message_not_duplicated(self):
        """A message waiting for its key, delivered again on reconnect, is kept once."""
        forged = self.forge_message("alice", "alice", "once", seq=2)
        room = self.bob.session.rooms["#lab"]
        self.bob.session.keys = RoomKeyring()
        self.bob.session.server_event("MESSAGE", forged)
        self.bob.session.server_event("MESSAGE", forged)
        self.assertEqual(len(room.pending), 1)

    def test_split_view_key_detected(self):
        """A wrap of a key other than the one the epoch's entry commits to is refused."""
        epoch = self.bob.session.logs.get("#lab").state.epoch
        wrong = wrap_key(new_room_key(), identity("bob").public, "#lab", epoch)
        right = self.bob.session.keys.commitment("#lab", epoch)
        self.bob.session.keys = RoomKeyring()
        self.bob.session.keys.commit(right)
        self.bob.session.server_event("KEY", {"room": "#lab", "epoch": epoch, "wrapper": "alice",
                                              "wrap": wrong})
        [failed] = self.bob.of("verification_failed")
        self.assertIn("not the one its epoch commits to", failed["reason"])

    def test_wrap_for_someone_else(self):
        """A wrap addressed to another member is refused."""
        wrong = wrap_key(new_room_key(), identity("carol").public, "#lab", 7)
        self.bob.session.server_event("KEY", {"room": "#lab", "epoch": 7, "wrapper": "alice",
                                              "wrap": wrong})
        [failed] = self.bob.of("verification_failed")
        self.assertIn("not wrapped for us", failed["reason"])

    def test_key_before_its_entry_waits_for_it(self):
        """A wrap that arrives before its epoch's entry is kept unchecked, and used
        once the entry commits to it; never before."""
        keys = RoomKeyring()
        key = new_room_key()
        wrap = wrap_key(key, identity("bob").public, "#x", 1)
        self.assertFalse(keys.add_wrap(identity("bob"), "#x", 1, wrap))
        self.assertIsNone(keys.key("#x", 1))
        keys.commit(Commitment("#x", 1, key_id(key, "#x", 1)))
        self.assertEqual(keys.key("#x", 1), key)
