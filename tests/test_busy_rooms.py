"""A busy room on an honest server: joins, parts and rotations while members
are offline. Each test is one of the failure classes the room logs fixed
(issue 15, classes A to F): an entitled member is never left unable to
read, and nobody reads what they were not entitled to."""

from twisted.trial.unittest import SynchronousTestCase

from tests.clientharness import Network


class BusyRoomTests(SynchronousTestCase):
    def setUp(self):
        self.net = Network()

    def say(self, rig, text, room="#lab"):
        rig.session.send_text(room, text)
        self.net.settle()

    def unreadable(self, rig):
        return rig.of("undecryptable") + rig.of("verification_failed")

    def shared_room(self, *names):
        rigs = self.net.members(*names)
        rigs[0].session.rotate("#lab", "share history", history="shared")
        self.net.settle()
        return rigs

    def test_epoch_of_a_member_who_has_left(self):
        """eva joins while every key holder is offline, makes a key, speaks and
        leaves. ana and ben, back, read her; then they talk on, under a key eva
        never had (class A)."""
        ana, ben = self.net.members("ana", "ben")
        self.say(ana, "before eva")
        self.net.disconnect(ana)
        self.net.disconnect(ben)
        eva = self.net.client("eva")
        eva.session.join("#lab")
        self.net.settle()
        self.net.clock.advance(10)
        self.net.settle()
        self.say(eva, "anyone?")
        self.say(eva, "bye then")
        eva.session.part("#lab")
        self.net.settle()
        ana = self.net.restart_client(ana)
        ben = self.net.restart_client(ben)
        self.net.settle()
        for rig in (ana, ben):
            self.assertEqual([t for n, t in rig.texts() if n == "eva"], ["anyone?", "bye then"])
            self.assertEqual(self.unreadable(rig), [])
        self.say(ana, "eva left")
        self.assertIn(("ana", "eva left"), ben.texts())
        self.assertNotIn(("ana", "eva left"), eva.texts())
        self.assertEqual([e for e in ana.of("error")], [])

    def test_shared_room_newcomer_reads_epochs_of_members_gone(self):
        """In a shared room, a newcomer reads the messages under every key since
        the room began sharing, including keys made by a member who has since
        left (class B)."""
        ana, ben = self.shared_room("ana", "ben")
        self.say(ana, "one")
        ben.session.rotate("#lab", "ben's key")
        self.net.settle()
        self.say(ben, "two")
        ben.session.part("#lab")
        self.net.settle()
        self.say(ana, "three")
        dana = self.net.client("dana")
        dana.session.join("#lab")
        self.net.settle()
        self.assertEqual([t for _, t in dana.texts()], ["one", "two", "three"])
        self.assertEqual(self.unreadable(dana), [])

    def test_switch_to_shared_hands_on_nothing_from_before(self):
        """A room that begins sharing its history shares what is said from then
        on: a newcomer gets no key from before the switch, and is told why for
        each earlier message (class C)."""
        ana, ben = self.net.members("ana", "ben")
        self.say(ana, "private, before the switch")
        ana.session.rotate("#lab", "share history", history="shared")
        self.net.settle()
        self.say(ana, "shared, after the switch")
        carl = self.net.client("carl")
        carl.session.join("#lab")
        self.net.settle()
        self.assertEqual(carl.texts(), [("ana", "shared, after the switch")])
        [told] = carl.of("undecryptable")
        self.assertIn("before #lab began sharing its history", told["reason"])
        before = min(self.net.server.service.rooms.find("#lab").state.epochs)
        self.assertIsNone(carl.session.keys.key("#lab", before))

    def test_rotation_by_a_member_waiting_for_the_key_keeps_shared_history(self):
        """A newcomer to a shared room who asks for a new key before any holder has
        handed them the current one is told it must wait; shared history is not
        cut, and a later newcomer still reads everything (class F)."""
        ana, ben = self.shared_room("ana", "ben")
        self.say(ana, "early")
        self.net.disconnect(ana)
        self.net.disconnect(ben)
        carl = self.net.client("carl")
        carl.session.join("#lab")
        self.net.settle()
        rotation = carl.session.rotate("#lab")
        self.net.settle()
        self.assertEqual(self.failureResultOf(rotation).value.code, "KEY_FIRST")
        ana = self.net.restart_client(ana)
        self.net.settle()
        self.say(carl, "late")
        dana = self.net.client("dana")
        dana.session.join("#lab")
        self.net.settle()
        self.assertEqual([t for _, t in dana.texts()], ["early", "late"])
        self.assertFalse(any(e.restart for e in
                             self.net.server.service.rooms.find("#lab").state.epochs.values()))

    def test_rejoin_after_a_part_reads_from_the_rejoin(self):
        """A member who parts and rejoins a room whose history is not shared reads
        what is said after the rejoin, and is not told of a gap for the rest."""
        ana, ben = self.net.members("ana", "ben")
        self.say(ana, "one")
        ben.session.part("#lab")
        self.net.settle()
        self.say(ana, "while ben is away")
        ben.session.join("#lab")
        self.net.settle()
        self.say(ana, "welcome back")
        self.assertEqual(ben.texts()[-1], ("ana", "welcome back"))
        self.assertNotIn(("ana", "while ben is away"), ben.texts())
        self.assertEqual(ben.of("gap"), [])

    def test_a_room_deleted_and_made_again_is_a_new_room(self):
        """A room its owner deleted, made again under the same name, is a new room
        to its former members: they join it, and read it, as any newcomer."""
        ana, ben = self.net.members("ana", "ben")
        self.say(ana, "old room")
        ana.session.request("DELETE", "#lab")
        self.net.settle()
        self.assertEqual([e["room"] for e in ben.of("room_deleted")], ["#lab"])
        ben.session.join("#lab")
        self.net.settle()
        ana.session.join("#lab")
        self.net.settle()
        self.say(ana, "new room")
        self.assertIn(("ana", "new room"), ben.texts())
        self.assertEqual(ben.of("room_forked"), [])

