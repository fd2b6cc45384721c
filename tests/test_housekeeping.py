"""Tests for bounded storage: each user's byte budget, retention and the
background purge (securechat.server.housekeeping), a full disk, and the
registration rate per address. The real service over scripted clients,
on a task.Clock."""

import sqlite3

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from securechat.constants import ROOM_PURGE_BATCH
from securechat.server.limits import SECONDS_PER_DAY, StorageBudget, StorageLimits
from securechat.server.service import ChatService, ServiceSettings
from securechat.server.sqlite_store import InlineRunner, SQLiteStore, configure_connection
from securechat.server.sqlite_writer import GroupCommitWriter
from securechat.server.store import StorageFull
from securechat.wire import Code, WireError
from tests.serverharness import SERVER_NAME, Server, decode, verbs_of
from tests.logscript import Members
from tests.test_service import error_code

DAY = SECONDS_PER_DAY


class StorageBudgetTests(SynchronousTestCase):
    def test_rate_refusal_says_how_long_to_wait(self):
        """Past the burst a charge is RATE_LIMITED with the wait until it would pass."""
        budget = StorageBudget(StorageLimits(1000, 5000, 0))
        budget.charge(1, 5000, 0.0)
        with self.assertRaises(WireError) as caught:
            budget.charge(1, 2000, 0.0)
        self.assertEqual(caught.exception.code, Code.RATE_LIMITED)
        self.assertAlmostEqual(caught.exception.retry_after, 2.0)
        budget.charge(1, 2000, 2.0)
        budget.charge(2, 5000, 2.0)

    def test_daily_total_waits_for_the_next_day(self):
        """Over the day's total a charge waits until the UTC day ends; then it passes."""
        budget = StorageBudget(StorageLimits(0, 0, 10_000))
        now = 3 * DAY + 3600
        budget.charge(1, 9_000, now)
        with self.assertRaises(WireError) as caught:
            budget.charge(1, 2_000, now)
        self.assertEqual(caught.exception.retry_after, DAY - 3600)
        self.assertIn("the most this server keeps per user per day", caught.exception.text)
        budget.charge(1, 2_000, 4 * DAY)

    def test_refund_gives_the_budget_back(self):
        """A charge for a message that was not stored is given back, day and rate."""
        budget = StorageBudget(StorageLimits(1000, 5000, 6000))
        budget.charge(1, 5000, 0.0)
        budget.refund(1, 5000, 0.0)
        budget.charge(1, 5000, 0.0)
        self.assertEqual(budget.used(1, 0.0), 5000)

    def test_totals_read_back_are_not_counted_twice(self):
        """What was written down and read back (with other daemons' bytes) replaces
        the written part; what was stored since is counted on top, once."""
        budget = StorageBudget(StorageLimits(0, 0, 100_000))
        budget.charge(1, 1000, 0.0)
        day, unsaved = budget.take_unsaved(0.0)
        self.assertEqual((day, unsaved), (0, {1: 1000}))
        budget.charge(1, 500, 0.0)
        budget.stored_today(day, {1: 1000 + 7000})
        self.assertEqual(budget.used(1, 0.0), 8500)

    def test_failed_write_keeps_the_counts(self):
        """Counts whose writing failed are kept for the next try."""
        budget = StorageBudget(StorageLimits(0, 0, 100_000))
        budget.charge(1, 1000, 0.0)
        _, unsaved = budget.take_unsaved(0.0)
        budget.restore(unsaved)
        self.assertEqual(budget.take_unsaved(0.0), (0, {1: 1000}))


