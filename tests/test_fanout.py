"""Tests for securechat.server.fanout: delivery to live connections, and
output held for the length of a batch."""

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
