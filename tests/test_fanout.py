"""Tests for securechat.server.fanout: delivery to live connections, and
output held until the end of a batch or of the reactor turn."""

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from securechat.server.fanout import LocalFanOut, OutputBatch


class RecordingConnection:
    def __init__(self):
        self.writes = []

    def deliver(self, line):
        self.writes.append([line])

    def write_lines(self, lines):
        self.writes.append(list(lines))


class LocalFanOutTests(SynchronousTestCase):
    def test_publish_skips_the_excluded_connection(self):
        """A published line reaches every connection of the named users but the excluded one."""
        fanout = LocalFanOut()
        first, second, other = RecordingConnection(), RecordingConnection(), RecordingConnection()
        fanout.attach(1, first)
        fanout.attach(1, second)
        fanout.attach(2, other)
        fanout.publish([1, 2], b"hi\n", exclude=first)
        self.assertEqual((first.writes, second.writes, other.writes), ([], [[b"hi\n"]], [[b"hi\n"]]))

    def test_offline_after_last_detach(self):
        """A user is online until their last connection detaches."""
        fanout = LocalFanOut()
        first, second = RecordingConnection(), RecordingConnection()
        fanout.attach(1, first)
        fanout.attach(1, second)
        self.assertFalse(fanout.detach(1, first))
        self.assertTrue(fanout.online(1))
        self.assertTrue(fanout.detach(1, second))
        self.assertEqual(fanout.online_users(), set())


class OutputBatchTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.batch = OutputBatch(self.clock)

    def test_line_outside_a_batch_leaves_when_the_turn_ends(self):
        """Outside a batch, lines of one turn leave together when it ends, one write per connection."""
        first, second = RecordingConnection(), RecordingConnection()
        for line in (b"a\n", b"b\n"):
            self.batch.hold(first, line)
        self.batch.hold(second, b"c\n")
        self.assertEqual(first.writes, [])
        self.clock.advance(0)
        self.assertEqual((first.writes, second.writes), ([[b"a\n", b"b\n"]], [[b"c\n"]]))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_batch_writes_once_per_connection_in_order(self):
        """Lines held in a batch leave in one write per connection, in order, when it ends."""
        first, second = RecordingConnection(), RecordingConnection()
        with self.batch.held():
            for line in (b"a\n", b"b\n"):
                self.batch.hold(first, line)
            self.batch.hold(second, b"c\n")
            self.assertEqual(first.writes, [])
        self.assertEqual((first.writes, second.writes), ([[b"a\n", b"b\n"]], [[b"c\n"]]))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_nested_batch_writes_at_the_outer_end(self):
        """A batch opened inside another adds to it; everything leaves when the outer one ends."""
        connection = RecordingConnection()
        with self.batch.held():
            with self.batch.held():
                self.batch.hold(connection, b"a\n")
            self.assertEqual(connection.writes, [])
            self.batch.hold(connection, b"b\n")
        self.assertEqual(connection.writes, [[b"a\n", b"b\n"]])

    def test_batch_takes_the_turns_earlier_lines_first(self):
        """Lines held earlier in the turn leave with a batch that ends first, ahead of its own."""
        connection = RecordingConnection()
        self.batch.hold(connection, b"reply\n")
        with self.batch.held():
            self.batch.hold(connection, b"message\n")
        self.assertEqual(connection.writes, [[b"reply\n", b"message\n"]])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_line_held_while_writing_leaves_next(self):
        """A line held while the batch is being written (a connection lost and
        its presence published) is held for the next turn, not lost."""
        first, second = RecordingConnection(), RecordingConnection()
        first.write_lines = lambda lines: self.batch.hold(second, b"gone\n")
        self.batch.hold(first, b"a\n")
        self.clock.advance(0)
        self.assertEqual(second.writes, [[b"gone\n"]])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_release_writes_a_closing_connection_now(self):
        """A connection about to close gets its held lines at once, and never twice."""
        connection = RecordingConnection()
        with self.batch.held():
            self.batch.hold(connection, b"a\n")
            self.batch.release(connection)
            self.assertEqual(connection.writes, [[b"a\n"]])
        self.assertEqual(connection.writes, [[b"a\n"]])
