"""Tests for securechat.server.messagelog: group commit, ack after commit."""

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from securechat.server.fanout import OutputBatch
from securechat.server.messagelog import MessageLog
from securechat.server.store import AppendResult, MessageRow
from securechat.server.metrics import ServerMetrics
from tests.test_fanout import RecordingConnection


class ControlledStore:
    """A store whose commits finish only when the test says so."""

    def __init__(self):
        self.batches = []
        self.pending = []

    def append_messages(self, rows):
        self.batches.append(list(rows))
        d = defer.Deferred()
        self.pending.append((rows, d))
        return d

    def commit(self):
        rows, d = self.pending.pop(0)
        d.callback([AppendResult("stored", row.seq) for row in rows])

    def fail(self):
        _, d = self.pending.pop(0)
        d.errback(OSError("disk full"))


def row(seq):
    return MessageRow(1, 1, 1, seq, b"m", b"t", b"s", 0.0)


class MessageLogTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.store = ControlledStore()
        self.metrics = ServerMetrics()
        self.output = OutputBatch(self.clock)
        self.log = MessageLog(self.store, self.clock, self.metrics, self.output)

    def test_one_transaction_per_turn(self):
        """Messages appended in the same reactor turn share one transaction."""
        results = [self.log.append(row(n)) for n in range(3)]
        self.assertEqual(self.store.batches, [])
        self.clock.advance(0)
        self.assertEqual(len(self.store.batches), 1)
        self.assertEqual(len(self.store.batches[0]), 3)
        self.assertFalse(any(r.called for r in results))
        self.store.commit()
        self.assertEqual([self.successResultOf(r).server_seq for r in results], [0, 1, 2])

    def test_nothing_fires_before_commit(self):
        """No result fires while its transaction is still open; later rows wait their turn."""
        first = self.log.append(row(1))
        self.clock.advance(0)
        second = self.log.append(row(2))
        self.clock.advance(0)
        self.assertEqual(len(self.store.batches), 1)
        self.assertNoResult(first)
        self.store.commit()
        self.successResultOf(first)
        self.assertNoResult(second)
        self.assertEqual(len(self.store.batches), 2)
        self.store.commit()
        self.successResultOf(second)

    def test_failed_commit_fails_every_row(self):
        """If the transaction fails, every row in it fails; none is acknowledged."""
        results = [self.log.append(row(n)) for n in range(2)]
        self.clock.advance(0)
        self.store.fail()
        for result in results:
            self.failureResultOf(result, OSError)
        self.flushLoggedErrors(OSError)

    def test_drain_waits_for_queued(self):
        """drain() returns only after queued and in-flight rows have committed."""
        result = self.log.append(row(1))
        drained = self.log.drain()
        self.assertNoResult(drained)
        self.store.commit()
        self.successResultOf(result)
        self.successResultOf(drained)

    def test_outcomes_applied_inside_one_output_batch(self):
        """Every row of a commit learns its outcome while output is held, so that
        acks and deliveries leave together."""
        connection = RecordingConnection()
        for n in range(2):
            self.log.append(row(n)).addCallback(
                lambda _: self.output.hold(connection, b"line\n"))
        self.clock.advance(0)
        self.store.commit()
        # Written by the commit itself, in one write, with no turn's end waited for.
        self.assertEqual(connection.writes, [[b"line\n"] * 2])


class CommitIntervalTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.store = ControlledStore()
        self.log = MessageLog(self.store, self.clock, ServerMetrics(), OutputBatch(self.clock),
                              interval=0.004)

    def test_idle_daemon_commits_at_once(self):
        """A message to a daemon that committed nothing for a while starts its
        commit in the same turn, with no wait."""
        self.clock.advance(1)
        self.log.append(row(1))
        self.clock.advance(0)
        self.assertEqual(len(self.store.batches), 1)

    def test_busy_daemon_starts_commits_no_closer_than_the_interval(self):
        """Under load, the next group starts only once the interval since the
        last one's start is over, and holds everything that came meanwhile."""
        self.log.append(row(1))
        self.clock.advance(0)
        self.clock.advance(0.001)
        self.store.commit()
        later = [self.log.append(row(n)) for n in (2, 3)]
        self.clock.advance(0.002)
        self.assertEqual(len(self.store.batches), 1)
        self.clock.advance(0.001)
        self.assertEqual([len(b) for b in self.store.batches], [1, 2])
        self.store.commit()
        self.assertEqual([self.successResultOf(d).server_seq for d in later], [2, 3])

    def test_drain_does_not_wait_for_the_interval(self):
        """Stopping commits what is queued at once, without waiting out the interval."""
        self.log.append(row(1))
        self.clock.advance(0)
        self.store.commit()
        queued = self.log.append(row(2))
        drained = self.log.drain()
        self.assertEqual(len(self.store.batches), 2)
        self.store.commit()
        self.successResultOf(queued)
        self.successResultOf(drained)
