# -*- test-case-name: tests.test_sqlite_writer -*-
"""The daemon's SQLite writer: transactions are built on the reactor thread
and committed together, on a thread of their own.

Running whole transactions on a database thread made that thread compete for
the GIL with the reactor for every statement, and the reactor pays for each
such wait on every one of its many socket calls: at a thousand messages a
second that convoy cost more latency than the commits themselves. The
statements are quick (the pages are in memory until the commit), so they run
here, on the reactor thread; only COMMIT, which writes the WAL and waits for
fsync, leaves it. Whatever writes arrive while a commit is on its way go
into the next transaction together: a group commit for every kind of write,
not only messages.

Each write runs inside a SAVEPOINT, so one that fails (a name in use, an
epoch taken) is undone alone and the others in its group still commit. A
write's Deferred fires only once its group is durable; if the COMMIT itself
fails, every write of the group fails with it, and nothing of it stays.

BEGIN never waits on the reactor thread: if another process holds the
write lock, the group is tried again a little later, so that the daemon
goes on serving everything else meanwhile.

Reads do not come here: they use their own connection (see
L{securechat.server.sqlite_store.open_connections}), so a long history read never
holds up a commit, and a read sees only what has been committed.
"""

import queue
import sqlite3
import threading
from functools import partial

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from securechat.constants import WRITE_LOCK_GIVE_UP_SECONDS, WRITE_LOCK_RETRY_SECONDS

log = Logger()


