"""Tests for securechat.client.commands: the slash-command table shared by
--batch and the console."""

from twisted.trial.unittest import SynchronousTestCase

from securechat.client.commands import SHARED_COMMANDS, Command, CommandTable
from securechat.wire import WireError
from tests.clientharness import Network


class _Context:
    def __init__(self, session, clock):
        self.session = session
        self.clock = clock
        self.room = None
        self.commands = SHARED_COMMANDS
        self.shown = []

    def show(self, kind, **fields):
        self.shown.append((kind, fields))

    def say(self, room, text):
        self.session.send_text(room, text)


class CommandTableTests(SynchronousTestCase):
    def setUp(self):
        self.net = Network()
        self.alice = self.net.client("alice")
        self.context = _Context(self.alice.session, self.net.clock)

    def run_line(self, line):
        d = SHARED_COMMANDS.run(self.context, line)
        self.net.settle()
        return d

    def test_join_sets_the_current_room(self):
        """/join makes the joined room current; plain text then goes there."""
        self.run_line("/join #lab")
        self.assertEqual(self.context.room, "#lab")
        self.run_line("hello")
        self.assertEqual([s["text"] for s in self.alice.of("sent")], ["hello"])

    def test_text_without_a_room(self):
        """Plain text with no current room is refused with NO_ROOM."""
        error = self.assertRaises(WireError, SHARED_COMMANDS.run, self.context, "hello")
        self.assertEqual(error.code, "NO_ROOM")

    def test_unknown_and_bad_arguments(self):
        """Unknown commands and missing arguments are errors with stable codes."""
        self.assertEqual(self.assertRaises(WireError, SHARED_COMMANDS.run, self.context,
                                           "/nope").code, "UNKNOWN_COMMAND")
        self.run_line("/join #lab")
        self.assertEqual(self.assertRaises(WireError, SHARED_COMMANDS.run, self.context,
                                           "/invite").code, "BAD_ARGUMENTS")
        self.assertEqual(self.assertRaises(WireError, SHARED_COMMANDS.run, self.context,
                                           "/set colour red").code, "BAD_ARGUMENTS")

    def test_set_invite_only(self):
        """/set invite_only on is an entry of the room's log; the room's flags say so."""
        self.run_line("/join #lab")
        self.run_line("/set invite_only on")
        self.assertTrue(self.alice.session.logs.get("#lab").state.invite_only)
        self.assertIn("invite_only", self.alice.session.rooms["#lab"].flags)

    def test_verify_in_two_steps(self):
        """/verify bob shows the number; /verify bob yes records that it matched;
        anything else after the nick is refused with the usage."""
        self.net.client("bob").session.join("#lab")
        self.run_line("/join #lab")
        self.net.settle()
        self.run_line("/verify bob")
        self.assertEqual(len(self.alice.of("safety_number")), 1)
        self.run_line("/verify bob yes")
        self.assertTrue(self.alice.session.pins.verified("bob"))
        self.assertEqual(self.assertRaises(WireError, SHARED_COMMANDS.run, self.context,
                                           "/verify bob maybe").code, "BAD_ARGUMENTS")

    def test_role_and_room_code(self):
        """/role makes a member an op by an entry of the log; /roomcode shows the
        room's code at its current entry."""
        self.net.client("bob").session.join("#lab")
        self.run_line("/join #lab")
        self.net.settle()
        self.run_line("/role bob op")
        state = self.alice.session.logs.get("#lab").state
        self.assertEqual(state.role(state.by_nick("bob")), "op")
        self.run_line("/roomcode")
        [code] = self.alice.of("room_code")
        self.assertEqual((code["code"], code["entries"]), (state.room_code(), state.length))

    def test_results_are_shown(self):
        """/who and /help hand their results to the front end's show()."""
        self.run_line("/join #lab")
        self.run_line("/who")
        self.run_line("/help")
        kinds = [kind for kind, _ in self.context.shown]
        self.assertEqual(kinds, ["who", "help"])
        usages = [c["usage"] for c in self.context.shown[1][1]["commands"]]
        self.assertIn("/join #room [password]", usages)

    def test_part_clears_the_current_room(self):
        """/part of the current room leaves no current room."""
        self.run_line("/join #lab")
        self.run_line("/part")
        self.assertIsNone(self.context.room)

    def test_names_are_unique(self):
        """A table refuses two commands of one name, also when extended."""
        command = Command("join", "/join", "again", lambda c, r: None)
        self.assertRaises(ValueError, SHARED_COMMANDS.extended, [command])
        self.assertRaises(ValueError, CommandTable, [command, command])
