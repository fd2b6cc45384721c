"""Tests for securechat.server.wrapqueue."""

from twisted.trial.unittest import SynchronousTestCase

from securechat.server.store import RoomRow, WrapRequestRow
from securechat.server.wrapqueue import WrapRequestQueue


def room(holders):
    return RoomRow(1, "#lab", "", False, None, False, 0.0, holders=set(holders), epoch=1)


class WrapRequestQueueTests(SynchronousTestCase):
    def test_assigned_to_one_online_holder(self):
        """A request goes to one online holder, never to the requester, and only once."""
        queue = WrapRequestQueue([WrapRequestRow(1, 5, 1, 0.0)])
        lab = room({2, 3, 5})
        self.assertEqual(queue.assign(lab, online={5}), [])
        [(request, holder)] = queue.assign(lab, online={3, 5})
        self.assertEqual((request.user_id, holder), (5, 3))
        self.assertEqual(queue.assign(lab, online={2, 3, 5}), [])

    def test_reassigned_when_holder_leaves(self):
        """When the assigned holder disconnects, the request can go to the next."""
        queue = WrapRequestQueue([WrapRequestRow(1, 5, 1, 0.0)])
        lab = room({2, 3})
        [(_, holder)] = queue.assign(lab, online={2, 3})
        self.assertEqual(queue.unassign_holder(holder), {1})
        [(_, again)] = queue.assign(lab, online={2, 3} - {holder})
        self.assertNotEqual(again, holder)

    def test_withheld_requests_wait(self):
        """A withheld request is not pushed again until renewed."""
        queue = WrapRequestQueue([WrapRequestRow(1, 5, 1, 0.0, 2, "unverified", "")])
        self.assertEqual(queue.assign(room({2}), online={2}), [])
        queue.put(WrapRequestRow(1, 5, 1, 1.0))
        self.assertEqual(len(queue.assign(room({2}), online={2})), 1)

    def test_remove(self):
        """Removed requests, one by one or by room, are gone."""
        queue = WrapRequestQueue([WrapRequestRow(1, 5, 1, 0.0), WrapRequestRow(1, 6, 1, 0.0)])
        queue.remove(1, 5)
        self.assertIsNone(queue.get(1, 5))
        queue.remove_room(1)
        self.assertIsNone(queue.get(1, 6))
