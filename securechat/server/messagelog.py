# -*- test-case-name: tests.test_messagelog -*-
"""Group commit: every message received in one reactor turn is stored in one
transaction, and each sender learns the outcome only after that commit.

A commit costs an fsync; sharing it among all messages that arrived together
is what lets a durable daemon keep up with a relay that stores nothing.
Under load, groups start at most every C{interval} seconds: each then holds
more messages, so there are fewer fsyncs and fewer hand-offs to the commit
thread, and a member gets all of a group's messages in one write. A daemon
that was idle for C{interval} commits a new message at once.
"""

from twisted.internet import defer
from twisted.logger import Logger

from securechat.server.store import MessageRow, StorageFull

log = Logger()


class MessageLog:
    """Queues rows, commits them in batches, fires a Deferred per row.

    @param interval: the least time between the starts of two commits.
    """

    def __init__(self, store, clock, metrics, output, interval: float = 0.0):
        self._store = store
        self._output = output
        self._clock = clock
        self._metrics = metrics
        self._interval = interval
        self._started = float("-inf")
        self._queue: list[tuple[MessageRow, defer.Deferred]] = []
        self._flush_call = None
        self._committing: defer.Deferred | None = None

    def append(self, row: MessageRow) -> defer.Deferred:
        """Fire with the row's L{AppendResult} once its transaction committed."""
        done = defer.Deferred()
        self._queue.append((row, done))
        if self._flush_call is None and self._committing is None:
            self._flush_call = self._clock.callLater(self._wait(), self._flush)
        return done

    def _wait(self) -> float:
        """How long until the next commit may start (none if the last began long enough ago)."""
        # Never more than the interval, even if the wall clock stepped back.
        return min(self._interval, max(0.0, self._started + self._interval - self._clock.seconds()))

    def _flush(self) -> None:
        self._flush_call = None
        batch, self._queue = self._queue, []
        self._started = self._clock.seconds()
        self._committing = self._store.append_messages([row for row, _ in batch])
        self._committing.addCallbacks(self._committed, self._failed, (batch,), None, (batch,))

    def _committed(self, results, batch) -> None:
        self._metrics.commit_seconds.observe(self._clock.seconds() - self._started)
        self._metrics.messages.inc(len(batch))
        self._after_commit()
        # Every ack and delivery of the batch leaves in one write per connection.
        with self._output.held():
            for (_, done), result in zip(batch, results):
                done.callback(result)

    def _failed(self, failure, batch) -> None:
        if failure.check(StorageFull):
            log.warn("storing {count} messages failed, the disk is full; none was "
                     "acknowledged", count=len(batch))
        else:
            log.failure("storing {count} messages failed; none was acknowledged", failure,
                        count=len(batch))
        self._after_commit()
        with self._output.held():
            for _, done in batch:
                done.errback(failure)

    def _after_commit(self) -> None:
        self._committing = None
        if not self._queue:
            return
        wait = self._wait()
        if wait:
            self._flush_call = self._clock.callLater(wait, self._flush)
        else:
            self._flush()

    @defer.inlineCallbacks
    def drain(self):
        """Wait until everything queued so far has committed (for shutdown)."""
        while self._committing is not None or self._queue:
            if self._flush_call is not None:
                self._flush_call.cancel()
                self._flush()
            yield self._committing
