"""Tests for securechat.console.controller: input to commands and messages,
completion, input history, pastes, lag."""

from twisted.trial.unittest import SynchronousTestCase

from securechat.console.controller import Completer, Controller, HistoryCursor
from securechat.console.keys import Keymap
from securechat.console.model import STATUS_PANE, ChatModel, direct_room
from tests.consoleharness import ConsoleRig


class SubmitTests(SynchronousTestCase):
    def setUp(self):
        self.rig = ConsoleRig(self)
        self.rig.both_in()
        self.controller = self.rig.controller
        self.model = self.rig.model

    def last_notice(self, room="#lab"):
        return self.model.pane(room).lines[-1].text

    def test_plain_text_is_sent_to_the_current_room(self):
        """A plain line goes to the room on screen and bob reads it."""
        self.assertTrue(self.controller.submit("hi bob"))
        self.rig.net.settle()
        self.assertEqual(self.rig.bob.texts(), [("alice", "hi bob")])

    def test_double_slash_sends_a_slash(self):
        """A line starting // is a message starting with /."""
        self.controller.submit("//shrug")
        self.rig.net.settle()
        self.assertEqual(self.rig.bob.texts(), [("alice", "/shrug")])

    def test_no_room_on_the_status_pane(self):
        """Text typed on the status pane is refused with a reason, and nothing is sent."""
        self.model.switch(STATUS_PANE)
        self.controller.submit("lost words")
        self.rig.net.settle()
        self.assertIn("NO_ROOM", self.last_notice(STATUS_PANE))
        self.assertEqual(self.rig.bob.texts(), [])

    def test_unknown_command(self):
        """An unknown command is an error line naming it, not a message."""
        self.controller.submit("/frobnicate now")
        self.assertIn("unknown command /frobnicate", self.last_notice())
        self.rig.net.settle()
        self.assertEqual(self.rig.bob.texts(), [])

    def test_server_refusal_is_shown(self):
        """A command the server refuses shows its stable code."""
        self.controller.submit("/kick carol")
        self.rig.net.settle()
        self.assertEqual(self.model.pane("#lab").lines[-1].kind, "error")

    def test_long_paste_needs_confirmation(self):
        """More than five lines wait for a yes; then they go as one message."""
        text = "\n".join(f"line {n}" for n in range(6))
        self.assertFalse(self.controller.submit(text))
        self.rig.net.settle()
        self.assertEqual(self.rig.bob.texts(), [])
        self.assertTrue(self.controller.submit(text, confirmed=True))
        self.rig.net.settle()
        self.assertEqual(self.rig.bob.texts(), [("alice", text)])

    def test_five_lines_go_at_once(self):
        """Up to five lines need no confirmation; a multi-line text starting with / is
        a message, not a command."""
        self.assertTrue(self.controller.submit("/not\na command"))
        self.rig.net.settle()
        self.assertEqual(self.rig.bob.texts(), [("alice", "/not\na command")])

    def test_me(self):
        """/me sends an action that bob's console shows as one."""
        self.controller.submit("/me waves")
        self.rig.net.settle()
        self.assertEqual(self.rig.bob.texts(), [("alice", "/me waves")])
        self.assertEqual(self.rig.lines()[-1], ("action", "alice", "waves"))

    def test_direct_message(self):
        """/msg opens an invite-only two-member room; bob's client joins it on the
        invite and reads the message sent before he joined."""
        bob = self.rig.bob.session
        Controller(bob, ChatModel(bob, self.rig.net.clock), self.rig.net.clock, Keymap(), list)
        self.controller.submit("/msg bob psst")
        self.rig.net.settle()
        for _ in range(3):
            self.rig.net.clock.advance(5)
            self.rig.net.settle()
        room = direct_room("alice", "bob")
        self.assertEqual(self.model.current_room, room)
        self.assertEqual(self.model.current_pane.label, "@bob")
        self.assertIn(room, self.rig.bob.session.rooms)
        self.assertIn("invite_only", self.rig.alice.session.rooms[room].flags)
        self.assertIn(("alice", "psst"), self.rig.bob.texts())

    def test_squatted_direct_room_is_refused(self):
        """If someone else made the direct room first, /msg sends nothing and leaves."""
        mallory = self.rig.net.client("mallory")
        mallory.session.join(direct_room("alice", "bob"))
        self.rig.net.settle()
        self.controller.submit("/msg bob secret")
        self.rig.net.settle()
        self.assertIn("NOT_PRIVATE", self.last_notice("#lab"))
        self.assertNotIn(direct_room("alice", "bob"), self.rig.alice.session.rooms)
        self.assertEqual(mallory.texts(), [])

    def test_direct_room_names_are_unambiguous(self):
        """Nicks with hyphens or at full length give distinct, valid room names."""
        from securechat.names import check_room

        self.assertNotEqual(direct_room("a-b", "c"), direct_room("a", "b-c"))
        room = direct_room("x" * 24, "y" * 24)
        check_room(room)

    def test_too_long_is_refused_without_jamming(self):
        """A message over the size limit is refused at once; the next one still goes."""
        self.controller.submit("x" * 50_000)
        self.assertIn("MESSAGE_TOO_LONG: message too long: 50,000 bytes, at most",
                      self.last_notice())
        self.controller.submit("small after")
        self.rig.net.settle()
        self.assertEqual(self.rig.bob.texts(), [("alice", "small after")])

    def test_msg_to_oneself_is_refused(self):
        """/msg with one's own nick is refused."""
        self.controller.submit("/msg Alice hi")
        self.assertIn("that is you", self.last_notice())

    def test_search(self):
        """/search finds decrypted messages in every room, case-insensitively."""
        self.rig.bob_says("the Deploy is at noon")
        self.rig.bob_says("lunch?")
        self.controller.submit("/search deploy")
        text = self.last_notice()
        self.assertIn("1 match for 'deploy'", text)
        self.assertIn("#lab 00:00 <bob> the Deploy is at noon", text)

    def test_clear(self):
        """/clear empties the pane on screen."""
        self.rig.bob_says("noise")
        self.controller.submit("/clear")
        self.assertEqual(self.model.pane("#lab").lines, [])

    def test_quit(self):
        """/quit asks the application to quit."""
        self.controller.submit("/quit")
        self.assertEqual(self.rig.quits, [True])

    def test_help_lists_commands_and_keys(self):
        """/help lists the console's commands and its keys."""
        self.controller.submit("/help")
        text = self.last_notice()
        self.assertIn("/msg NICK text", text)
        self.assertIn("Alt+Enter", text)

    def test_input_history_per_room(self):
        """What was submitted is remembered in the room it was typed in."""
        self.controller.submit("first")
        self.model.switch(STATUS_PANE)
        self.controller.submit("/rooms")
        self.assertEqual(self.model.pane("#lab").input_history, ["first"])
        self.assertEqual(self.model.pane(STATUS_PANE).input_history, ["/join #lab", "/rooms"])

    def test_lag_is_measured(self):
        """The lag probe's PING round trip lands in the model."""
        self.controller.start()
        self.rig.net.clock.advance(30)
        self.rig.net.settle()
        self.assertIsNotNone(self.model.lag)
        self.controller.stop()

    def test_members_known_after_join(self):
        """After joining, the pane knows its members, for completion and trust."""
        self.assertEqual(set(self.model.pane("#lab").members), {"alice", "bob"})


