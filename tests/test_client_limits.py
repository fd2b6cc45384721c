"""Tests for the limits both ends keep to (securechat.client.limits) and for
a client that survives what a server sends: lines it cannot read, limits it
announces, rooms left while offline. Real sessions against the real service
(tests.clientharness)."""

import os

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from securechat.client.limits import PACING_MARGIN, ServerLimits, stored_size
from securechat.crypto.envelope import MAX_MESSAGE_BYTES
from securechat.server.limits import SECONDS_PER_DAY, StorageLimits
from securechat.server.store import MessageRow, StorageFull
from securechat.wire.grammar import MAX_TOKEN_BYTES
from securechat.wire.limits import AnnouncedLimits
from tests.clientharness import Network


def announced(**overrides) -> AnnouncedLimits:
    values = {"lines_per_second": 200, "line_burst": 400, "max_line": 65536,
              "max_message_bytes": MAX_MESSAGE_BYTES, "store_bytes_per_second": 32768,
              "store_burst_bytes": 1 << 20, "store_bytes_per_day": 1 << 27, **overrides}
    return AnnouncedLimits(**values)


class ServerLimitsTests(SynchronousTestCase):
    def test_message_at_the_limit_is_accepted_one_byte_more_refused(self):
        """A message of exactly the announced maximum may be sent; one byte more is
        refused with its size, the limit and what to do."""
        limits = ServerLimits(announced(max_message_bytes=47_000).encode())
        self.assertIsNone(limits.check_message("x" * 47_000))
        self.assertEqual(limits.check_message("x" * 71_204),
                         "message too long: 71,204 bytes, at most 47,000; split it or "
                         "shorten it")

    def test_never_more_than_this_client_can_seal(self):
        """A server announcing more than fits a line is held to what does."""
        limits = ServerLimits(announced(max_message_bytes=10**9).encode())
        self.assertEqual(limits.max_message_bytes, MAX_MESSAGE_BYTES)

    def test_limits_known_before_the_first_login(self):
        """Offline and before any login, the client's own maximum applies."""
        self.assertEqual(ServerLimits().max_message_bytes, MAX_MESSAGE_BYTES)

    def test_a_server_announcing_zero_cannot_stop_every_line(self):
        """Zero lines per second from a hostile server still lets a line through a second."""
        limits = ServerLimits()
        limits.start(announced(lines_per_second=0, line_burst=0), 0.0)
        self.assertTrue(limits.take_line(0.0))
        self.assertLessEqual(limits.line_delay(0.0), 1.0)

    def test_storage_budget_paces_messages(self):
        """Messages past the announced byte burst wait for the budget to refill."""
        limits = ServerLimits()
        limits.start(announced(store_bytes_per_second=1000, store_burst_bytes=100_000), 0.0)
        text = "x" * 40_000
        sent = 0
        while limits.take_message(text, 0.0):
            sent += 1
        self.assertEqual(sent, int(100_000 * PACING_MARGIN) // stored_size(text))
        self.assertGreater(limits.message_delay(text, 0.0), 1.0)


class UnreadableLineTests(SynchronousTestCase):
    """A line the client cannot read is reported, passed over and never fetched again."""

    def setUp(self):
        self.net = Network()
        self.alice, self.bob = self.net.members("alice", "bob")
        self.alice.session.send_text("#lab", "before")
        self.net.settle()

    def store_broken(self, token_bytes: int) -> int:
        """A message from alice stored as no honest server would store it; its seq."""
        service = self.net.server.service
        room = service.rooms.find("#lab")
        alice = service.accounts.find("alice")
        [result] = self.successResultOf(service.store.append_messages([MessageRow(
            room.id, alice.id, room.epoch, 99, os.urandom(16), b"t" * token_bytes,
            b"s" * 384, 0.0)]))
        return result.server_seq

    def catch_up_over(self, token_bytes: int) -> int:
        self.net.disconnect(self.bob)
        seq = self.store_broken(token_bytes)
        self.bob = self.net.restart_client(self.bob)
        self.net.settle()
        return seq

    def assert_reported_once_and_read_on(self, seq: int, reason: str):
        [report] = self.bob.of("undecryptable")
        self.assertEqual((report["room"], report["server_seq"], report["nick"]),
                         ("#lab", seq, "alice"))
        self.assertTrue(report["message"].startswith(
            "a message from alice could not be shown: the server sent it malformed ("))
        self.assertIn(reason, report["message"])
        self.assertTrue(self.bob.session.live)
        self.alice.session.send_text("#lab", "after")
        self.net.settle()
        self.assertIn(("alice", "after"), self.bob.texts())
        self.assertNotIn("ERROR", self.bob.sent_verbs())
        self.assertGreaterEqual(self.bob.saved["rooms"][0]["last_seq"], seq)

    def test_malformed_message_in_catch_up(self):
        """A MESSAGE whose token the grammar refuses is one report; the client stays
        connected, reads on, and a restart does not fetch or report it again."""
        seq = self.catch_up_over(MAX_TOKEN_BYTES + 1)
        self.assert_reported_once_and_read_on(seq, "BAD_ARGUMENTS")
        self.bob = self.net.restart_client(self.bob)
        self.net.settle()
        self.assertEqual(self.bob.of("undecryptable"), [])

    def test_line_over_the_limit_in_catch_up(self):
        """A line longer than any the server may send is skipped as it arrives,
        reported by what its start says, and the lines after it are read."""
        seq = self.catch_up_over(60_000)
        self.assert_reported_once_and_read_on(seq, "longer than 65536 bytes")

    def test_message_at_the_limit_reaches_a_member_catching_up(self):
        """The lockout of issue 14: a message of the largest size, sent while a member
        is away, reaches them when they come back; so does the next one."""
        self.net.disconnect(self.bob)
        self.alice.session.send_text("#lab", "é" * (MAX_MESSAGE_BYTES // 2))
        self.net.settle()
        self.bob = self.net.restart_client(self.bob)
        self.net.settle()
        self.assertEqual([len(t.encode()) for _, t in self.bob.texts()][-1], MAX_MESSAGE_BYTES)
        self.assertTrue(self.bob.session.live)


class OfflinePartTests(SynchronousTestCase):
    def test_part_while_offline_is_sent_after_login(self):
        """/part while disconnected leaves the room at once here, and the server is
        told after the next login, before the room could be listed again."""
        net = Network()
        alice, bob = net.members("alice", "bob")
        net.disconnect(bob)
        self.successResultOf(bob.session.part("#lab", "bye"))
        self.assertNotIn("#lab", bob.session.rooms)
        self.assertEqual(bob.of("left")[-1]["room"], "#lab")
        bob = net.restart_client(bob)
        net.settle()
        self.assertNotIn("#lab", bob.session.rooms)
        self.assertEqual(bob.saved["parts_waiting"], [])
        room = net.server.service.rooms.find("#lab")
        self.assertNotIn(net.server.service.accounts.find("bob").id, room.members)
        self.assertIn("bob", [m["nick"] for m in alice.of("member_left")])


class WaitingMessagesTests(SynchronousTestCase):
    """A message the server cannot take yet stays in the outbox, the user is told
    once, and it goes out by itself: never lost, never silently late."""

    def rigs(self, **server_options):
        net = Network(**server_options)
        return (net, *net.members("alice", "bob"))

    def test_daily_budget_spent_waits_for_the_next_day(self):
        """Past the day's storage budget the message waits, the user hears when it goes
        (once), and it is delivered after the UTC day turns."""
        net, alice, bob = self.rigs(storage=StorageLimits(0, 0, 6000))
        for n in range(12):
            alice.session.send_text("#lab", f"message {n}")
        net.settle()
        [told] = alice.of("send_waiting")
        self.assertIn("go out in", told["message"])
        self.assertLess(len(bob.texts()), 12)
        net.clock.advance(SECONDS_PER_DAY - net.clock.seconds() + 1)
        net.settle()
        net.clock.advance(SECONDS_PER_DAY)
        net.settle()
        self.assertEqual([t for _, t in bob.texts()], [f"message {n}" for n in range(12)])
        self.assertEqual(alice.of("error"), [])

    def test_full_disk_keeps_the_message_until_there_is_room(self):
        """STORAGE_FULL: the message waits in the outbox, the user is told the disk is
        full, and it is sent once the disk has room again."""
        net, alice, bob = self.rigs()
        store = net.server.service.messages._store
        append = store.append_messages
        store.append_messages = lambda rows: defer.fail(StorageFull("database or disk is full"))
        alice.session.send_text("#lab", "waits for room")
        net.settle()
        [told] = alice.of("send_waiting")
        self.assertEqual(told["code"], "STORAGE_FULL")
        self.assertEqual(len(alice.session.outbox), 1)
        store.append_messages = append
        net.clock.advance(10)
        net.settle()
        self.assertEqual(bob.texts(), [("alice", "waits for room")])
