"""Tests for securechat.client.outbox."""

from twisted.trial.unittest import SynchronousTestCase

from securechat.client.outbox import Outbox


class OutboxTests(SynchronousTestCase):
    def test_identity_survives_save(self):
        """An entry keeps its message id and seq through a save, so a resend is a retry."""
        outbox = Outbox()
        entry = outbox.add("#lab", "hello")
        entry.seq = 7
        [restored] = Outbox(outbox.to_list()).waiting()
        self.assertEqual((restored.message_id, restored.seq, restored.text),
                         (entry.message_id, 7, "hello"))

    def test_in_flight_accounting(self):
        """Sending, returning, removing and disconnecting keep the in-flight count exact."""
        outbox = Outbox()
        a, b = outbox.add("#lab", "a"), outbox.add("#lab", "b")
        outbox.sending(a)
        outbox.sending(a)
        outbox.sending(b)
        self.assertEqual((outbox.in_flight(), outbox.waiting()), (2, []))
        outbox.returned(a)
        self.assertEqual((outbox.in_flight(), outbox.waiting()), (1, [a]))
        outbox.remove(b)
        self.assertEqual(outbox.in_flight(), 0)
        outbox.sending(a)
        outbox.connection_lost()
        self.assertEqual((outbox.in_flight(), outbox.waiting()), (0, [a]))

    def test_drop_room(self):
        """Leaving a room drops its queued messages and returns them for reporting."""
        outbox = Outbox()
        outbox.add("#lab", "a")
        outbox.add("#ops", "b")
        self.assertEqual([e.text for e in outbox.drop_room("#LAB")], ["a"])
        self.assertEqual(len(outbox), 1)
