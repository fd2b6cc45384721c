"""Tests for securechat.console.model: what the console shows, without urwid."""

from twisted.trial.unittest import SynchronousTestCase

from securechat.console.model import (
    HIGHLIGHT,
    MESSAGE,
    PRIVATE,
    QUIET,
    STATUS_PANE,
    ChatModel,
    direct_room,
)
from tests.consoleharness import ConsoleRig


class ModelTests(SynchronousTestCase):
    def setUp(self):
        self.rig = ConsoleRig(self)
        self.rig.both_in()
        self.model = self.rig.model

    def test_incoming_message_becomes_a_line(self):
        """A message from bob is a line with its time and nick, and listeners hear of it."""
        self.rig.redraws.clear()
        self.rig.bob_says("hello")
        self.assertEqual(self.rig.lines(), [("message", "bob", "hello")])
        line = self.model.pane("#lab").lines[-1]
        self.assertEqual(self.model.clock_text(line.time), "00:00")
        self.assertTrue(self.rig.redraws)

    def test_day_separator(self):
        """A line on a new day is preceded by a separator naming that day."""
        self.rig.bob_says("day one")
        self.rig.net.clock.advance(86400)
        self.rig.bob_says("day two")
        days = [line.text for line in self.model.pane("#lab").lines if line.kind == "day"]
        self.assertEqual(days, ["Thursday 01 January 1970", "Friday 02 January 1970"])

    def test_unread_marker_and_counts(self):
        """Messages in a room not on screen count as unread after a marker, which
        clears when the user has been there and leaves."""
        self.rig.bob_says("zero")
        self.model.switch(STATUS_PANE)
        pane = self.model.pane("#lab")
        before = len(pane.lines)
        self.rig.bob_says("one")
        self.rig.bob_says("two")
        self.assertEqual((pane.unread, pane.activity, pane.marker), (2, MESSAGE, before))
        self.model.switch("#lab")
        self.assertEqual((pane.unread, pane.activity, pane.marker), (0, QUIET, before))
        self.model.switch(STATUS_PANE)
        self.assertIsNone(pane.marker)

    def test_mention_highlights_and_rings(self):
        """A message naming the user is a highlight, rings the bell, and Alt+A goes
        there before a room with plain messages."""
        self.rig.bob.session.join("#other")
        self.rig.controller.submit("/join #other")
        self.rig.net.settle()
        self.model.switch(STATUS_PANE)
        bells = self.model.bells
        self.rig.bob_says("plain", room="#other")
        self.rig.bob_says("hey Alice, look")
        self.assertEqual(self.model.pane("#lab").activity, HIGHLIGHT)
        self.assertEqual(self.model.bells, bells + 1)
        self.model.next_active()
        self.assertEqual(self.model.current_room, "#lab")
        self.model.next_active()
        self.assertEqual(self.model.current_room, "#other")

    def test_nick_inside_a_word_is_no_mention(self):
        """'malice' does not mention alice."""
        self.rig.bob_says("no malice here")
        self.assertFalse(self.model.pane("#lab").lines[-1].highlight)

    def test_direct_room_is_private_activity(self):
        """Messages in a direct-message room count as private and ring."""
        room = direct_room("alice", "bob")
        self.assertTrue(room.startswith("#dm-"))
        self.assertEqual(direct_room("Bob", "alice"), room)
        self.model.switch(STATUS_PANE)
        self.model._message(room, "bob", "psst", 0.0, 9)
        self.assertEqual(self.model.pane(room).activity, PRIVATE)

    def test_own_message_until_acknowledged(self):
        """What the user sends shows at once, undelivered, and turns delivered on its ack."""
        self.rig.controller.submit("mine")
        line = self.model.pane("#lab").lines[-1]
        self.assertEqual((line.kind, line.text, line.delivered), ("own", "mine", False))
        self.rig.net.settle()
        self.assertTrue(line.delivered)

    def test_action(self):
        """/me text is shown as an action."""
        self.rig.bob_says("/me waves")
        self.assertEqual(self.rig.lines()[-1], ("action", "bob", "waves"))

    def test_pending_message_is_replaced_in_place(self):
        """A message waiting for its key has a visible placeholder, which becomes the
        text once the key arrives, at the same place."""
        session = self.rig.alice.session
        session.emit("message_pending", room="#lab", server_seq=50, nick="bob", epoch=4,
                     message="waits")
        self.rig.bob_says("later")
        self.assertEqual(self.rig.lines()[-2], ("pending", "bob",
                                                "[waiting for the key of epoch 4]"))
        session.emit("message", room="#lab", server_seq=50, text="finally", time=0, epoch=4,
                     **{"from": "bob"})
        self.assertEqual(self.rig.lines()[-2:], [("message", "bob", "finally"),
                                                ("message", "bob", "later")])

    def test_undecryptable_says_why(self):
        """A message that can never be read replaces its placeholder with the reason."""
        session = self.rig.alice.session
        session.emit("message_pending", room="#lab", server_seq=50, nick="bob", epoch=4,
                     message="waits")
        session.emit("undecryptable", room="#lab", server_seq=50, nick="bob",
                     message="message from bob cannot be read: no key", reason="no key")
        self.assertEqual(self.rig.lines()[-1],
                         ("error", "bob", "[message from bob cannot be read: no key]"))

    def test_control_characters_are_neutralised(self):
        """Escape sequences from a sender never reach the screen as escapes."""
        self.rig.bob_says("\x1b]0;pwned\x07red\x1b[31m")
        text = self.model.pane("#lab").lines[-1].text
        self.assertNotIn("\x1b", text)
        self.assertNotIn("\x07", text)

    def test_connection_states(self):
        """Reconnecting keeps the time of the next attempt for the countdown."""
        session = self.rig.alice.session
        session.emit("reconnecting", seconds=4.0, attempt=2, reason="refused")
        self.assertEqual((self.model.connection, self.model.retry_at),
                         ("reconnecting", self.rig.net.clock.seconds() + 4.0))
        session.emit("connected", nick="alice", server="test")
        self.assertEqual(self.model.connection, "connected")

    def test_left_room_pane_goes(self):
        """Leaving a room removes its pane and says so in the status pane."""
        self.rig.controller.submit("/part")
        self.rig.net.settle()
        self.assertNotIn("#lab", self.model.panes)
        self.assertEqual(self.model.current_room, None)
        self.assertIn("you left #lab", self.model.pane(STATUS_PANE).lines[-1].text)


