"""Tests for securechat.server.sqlite_writer: writes grouped into one
transaction per commit, each undone alone when it fails, acknowledged only
once committed."""

import os
import sqlite3
import threading

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from securechat.constants import WRITE_LOCK_GIVE_UP_SECONDS, WRITE_LOCK_RETRY_SECONDS
from securechat.server.sqlite_store import SQLiteStore, configure_connection, configure_reader
from securechat.server.sqlite_writer import CommitThread, GroupCommitWriter
from securechat.server.store import MessageRow, UserRow


class HeldCommits:
    """Runs each commit only when the test says so, as a commit thread would
    some time later."""

    def __init__(self):
        self.pending = []

    def __call__(self, commit):
        d = defer.Deferred()
        self.pending.append((commit, d))
        return d

    def run_next(self):
        commit, d = self.pending.pop(0)
        try:
            result = commit()
        except Exception:
            d.errback()
        else:
            d.callback(result)


def insert(value):
    def interaction(txn):
        txn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return value
    return interaction


def fail_after_insert(txn):
    txn.execute("INSERT INTO t (v) VALUES ('undone')")
    raise ValueError("refused")


class GroupCommitWriterTests(SynchronousTestCase):
    def setUp(self):
        self.path = os.path.join(self.mktemp() + ".db")
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        configure_connection(connection)
        connection.execute("CREATE TABLE t (v TEXT UNIQUE)")
        self.clock = task.Clock()
        self.commits = HeldCommits()
        self.writer = GroupCommitWriter(connection, self.clock, self.commits)

    def committed(self):
        """What another connection sees: only what was committed."""
        other = sqlite3.connect(self.path)
        try:
            return sorted(v for (v,) in other.execute("SELECT v FROM t"))
        finally:
            other.close()

    def test_writes_of_one_turn_share_one_commit(self):
        """Writes made in the same reactor turn go into one transaction and one commit."""
        first = self.writer.runInteraction(insert("a"))
        second = self.writer.runInteraction(insert("b"))
        self.clock.advance(0)
        self.assertEqual(len(self.commits.pending), 1)
        self.commits.run_next()
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), ("a", "b"))
        self.assertEqual(self.committed(), ["a", "b"])

    def test_result_waits_for_the_commit(self):
        """A write's Deferred fires only once its transaction is durable, and no
        other connection sees it before."""
        d = self.writer.runInteraction(insert("a"))
        self.clock.advance(0)
        self.assertNoResult(d)
        self.assertEqual(self.committed(), [])
        self.commits.run_next()
        self.assertEqual(self.successResultOf(d), "a")

    def test_writes_during_a_commit_form_the_next_group(self):
        """Writes that arrive while a commit is in flight are committed together
        right after it, not one by one."""
        self.writer.runInteraction(insert("a"))
        self.clock.advance(0)
        later = [self.writer.runInteraction(insert(v)) for v in "bcd"]
        self.clock.advance(0)
        self.assertEqual(len(self.commits.pending), 1)
        self.commits.run_next()
        self.assertEqual(len(self.commits.pending), 1)
        self.commits.run_next()
        self.assertEqual([self.successResultOf(d) for d in later], ["b", "c", "d"])
        self.assertEqual(self.committed(), ["a", "b", "c", "d"])

    def test_a_failing_write_is_undone_alone(self):
        """A write that raises fails with its own error, what it wrote is undone,
        and the others of its group still commit."""
        good = self.writer.runInteraction(insert("a"))
        bad = self.writer.runInteraction(fail_after_insert)
        duplicate = self.writer.runInteraction(insert("a"))
        self.clock.advance(0)
        self.commits.run_next()
        self.assertEqual(self.successResultOf(good), "a")
        self.failureResultOf(bad, ValueError)
        self.failureResultOf(duplicate, sqlite3.IntegrityError)
        self.assertEqual(self.committed(), ["a"])

    def test_failed_commit_fails_the_whole_group(self):
        """If COMMIT fails, every write of the group fails and none is kept."""
        writes = [self.writer.runInteraction(insert(v)) for v in "ab"]

        def broken_commit(commit):
            return defer.fail(sqlite3.OperationalError("disk I/O error"))

        self.writer._off_thread = broken_commit
        self.clock.advance(0)
        for d in writes:
            self.failureResultOf(d, sqlite3.OperationalError)
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)
        self.assertEqual(self.committed(), [])
        self.writer._off_thread = self.commits
        after = self.writer.runInteraction(insert("c"))
        self.clock.advance(0)
        self.commits.run_next()
        self.assertEqual(self.successResultOf(after), "c")

    def test_abandoned_transaction_fails_the_group_with_its_cause(self):
        """When the transaction ends inside a write (SQLite gives it up on a full
        disk), every write of the group fails with that write's own error and
        nothing of the group is kept; the writer goes on afterwards."""
        def abandon(txn):
            txn.execute("INSERT INTO t (v) VALUES ('b')")
            txn.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")

        first = self.writer.runInteraction(insert("a"))
        failing = self.writer.runInteraction(abandon)
        self.clock.advance(0)
        self.assertEqual(self.commits.pending, [])
        for d in (first, failing):
            self.assertIn("disk is full", str(self.failureResultOf(d).value))
        self.assertEqual(self.committed(), [])
        after = self.writer.runInteraction(insert("c"))
        self.clock.advance(0)
        self.commits.run_next()
        self.assertEqual(self.successResultOf(after), "c")

    def test_close_from_a_callback_still_commits_the_queue(self):
        """A close() made by a write's callback (a daemon stopping while a commit
        is in flight) first commits what was queued meanwhile, and closes once."""
        first = self.writer.runInteraction(insert("a"))
        self.clock.advance(0)
        queued = self.writer.runInteraction(insert("b"))
        closed = []
        first.addCallback(lambda _: closed.append(self.writer.close()))
        self.commits.run_next()
        self.assertNoResult(closed[0])
        self.commits.run_next()
        self.assertEqual(self.successResultOf(queued), "b")
        self.successResultOf(closed[0])
        self.assertEqual(self.committed(), ["a", "b"])

    def test_close_commits_what_is_queued_first(self):
        """Closing waits for queued writes to commit, then refuses new ones."""
        d = self.writer.runInteraction(insert("a"))
        closed = self.writer.close()
        self.assertNoResult(closed)
        self.clock.advance(0)
        self.commits.run_next()
        self.successResultOf(closed)
        self.assertEqual(self.successResultOf(d), "a")
        self.failureResultOf(self.writer.runInteraction(insert("b")), sqlite3.ProgrammingError)
        self.assertEqual(self.committed(), ["a"])

    def lock_from_another_process(self):
        """A second connection holding the write lock, as securechat-admin would."""
        other = sqlite3.connect(self.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        self.addCleanup(other.close)
        return other

    def test_locked_database_waits_off_the_reactor(self):
        """While another process holds the write lock the group waits without
        blocking the reactor thread, then commits, in order, once it is free."""
        other = self.lock_from_another_process()
        first = self.writer.runInteraction(insert("a"))
        self.clock.advance(0)
        second = self.writer.runInteraction(insert("b"))
        self.clock.advance(WRITE_LOCK_RETRY_SECONDS)
        self.assertEqual(self.commits.pending, [])
        self.assertNoResult(first)
        other.rollback()
        self.clock.advance(WRITE_LOCK_RETRY_SECONDS)
        self.commits.run_next()
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), ("a", "b"))
        self.assertEqual(self.committed(), ["a", "b"])

    def test_lock_held_too_long_fails_the_waiting_writes(self):
        """Writes that waited for the lock longer than the give-up time fail,
        and the writer works again once the lock is released."""
        other = self.lock_from_another_process()
        waiting = self.writer.runInteraction(insert("a"))
        self.clock.pump([0] + [WRITE_LOCK_RETRY_SECONDS] * int(
            WRITE_LOCK_GIVE_UP_SECONDS / WRITE_LOCK_RETRY_SECONDS + 2))
        self.failureResultOf(waiting, sqlite3.OperationalError)
        other.rollback()
        after = self.writer.runInteraction(insert("b"))
        self.clock.advance(0)
        self.commits.run_next()
        self.assertEqual((self.successResultOf(after), self.committed()), ("b", ["b"]))