class ServiceBudgetTests(SynchronousTestCase):
    def setUp(self):
        self.server = Server(storage=StorageLimits(bytes_per_second=100, burst_bytes=1000,
                                                   bytes_per_day=0))
        self.alice = self.server.user("alice")
        self.keys = Members()
        self.keys.join(self.alice, "alice", "#lab")
        self.keys.rotate(self.alice, "alice", "#lab", ["alice"])

    def test_budget_announced_at_login(self):
        """LIMITS, before the login's OK, tells the client the budget it is held to."""
        self.assertEqual((self.alice.limits.store_bytes_per_second,
                          self.alice.limits.store_burst_bytes), (100, 1000))

    def test_over_budget_is_rate_limited_with_the_wait_and_not_stored(self):
        """Past the budget a message is refused RATE_LIMITED after a RETRY line, nothing
        is stored, and once the budget refilled the same message goes through."""
        self.keys.message(self.alice, "alice", "#lab", 1, seq=1)
        frames = self.keys.message(self.alice, "alice", "#lab", 1, seq=2)
        self.assertEqual(verbs_of(frames), ["RETRY", "ERROR"])
        self.assertEqual(error_code(frames), "RATE_LIMITED")
        self.assertEqual(self.server.service.rooms.find("#lab").last_seq, 1)
        self.server.clock.advance(decode(frames[0])["after_ms"] / 1000)
        self.assertEqual(verbs_of(self.keys.message(self.alice, "alice", "#lab", 1, seq=2)),
                         ["OK"])

    def test_retry_of_a_stored_message_costs_nothing(self):
        """Sending a stored message again (DUPLICATE) gives its charge back."""
        message_id = b"\x01" * 16
        self.keys.message(self.alice, "alice", "#lab", 1, seq=1, message_id=message_id)
        used = self.server.service.budget.used(self.server.service.accounts.find("alice").id,
                                              self.server.clock.seconds())
        self.server.clock.advance(100)
        self.assertEqual(verbs_of(self.keys.message(self.alice, "alice", "#lab", 1, seq=1,
                                                    message_id=message_id)), ["DUPLICATE"])
        self.assertEqual(self.server.service.budget.used(
            self.server.service.accounts.find("alice").id, self.server.clock.seconds()), used)

    def test_day_totals_survive_a_restart(self):
        """The day's bytes are written down in the background and read at start,
        so a restarted daemon goes on counting from them."""
        service = self.server.service
        self.keys.message(self.alice, "alice", "#lab", 1, seq=1)
        alice_id = service.accounts.find("alice").id
        used = service.budget.used(alice_id, self.server.clock.seconds())
        self.successResultOf(service.housekeeping.sync_usage())
        restarted = ChatService(service.store, self.server.clock,
                                ServiceSettings(SERVER_NAME), run_blocking=defer.maybeDeferred)
        restarted.startService()
        self.assertEqual(restarted.budget.used(alice_id, self.server.clock.seconds()), used)


class RetentionTests(SynchronousTestCase):
    def setUp(self):
        self.server = Server(retention_days=30, storage=StorageLimits(0, 0, 0))
        self.service = self.server.service
        self.alice = self.server.user("alice")
        self.bob = self.server.user("bob")
        self.keys = Members()
        self.keys.join(self.alice, "alice", "#lab")
        self.keys.join(self.bob, "bob", "#lab")
        self.keys.rotate(self.alice, "alice", "#lab", ["alice", "bob"])
        self.bob.frames()
        self.service.rooms.find("#lab").epoch_messages = -10**6

    def stop_background_jobs(self):
        """Each test runs the purge itself, to see what one run does."""
        self.successResultOf(self.service.housekeeping.stop())

    def send(self, count, text="x", epoch=1):
        """C{count} messages from alice, paced within the flood limit."""
        for _ in range(count):
            self.server.clock.advance(0.01)
            self.keys.message(self.alice, "alice", "#lab", epoch, text)

    def expire(self):
        return self.successResultOf(self.service.housekeeping.expire_messages())

    def test_expiry_runs_by_itself(self):
        """Nobody runs anything: within the hour after messages expire, they are gone."""
        self.send(2)
        self.server.clock.advance(30 * DAY + 3600)
        self.bob.frames()
        history = self.bob.request("HISTORY", "#lab", "after", "0", "500")
        self.assertEqual(verbs_of(history), ["OK"])

    def test_expired_messages_go_in_batches_and_seqs_go_on(self):
        """Messages older than the retention are deleted, a batch per transaction;
        newer ones stay; the next message continues the room's server_seq."""
        self.stop_background_jobs()
        self.send(ROOM_PURGE_BATCH + 5)
        self.server.clock.advance(31 * DAY)
        self.keys.rotate(self.alice, "alice", "#lab", ["alice", "bob"])
        self.send(2, epoch=2)
        self.assertEqual(self.expire(), ROOM_PURGE_BATCH + 5)
        self.bob.frames()
        kept = self.bob.request("HISTORY", "#lab", "after", "0", "500")
        self.assertEqual([decode(f)["server_seq"] for f in kept if f.verb == "MESSAGE"],
                         [ROOM_PURGE_BATCH + 6, ROOM_PURGE_BATCH + 7])

    def test_a_room_emptied_by_expiry_never_reuses_a_seq(self):
        """With every message expired, and after a restart, the next one gets the next seq."""
        self.stop_background_jobs()
        self.send(3)
        self.server.clock.advance(31 * DAY)
        self.assertEqual(self.expire(), 3)
        restarted = ChatService(self.service.store, self.server.clock,
                                ServiceSettings(SERVER_NAME), run_blocking=defer.maybeDeferred)
        restarted.startService()
        self.assertEqual(restarted.rooms.find("#lab").last_seq, 3)
        self.keys.rotate(self.alice, "alice", "#lab", ["alice", "bob"])
        ack = self.keys.message(self.alice, "alice", "#lab", 2)[-1]
        self.assertEqual((ack.verb, ack.args), ("OK", ("4",)))

    def test_room_asks_for_less_never_for_more(self):
        """The owner's SET retention shortens the room's retention; the server's stays
        the most; the ROOM line says which applies; others may not set it."""
        self.stop_background_jobs()
        self.assertEqual(error_code(self.bob.request("SET", "#lab", "retention", "7")),
                         "NOT_ALLOWED")
        self.assertEqual(error_code(self.alice.request("SET", "#lab", "retention", "soon")),
                         "BAD_ARGUMENTS")
        self.assertEqual(verbs_of(self.alice.request("SET", "#lab", "retention", "7")),
                         ["SETTINGS", "OK"])
        self.send(1)
        self.server.clock.advance(8 * DAY)
        self.assertEqual(self.expire(), 1)
        self.alice.request("SET", "#lab", "retention", "365")
        [room] = [f for f in self.keys.join(self.alice, "alice", "#lab") if f.verb == "ROOM"]
        self.assertIn("retention=30", decode(room)["flags"])


