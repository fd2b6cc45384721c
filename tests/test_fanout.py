"""Tests for securechat.server.fanout: delivery to live connections, and
output held for the length of a batch."""

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
    def test_nothing_held_outside_a_batch(self):
        """Outside a batch a line is not held: the caller writes it at once."""
        self.assertFalse(OutputBatch().hold(RecordingConnection(), b"a\n"))

    def test_batch_writes_once_per_connection_in_order(self):
        """Lines held in a batch leave in one write per connection, in order, when it ends."""
        batch, first, second = OutputBatch(), RecordingConnection(), RecordingConnection()
        with batch.held():
            for line in (b"a\n", b"b\n"):
                self.assertTrue(batch.hold(first, line))
            batch.hold(second, b"c\n")
            self.assertEqual(first.writes, [])
        self.assertEqual((first.writes, second.writes), ([[b"a\n", b"b\n"]], [[b"c\n"]]))

    def test_nested_batch_writes_at_the_outer_end(self):
        """A batch opened inside another adds to it; everything leaves when the outer one ends."""
        batch, connection = OutputBatch(), RecordingConnection()
        with batch.held():
            with batch.held():
                batch.hold(connection, b"a\n")
            self.assertEqual(connection.writes, [])
            batch.hold(connection, b"b\n")
        self.assertEqual(connection.writes, [[b"a\n", b"b\n"]])

    def test_release_writes_a_closing_connection_now(self):
        """A connection about to close gets its held lines at once, and never twice."""
        batch, connection = OutputBatch(), RecordingConnection()
        with batch.held():
            batch.hold(connection, b"a\n")
            batch.release(connection)
            self.assertEqual(connection.writes, [[b"a\n"]])
        self.assertEqual(connection.writes, [[b"a\n"]])


class OutputWindowTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.batch = OutputBatch(self.clock, window=0.002)
        self.connection = RecordingConnection()

    def test_batches_within_the_window_share_one_write(self):
        """Lines of two batches within the window leave together, once the window is over."""
        for line in (b"a\n", b"b\n"):
            with self.batch.held():
                self.batch.hold(self.connection, line)
        self.clock.advance(0.001)
        self.assertEqual(self.connection.writes, [])
        self.clock.advance(0.001)
        self.assertEqual(self.connection.writes, [[b"a\n", b"b\n"]])

    def test_a_later_line_waits_behind_waiting_ones(self):
        """A reply sent outside a batch while lines wait for its connection goes
        after them, never before; another connection's reply is not held."""
        other = RecordingConnection()
        with self.batch.held():
            self.batch.hold(self.connection, b"a\n")
        self.assertTrue(self.batch.hold(self.connection, b"reply\n"))
        self.assertFalse(self.batch.hold(other, b"reply\n"))
        self.clock.advance(0.002)
        self.assertEqual(self.connection.writes, [[b"a\n", b"reply\n"]])
        self.assertFalse(self.batch.hold(self.connection, b"later\n"))

    def test_release_and_write_all_do_not_wait(self):
        """A closing connection gets its waiting lines at once, and stopping
        writes the rest at once; nothing is written twice."""
        other = RecordingConnection()
        with self.batch.held():
            self.batch.hold(self.connection, b"a\n")
            self.batch.hold(other, b"b\n")
        self.batch.release(self.connection)
        self.assertEqual(self.connection.writes, [[b"a\n"]])
        self.batch.write_all()
        self.assertEqual(other.writes, [[b"b\n"]])
        self.clock.advance(1)
        self.assertEqual((len(self.connection.writes), len(other.writes)), (1, 1))
