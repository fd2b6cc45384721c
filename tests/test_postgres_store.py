"""Tests for securechat.server.postgres_store on a private PostgreSQL (see
tests.services): the behaviour every store shares, and what two daemons
sharing one database rely on, each daemon being a store with its own pool."""

import psycopg2
import psycopg2.errors
from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import TestCase

from securechat.server import sqlite_store
from securechat.server.postgres_store import MIGRATIONS, PostgresStore, StoreUnavailable
from securechat.server.store import EpochRow, LogConflict, LogEffects, StorageFull
from tests.services import postgres_database
from tests.test_sqlite_store import (
    StoreTests,
    add_epoch,
    append,
    keyed_room,
    message,
    new_room,
    user,
)

CONCURRENT_BATCHES = 20
BATCH_SIZE = 5
RACED_EPOCHS = 10
POLL_SECONDS = 0.01


class PostgresStoreTests(StoreTests, TestCase):

    def setUp(self):
        self.url = postgres_database(self)
        return super().setUp()

    def open_store(self, url=None):
        store = PostgresStore(url or self.url)
        self.addCleanup(store.close)
        return store

    def sql(self, statement):
        connection = psycopg2.connect(self.url)
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute(statement)
                rows = cursor.fetchall() if cursor.description else []
        finally:
            connection.close()
        return defer.succeed(rows)

    @defer.inlineCallbacks
    def second_daemon(self):
        store = self.open_store()
        yield store.load()
        return store

    def test_disk_full_is_storage_full(self):
        """PostgreSQL's disk_full (SQLSTATE 53100) fails the transaction as StorageFull."""

        def interaction(txn):
            raise psycopg2.errors.DiskFull("could not extend file: No space left on device")

        return self.assertFailure(self.store._run(interaction), StorageFull)

    def test_migrations_match_sqlite(self):
        """PostgreSQL has its own form of every SQLite schema version, and no other."""
        self.assertEqual(MIGRATIONS.keys(), sqlite_store.MIGRATIONS.keys())

    def test_refuses_other_urls_without_quoting_them(self):
        """Only a postgresql:// URL is accepted, and the refusal does not repeat it."""
        error = self.assertRaises(ValueError, PostgresStore, "mysql://admin:hunter2@db/chat")
        self.assertNotIn("hunter2", str(error))

    @defer.inlineCallbacks
    def test_two_daemons_create_the_schema_at_once(self):
        """Two daemons starting together on a new database both start, on one schema."""
        url = postgres_database(self)
        snapshots = yield defer.gatherResults(
            [self.open_store(url).load(), self.open_store(url).load()], consumeErrors=True
        )
        self.assertEqual([s.users for s in snapshots], [[], []])

    @defer.inlineCallbacks
    def test_concurrent_appends_share_one_sequence(self):
        """Two daemons appending to one room at once never hand out the same
        server_seq and leave no gap; each batch gets a contiguous run."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        room = yield keyed_room(self.store, "#a", uid)
        daemons = [self.store, (yield self.second_daemon())]
        batches = yield defer.gatherResults([
            daemons[b % 2].append_messages(
                [message(room, uid, b * BATCH_SIZE + n + 1) for n in range(BATCH_SIZE)]
            )
            for b in range(CONCURRENT_BATCHES)
        ], consumeErrors=True)
        total = CONCURRENT_BATCHES * BATCH_SIZE
        seqs = sorted(r.server_seq for batch in batches for r in batch)
        self.assertEqual(seqs, list(range(1, total + 1)))
        self.assertEqual({r.outcome for batch in batches for r in batch}, {"stored"})
        for batch in batches:
            first = batch[0].server_seq
            self.assertEqual([r.server_seq for r in batch], list(range(first, first + BATCH_SIZE)))
        self.assertEqual((yield self.reopen()).rooms[0].last_seq, total)

    @defer.inlineCallbacks
    def test_concurrent_duplicate_is_stored_once(self):
        """One message sent through two daemons at once is stored once, and both
        learn the same server_seq."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        room = yield keyed_room(self.store, "#a", uid)
        daemons = [self.store, (yield self.second_daemon())]
        results = yield defer.gatherResults(
            [d.append_messages([message(room, uid, 1)]) for d in daemons], consumeErrors=True
        )
        self.assertEqual(sorted((r.outcome, r.server_seq) for [r] in results),
                         [("duplicate", 1), ("stored", 1)])

    @defer.inlineCallbacks
    def test_concurrent_epochs_conflict_exactly_once(self):
        """When two daemons append the same place of a log at once (two epochs), exactly
        one gets a LogConflict and only the winner's entry, record and wraps are stored."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        room = yield new_room(self.store, "#a", uid)
        daemons = [self.store, (yield self.second_daemon())]
        attempts = [(epoch, d) for epoch in range(1, RACED_EPOCHS + 1) for d in range(2)]
        outcomes = yield defer.DeferredList([
            daemons[d].append_entry(room, epoch, b"by%d" % d, b"s", 1.0, LogEffects(
                epoch=EpochRow(room, epoch, uid, b"by%d" % d, b"s"),
                wraps={uid: (uid, b"by%d" % d)}))
            for epoch, d in attempts
        ], consumeErrors=True)
        winners = {}
        for (epoch, d), (succeeded, result) in zip(attempts, outcomes):
            if succeeded:
                winners[epoch] = b"by%d" % d
            else:
                result.trap(LogConflict)
        self.assertEqual(len(winners), RACED_EPOCHS)
        stored = yield self.store.epochs(room, 1)
        self.assertEqual({row.epoch: row.record for row in stored}, winners)
        wraps = yield self.store.wraps_for(uid, room, 1)
        self.assertEqual({row.epoch: row.wrap for row in wraps}, winners)
        entries = yield self.store.log(room, 1, 100)
        self.assertEqual({index: data for index, data, _ in entries}, winners)

    @defer.inlineCallbacks
    def test_deadlock_is_retried(self):
        """A transaction PostgreSQL aborts to break a deadlock with another
        writer is run again, and succeeds, instead of failing."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        first = yield keyed_room(self.store, "#a", uid)
        second = yield keyed_room(self.store, "#b", uid)
        other = psycopg2.connect(self.url)
        self.addCleanup(other.close)
        cursor = other.cursor()
        # The store's session, waiting first and checking after the default
        # one second, is the one PostgreSQL picks to abort.
        cursor.execute("SET deadlock_timeout = '60s'")
        cursor.execute("SELECT id FROM rooms WHERE id = %s FOR UPDATE", (second,))
        appended = self.store.append_messages([message(first, uid, 1), message(second, uid, 2)])
        while not (yield self.sql("SELECT pid FROM pg_stat_activity"
                                  " WHERE datname = current_database() AND wait_event_type = 'Lock'")):
            yield task.deferLater(reactor, POLL_SECONDS, lambda: None)
        yield threads.deferToThread(
            cursor.execute, "SELECT id FROM rooms WHERE id = %s FOR UPDATE", (first,)
        )
        other.commit()
        results = yield appended
        self.assertEqual([(r.outcome, r.server_seq) for r in results], [("stored", 1), ("stored", 1)])

    @defer.inlineCallbacks
    def test_message_after_another_daemons_key_change_is_stale(self):
        """A message for an epoch the database has moved past, or for a room
        flagged for a new key, is "stale": a daemon's copy of the room may lag,
        the database decides."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        room = yield keyed_room(self.store, "#a", uid)
        other = yield self.second_daemon()
        yield add_epoch(other, room, 2, uid, {uid: (uid, b"w")}, 2.0, b"r2")
        [old, current] = yield self.store.append_messages(
            [message(room, uid, 1), message(room, uid, 2, epoch=2)])
        self.assertEqual([(old.outcome, current.outcome)], [("stale", "stored")])
        yield append(other, room, LogEffects(members={uid: None}, room={"rekey_required": True}),
                     3.0)
        [flagged] = yield self.store.append_messages([message(room, uid, 3, epoch=2)])
        self.assertEqual(flagged.outcome, "stale")

    def test_unreachable_server_is_named_in_one_line(self):
        """Starting against a PostgreSQL that is not there fails at once with one
        line naming where it looked, and no password."""
        error = self.assertRaises(
            StoreUnavailable, PostgresStore.connect,
            "postgresql://chat:hunter2@127.0.0.1:1/chat?connect_timeout=2")
        self.assertIn("PostgreSQL at 127.0.0.1:1 is unreachable", str(error))
        self.assertNotIn("hunter2", str(error))
        self.assertNotIn("\n", str(error))