class DiskFullTests(SynchronousTestCase):
    """A full disk refuses writes with STORAGE_FULL, keeps serving reads, loses
    nothing acknowledged, and recovers by itself once there is room. The
    daemon's own writer, on a file whose size SQLite is told to cap: SQLite
    reports a full disk (ENOSPC) and a reached cap the same way."""

    def setUp(self):
        path = self.mktemp()
        clock = task.Clock()
        self.writer_connection = sqlite3.connect(path, isolation_level=None,
                                                 check_same_thread=False)
        configure_connection(self.writer_connection)
        store = SQLiteStore(GroupCommitWriter(self.writer_connection, clock,
                                              defer.maybeDeferred), InlineRunner(path))
        self.server = Server(clock=clock, store=store)
        clock.advance(0)
        self.alice, self.bob = self.server.user("alice"), self.server.user("bob")
        self.keys = Members()
        self.keys.join(self.alice, "alice", "#lab")
        self.keys.join(self.bob, "bob", "#lab")
        self.keys.rotate(self.alice, "alice", "#lab", ["alice", "bob"])
        self.server.service.rooms.find("#lab").epoch_messages = -10**6

    def fill_the_disk(self):
        pages = self.writer_connection.execute("PRAGMA page_count").fetchone()[0]
        self.writer_connection.execute(f"PRAGMA max_page_count = {pages}")

    def test_writes_refused_reads_served_nothing_acknowledged_lost(self):
        """Once full, a message is refused STORAGE_FULL (never INTERNAL, never a
        false OK); history still reads; every acknowledged message is there; with
        room again, the same client sends on without anything else happening."""
        acked = set()
        for n in range(3):
            [ack] = self.keys.message(self.alice, "alice", "#lab", 1, f"before {n}")
            acked.add(int(ack.args[0]))
        self.fill_the_disk()
        refused = 0
        for n in range(40):
            frames = self.keys.message(self.alice, "alice", "#lab", 1, "y" * 4000)
            if frames[0].verb == "OK":
                acked.add(int(frames[0].args[0]))
            else:
                self.assertEqual(error_code(frames), "STORAGE_FULL")
                refused += 1
        self.assertGreater(refused, 30)
        history = self.bob.request("HISTORY", "#lab", "after", "0", "500")
        self.assertEqual({decode(f)["server_seq"] for f in history if f.verb == "MESSAGE"},
                         acked)
        self.writer_connection.execute("PRAGMA max_page_count = 1073741823")
        [ack] = self.keys.message(self.alice, "alice", "#lab", 1, "room again")
        self.assertEqual(ack.verb, "OK")
        self.assertEqual(self.writer_connection.execute("PRAGMA integrity_check").fetchone(),
                         ("ok",))


    def test_any_write_on_a_full_disk_is_storage_full(self):
        """Not only messages: any request whose write finds the disk full is told
        STORAGE_FULL, with nothing changed."""
        self.server.service.store._store.create_room = \
            lambda *args: defer.fail(StorageFull("database or disk is full"))
        frames = self.keys.join(self.bob, "bob", "#new")
        self.assertEqual(error_code(frames), "STORAGE_FULL")
        self.assertIsNone(self.server.service.rooms.find("#new"))


class RegistrationRateTests(SynchronousTestCase):
    def register(self, server, name, host="192.0.2.1", token=None):
        client = server.connect((host, 4000))
        return client.register(name, token=token)

    def test_one_address_creates_few_accounts_an_hour(self):
        """An address that created its hour's accounts is told RATE_LIMITED with the
        wait; another address is not; an hour later the first may again."""
        server = Server()
        for n in range(10):
            self.assertEqual(verbs_of(self.register(server, f"user{n}")), ["OK"])
        frames = self.register(server, "user10")
        self.assertEqual(verbs_of(frames), ["RETRY", "ERROR"])
        self.assertEqual(error_code(frames), "RATE_LIMITED")
        self.assertIsNone(server.service.accounts.find("user10"))
        self.assertEqual(verbs_of(self.register(server, "elsewhere", "192.0.2.99")), ["OK"])
        server.clock.advance(decode(frames[0])["after_ms"] / 1000)
        self.assertEqual(verbs_of(self.register(server, "user10")), ["OK"])