class GroupCommitWriter:
    """Has the same C{runInteraction} contract as adbapi's pool: C{interaction(
    cursor, *args, **kwargs)} runs in a transaction, and the Deferred fires
    with its result once that transaction committed.

    @param connection: an sqlite3 connection in autocommit mode
        (C{isolation_level=None}), since transactions are begun here.
    @param clock: schedules the next group (C{callLater(0, ...)}), so that
        every write that arrives in one reactor turn joins it.
    @param off_thread: C{off_thread(f)} runs C{f} away from the reactor
        thread and returns a Deferred with its result.
    @param on_close: called once the connection is closed (to end the thread).
    """

    def __init__(self, connection, clock, off_thread, on_close=None):
        self._connection = connection
        self._on_close = on_close
        self._clock = clock
        self._off_thread = off_thread
        self._queue: list = []
        self._flush_call = None
        self._committing: defer.Deferred | None = None
        self._closing: defer.Deferred | None = None
        self._busy_timeout_ms = connection.execute("PRAGMA busy_timeout").fetchone()[0]
        self._locked_since: float | None = None

    def runInteraction(self, interaction, *args, **kwargs):  # noqa: N802
        if self._closing is not None:
            return defer.fail(sqlite3.ProgrammingError("the database is closing"))
        done = defer.Deferred()
        self._queue.append((interaction, args, kwargs, done))
        if self._flush_call is None and self._committing is None:
            self._flush_call = self._clock.callLater(0, self._flush)
        return done

    def _flush(self) -> None:
        self._flush_call = None
        group, self._queue = self._queue, []
        outcomes = []
        try:
            cursor = self._connection.cursor()
            if not self._begin(cursor):
                self._queue[:0] = group
                self._flush_call = self._clock.callLater(WRITE_LOCK_RETRY_SECONDS, self._flush)
                return
            for interaction, args, kwargs, done in group:
                outcome = _attempt(cursor, interaction, args, kwargs)
                if not self._connection.in_transaction:
                    # SQLite gave up the whole transaction (a full disk, an
                    # I/O error), or the write ended it itself: nothing of
                    # the group is kept, and each write learns why.
                    if not isinstance(outcome, Failure):
                        outcome = Failure(sqlite3.OperationalError(
                            "a write ended its transaction early; its group is refused"))
                    self._fail_group([entry[-1] for entry in group], outcome)
                    return
                outcomes.append((done, outcome))
        except sqlite3.Error:
            # The database refused the transaction itself (locked, unreadable).
            self._fail_group([entry[-1] for entry in group], Failure())
            return
        self._committing = self._off_thread(partial(cursor.execute, "COMMIT"))
        self._committing.addCallbacks(lambda _: self._finish(outcomes), self._commit_failed,
                                      errbackArgs=(outcomes,))

    def _begin(self, cursor) -> bool:
        """BEGIN IMMEDIATE without waiting for the write lock: False while
        another process holds it, an error once it has held it too long."""
        cursor.execute("PRAGMA busy_timeout=0")
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
            now = self._clock.seconds()
            if self._locked_since is None:
                self._locked_since = now
                log.warn("another process holds the database's write lock; writes wait for it")
            if now - self._locked_since < WRITE_LOCK_GIVE_UP_SECONDS:
                return False
            self._locked_since = None
            raise
        finally:
            # COMMIT, on the commit thread, may still wait as SQLite usually does.
            cursor.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms:d}")
        self._locked_since = None
        return True

    def _commit_failed(self, failure, outcomes) -> None:
        if getattr(failure.value, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            log.warn("a commit of {count} writes failed, the disk is full; none of them was "
                     "kept", count=len(outcomes))
        else:
            log.failure("a commit of {count} writes failed; none of them was kept", failure,
                        count=len(outcomes))
        self._fail_group([done for done, _ in outcomes], failure)

    def _fail_group(self, dones, failure) -> None:
        """Undo what is open, then fail every write of the group (their
        Deferreds, C{dones}) with C{failure}."""
        try:
            if self._connection.in_transaction:
                self._connection.rollback()
        except sqlite3.Error:
            log.failure("rolling back a failed group of writes failed")
        self._finish([(done, failure) for done in dones])

    def _finish(self, outcomes) -> None:
        # Still "committing" while the callbacks run: a write or a close()
        # they make waits for the end of this method, not for the connection.
        for done, outcome in outcomes:
            if isinstance(outcome, Failure):
                done.errback(outcome)
            else:
                done.callback(outcome)
        self._committing = None
        if self._queue:
            if self._flush_call is None:
                self._flush()
        elif self._closing is not None:
            self._close_now()

    def close(self) -> defer.Deferred:
        """Commit what is queued, then close the connection."""
        if self._closing is None:
            self._closing = defer.Deferred()
            if self._committing is None and self._flush_call is None and not self._queue:
                self._close_now()
        return self._closing

    def _close_now(self) -> None:
        if self._closing.called:
            return
        self._connection.close()
        if self._on_close is not None:
            self._on_close()
        self._closing.callback(None)


def _attempt(cursor, interaction, args, kwargs):
    """Run one write in a savepoint: the result, or a Failure with the write
    undone (or with the whole transaction gone, if SQLite abandoned it)."""
    cursor.execute("SAVEPOINT write")
    try:
        result = interaction(cursor, *args, **kwargs)
    except Exception:
        failure = Failure()
        if cursor.connection.in_transaction:
            cursor.execute("ROLLBACK TO write")
            cursor.execute("RELEASE write")
        return failure
    if cursor.connection.in_transaction:
        cursor.execute("RELEASE write")
    return result


class CommitThread:
    """One thread that runs what it is given, in order, and hands each result
    back to the reactor thread.

    Twisted's thread pool would do, but its worker and context bookkeeping
    held the GIL for about 40 µs per commit, hundreds of times a second,
    while the reactor waited for it; a C queue and C{callFromThread} are all
    a single commit thread needs.
    """

    def __init__(self, reactor):
        self._reactor = reactor
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="securechat-commit",
                                        daemon=True)
        self._thread.start()

    def __call__(self, job) -> defer.Deferred:
        """Run C{job()} on the thread; the Deferred fires on the reactor thread."""
        done = defer.Deferred()
        self._jobs.put((job, done))
        return done

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, done = item
            try:
                result = job()
            except BaseException:
                self._reactor.callFromThread(done.errback, Failure())
            else:
                self._reactor.callFromThread(done.callback, result)

    def stop(self) -> None:
        """Finish what was given, then end the thread."""
        self._jobs.put(None)
        self._thread.join()


def open_writer(path: str, configure, reactor=None) -> GroupCommitWriter:
    """The writer the daemon uses: commits on a thread of their own, which
    ends when the writer is closed."""
    if reactor is None:
        from twisted.internet import reactor
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    configure(connection)
    commits = CommitThread(reactor)
    return GroupCommitWriter(connection, reactor, commits, on_close=commits.stop)