class RobustnessTests(SynchronousTestCase):
    """Whatever a sender or the server puts in an event, the console keeps going."""

    def setUp(self):
        self.rig = ConsoleRig(self)
        self.rig.both_in()
        self.model = self.rig.model
        self.session = self.rig.alice.session

    def test_absurd_timestamps(self):
        """A sender's timestamp far outside the calendar is shown as now, not lost."""
        for when in (10**18, -10**18, "soon", None):
            self.session.emit("message", room="#lab", server_seq=7, text=f"t {when}",
                              time=when, epoch=1, **{"from": "bob"})
        self.assertEqual(len([line for line in self.model.pane("#lab").lines
                              if line.text.startswith("t ")]), 4)

    def test_event_without_a_room_goes_to_the_status_pane(self):
        """A verification failure not tied to a room is shown on the status pane."""
        self.session.emit("verification_failed", nick="eve", reason="unusable keys")
        self.assertIn("unusable keys", self.model.pane(STATUS_PANE).lines[-1].text)

    def test_a_failing_handler_is_reported_not_raised(self):
        """A bug while showing an event is said on screen and logged; nothing is raised."""
        self.session.emit("topic", room="#lab")
        self.assertIn("could not show a topic event", self.model.pane(STATUS_PANE).lines[-1].text)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_history_with_unreadable_entries(self):
        """/history shows unreadable entries with their reason; old lines never ring."""
        bells = self.model.bells
        self.model.show("message", history=True, room="#lab", **{"from": "bob"}, text=None,
                        server_seq=1, reason="no key for its epoch")
        self.model.show("message", history=True, room="#lab", **{"from": "bob"},
                        text="hi alice", server_seq=2, time=0)
        kinds = [(line.kind, line.text) for line in self.model.pane("#lab").lines[-2:]]
        self.assertEqual(kinds, [("error", "[cannot be read: no key for its epoch]"),
                                 ("message", "hi alice")])
        self.assertEqual(self.model.bells, bells)

    def test_error_for_a_room_left_makes_no_ghost_pane(self):
        """A failed send reported after leaving a room does not bring its pane back."""
        self.model.drop("#lab")
        self.session.emit("error", code="NOT_MEMBER", message="not sent", room="#lab",
                          text="x", id="00")
        self.assertNotIn("#lab", self.model.panes)

    def test_pending_message_that_mentions_me_highlights(self):
        """A message that waited for its key and names me raises the room to highlight."""
        self.model.switch(STATUS_PANE)
        self.session.emit("message_pending", room="#lab", server_seq=60, nick="bob", epoch=2,
                          message="waits")
        self.session.emit("message", room="#lab", server_seq=60, text="alice: look", time=0,
                          epoch=2, **{"from": "bob"})
        self.assertEqual(self.model.pane("#lab").activity, HIGHLIGHT)

    def test_own_lines_marked_by_their_entry(self):
        """Acknowledgements mark the very message they are for, even out of order."""
        self.rig.controller.say("#lab", "one")
        self.rig.controller.say("#lab", "two")
        lines = [line for line in self.model.pane("#lab").lines if line.kind == "own"]
        self.session.emit("sent", room="#lab", text="two", server_seq=9, seq=2,
                          id=lines[1].entry_id)
        self.assertEqual([line.delivered for line in lines], [False, True])


class OfflineStartTests(SynchronousTestCase):
    def test_rooms_and_unsent_messages_show_before_connecting(self):
        """Started offline, the console lists the saved rooms and the unsent messages."""
        rig = ConsoleRig(self)
        rig.both_in()
        rig.net.disconnect(rig.alice)
        rig.alice.session.send_text("#lab", "queued while away")
        model = ChatModel(rig.alice.session, rig.net.clock)
        self.assertIn("#lab", model.panes)
        [line] = [line for line in model.pane("#lab").lines if line.kind == "own"]
        self.assertEqual((line.text, line.delivered), ("queued while away", False))