class CompletionTests(SynchronousTestCase):
    def candidates(self, head, word):
        if word.startswith("/"):
            return ["/join", "/me", "/msg"]
        if word.startswith("#"):
            return ["#lab", "#lobby"]
        return ["bob", "Bobby", "carol"]

    def test_nick_at_line_start(self):
        """A nick completed at the start of the line gets a colon, as in IRC clients."""
        self.assertEqual(Completer().complete("car", self.candidates), "carol: ")

    def test_cycles_on_repeat(self):
        """Tab again moves to the next match, case-insensitively ordered."""
        completer = Completer()
        first = completer.complete("hi bo", self.candidates)
        self.assertEqual(first, "hi bob ")
        self.assertEqual(completer.complete(first, self.candidates), "hi Bobby ")
        self.assertEqual(completer.complete("hi Bobby ", self.candidates), "hi bob ")

    def test_commands_and_rooms(self):
        """Commands and rooms complete without a colon."""
        self.assertEqual(Completer().complete("/j", self.candidates), "/join ")
        self.assertEqual(Completer().complete("/join #la", self.candidates), "/join #lab ")

    def test_completes_after_a_new_line(self):
        """In multi-line input the word after the line break completes too."""
        self.assertEqual(Completer().complete("hi\nca", self.candidates), "hi\ncarol ")

    def test_no_match_leaves_text(self):
        """Nothing to complete leaves the input as it was."""
        self.assertEqual(Completer().complete("zz", self.candidates), "zz")


class HistoryCursorTests(SynchronousTestCase):
    def test_up_down_and_draft(self):
        """Up walks back, Down walks forward and ends on what was being typed."""
        cursor = HistoryCursor(["one", "two"])
        self.assertEqual(cursor.older("draft"), "two")
        self.assertEqual(cursor.older("two"), "one")
        self.assertIsNone(cursor.older("one"))
        self.assertEqual(cursor.newer(), "two")
        self.assertEqual(cursor.newer(), "draft")
        self.assertIsNone(cursor.newer())

    def test_search_steps_to_older_matches(self):
        """Searching again finds the next older entry containing the text."""
        cursor = HistoryCursor(["deploy a", "other", "deploy b"])
        self.assertEqual(cursor.search("deploy"), "deploy b")
        self.assertEqual(cursor.search("deploy"), "deploy a")
        self.assertIsNone(cursor.search("deploy"))