class RecordingReactor:
    """Collects what a thread hands back, to be run on the test's thread."""

    def __init__(self):
        self.calls = []

    def callFromThread(self, f, *args):  # noqa: N802
        self.calls.append((f, args))

    def run_calls(self):
        for f, args in self.calls:
            f(*args)


class CommitThreadTests(SynchronousTestCase):
    def test_runs_off_thread_and_answers_on_the_reactor(self):
        """A job runs on the commit thread, in order, and its result or error
        comes back through callFromThread, not from the thread itself."""
        reactor = RecordingReactor()
        commits = CommitThread(reactor)
        ran = commits(threading.get_ident)
        failed = commits(lambda: 1 / 0)
        commits.stop()
        self.assertNoResult(ran)
        reactor.run_calls()
        self.assertNotEqual(self.successResultOf(ran), threading.get_ident())
        self.failureResultOf(failed, ZeroDivisionError)

    def test_close_ends_the_thread(self):
        """Closing the writer ends its commit thread."""
        connection = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        commits = CommitThread(RecordingReactor())
        writer = GroupCommitWriter(connection, task.Clock(), commits, on_close=commits.stop)
        self.successResultOf(writer.close())
        self.assertFalse(commits._thread.is_alive())


class SplitStoreTests(SynchronousTestCase):
    def test_reads_see_committed_writes_only(self):
        """With a writer and a read-only reader, a stored message shows in
        history once its commit is done, and the reader refuses to write."""
        path = self.mktemp() + ".db"
        writer_connection = sqlite3.connect(path, isolation_level=None)
        configure_connection(writer_connection)
        clock, commits = task.Clock(), HeldCommits()
        reader = InlineReader(path)
        store = SQLiteStore(GroupCommitWriter(writer_connection, clock, commits), reader)
        loaded = store.load()
        clock.advance(0)
        commits.run_next()
        self.assertEqual(self.successResultOf(loaded).rooms, [])
        store.add_user(_user(), 0.0, None)
        clock.advance(0)
        commits.run_next()
        store.create_room("lobby", 1, 0.0)
        clock.advance(0)
        commits.run_next()
        appended = store.append_messages([MessageRow(1, 1, 0, 1, b"m", b"t", b"s", 0.0)])
        clock.advance(0)
        self.assertEqual(self.successResultOf(store.history(1, None, None, 10)), [])
        commits.run_next()
        self.assertEqual(self.successResultOf(appended)[0].outcome, "stored")
        self.assertEqual(len(self.successResultOf(store.history(1, None, None, 10))), 1)
        self.assertRaises(sqlite3.OperationalError, reader.connection.execute,
                          "DELETE FROM messages")

    def test_a_read_sees_one_commit_throughout(self):
        """Every statement of one read sees the same commit, even if another
        commits between them."""
        path = self.mktemp() + ".db"
        writer = sqlite3.connect(path, isolation_level=None)
        configure_connection(writer)
        writer.execute("CREATE TABLE t (v TEXT)")
        store = SQLiteStore(object(), InlineReader(path))

        def two_counts(txn):
            first = txn.execute("SELECT COUNT(*) FROM t").fetchone()[0]
            writer.execute("INSERT INTO t (v) VALUES ('meanwhile')")
            return first, txn.execute("SELECT COUNT(*) FROM t").fetchone()[0]

        self.assertEqual(self.successResultOf(store._read(two_counts)), (0, 0))
        self.assertEqual(self.successResultOf(store._read(two_counts)), (1, 1))


class InlineReader:
    """A reader like the daemon's, run at once instead of on a thread."""

    def __init__(self, path):
        self.connection = sqlite3.connect(path, isolation_level=None)
        configure_reader(self.connection)

    def runInteraction(self, interaction, *args):  # noqa: N802
        return defer.maybeDeferred(interaction, self.connection.cursor(), *args)

    def close(self):
        self.connection.close()


def _user():
    return UserRow(None, "alice", b"s", b"e", b"es", b"f" * 32)
