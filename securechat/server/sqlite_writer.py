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

Reads do not come here: they use their own connection (see
L{securechat.server.sqlite_store.open_reader}), so a long history read never
holds up a commit, and a read sees only what has been committed.
"""

import sqlite3
from functools import partial

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

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
    """

    def __init__(self, connection, clock, off_thread):
        self._connection = connection
        self._clock = clock
        self._off_thread = off_thread
        self._queue: list = []
        self._flush_call = None
        self._committing: defer.Deferred | None = None
        self._closing: defer.Deferred | None = None

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
        cursor = self._connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
            outcomes = [(done, _attempt(cursor, interaction, args, kwargs))
                        for interaction, args, kwargs, done in group]
        except sqlite3.Error:
            # The database refused the transaction itself (locked, unreadable).
            failure = Failure()
            if self._connection.in_transaction:
                self._connection.rollback()
            self._finish([(done, failure) for *_, done in group])
            return
        self._committing = self._off_thread(partial(cursor.execute, "COMMIT"))
        self._committing.addCallbacks(lambda _: self._finish(outcomes), self._commit_failed,
                                      errbackArgs=(outcomes,))

    def _commit_failed(self, failure, outcomes) -> None:
        log.failure("a commit of {count} writes failed; none of them was kept", failure,
                    count=len(outcomes))
        if self._connection.in_transaction:
            self._connection.rollback()
        self._finish([(done, failure) for done, _ in outcomes])

    def _finish(self, outcomes) -> None:
        self._committing = None
        for done, outcome in outcomes:
            if isinstance(outcome, Failure):
                done.errback(outcome)
            else:
                done.callback(outcome)
        if self._queue and self._flush_call is None:
            self._flush()
        elif not self._queue and self._closing is not None:
            self._close_now()

    def close(self) -> defer.Deferred:
        """Commit what is queued, then close the connection."""
        if self._closing is None:
            self._closing = defer.Deferred()
            if self._committing is None and self._flush_call is None:
                self._close_now()
        return self._closing

    def _close_now(self) -> None:
        self._connection.close()
        self._closing.callback(None)


def _attempt(cursor, interaction, args, kwargs):
    """Run one write in a savepoint: the result, or a Failure with the write undone."""
    cursor.execute("SAVEPOINT write")
    try:
        result = interaction(cursor, *args, **kwargs)
    except Exception:
        failure = Failure()
        cursor.execute("ROLLBACK TO write")
        cursor.execute("RELEASE write")
        return failure
    cursor.execute("RELEASE write")
    return result


def open_writer(path: str, configure, reactor=None) -> GroupCommitWriter:
    """The writer the daemon uses: commits on one thread, started and stopped
    with the reactor."""
    if reactor is None:
        from twisted.internet import reactor
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    configure(connection)
    pool = ThreadPool(minthreads=1, maxthreads=1, name="securechat-commit")
    reactor.callWhenRunning(pool.start)
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
    return GroupCommitWriter(connection, reactor, partial(threads.deferToThreadPool, reactor, pool))
