"""Tests for securechat.console.widgets and view: the screen rendered to text,
driven by keypresses, fed by the real client core in process."""

import urwid
from twisted.trial.unittest import SynchronousTestCase

from securechat.console.keys import Keymap, Paste
from securechat.console.model import STATUS_PANE
from securechat.console.view import ChatView
from securechat.console.widgets import INPUT_MAX_ROWS
from tests.consoleharness import ConsoleRig

SIZE = (100, 30)


class ViewTests(SynchronousTestCase):
    def setUp(self):
        self.rig = ConsoleRig(self)
        self.view = ChatView(self.rig.model, self.rig.controller, Keymap())
        self.rig.model.listen(self.view.refresh)
        self.rig.both_in()

    def screen(self, size=SIZE) -> list[str]:
        return [row.decode("utf-8") for row in self.view.render(size, focus=True).text]

    def type(self, text: str) -> None:
        for char in text:
            self.view.keypress(SIZE, char)

    def press(self, *keys) -> None:
        for key in keys:
            self.view.keypress(SIZE, key)
        self.rig.net.settle()

    def test_layout(self):
        """The room list, a message line, the status bar and the input are on screen."""
        self.rig.bob_says("hello alice")
        rows = self.screen()
        self.assertIn("1 securechat", rows[1])
        self.assertIn("2 #lab", rows[2])
        self.assertTrue(any("00:00 <bob> hello alice" in row for row in rows))
        self.assertIn("#lab (2 members)", rows[-2])
        self.assertIn("[E2E epoch 1, 0/1 verified]", rows[-2])
        self.assertTrue(rows[-1].startswith("> "))

    def test_typing_and_enter_send(self):
        """Typed text and Enter send a message, and the input empties."""
        self.type("from the keyboard")
        self.press("enter")
        self.assertEqual(self.rig.bob.texts(), [("alice", "from the keyboard")])
        self.assertEqual(self.view.input.edit_text, "")
        self.assertTrue(any("<alice> from the keyboard" in row for row in self.screen()))

    def test_paste_is_one_insert_in_a_few_rows(self):
        """A long paste goes into the input in one step; the input shows at most a few
        rows, around the cursor, and the status bar stays on screen."""
        changes = []
        urwid.connect_signal(self.view.input, "change", lambda *args: changes.append(1))
        text = "\n".join(f"line {n} " + "x" * 60 for n in range(300))
        self.view.keypress(SIZE, Paste(text))
        self.assertEqual((self.view.input.edit_text, len(changes)), (text, 1))
        rows = self.screen()
        self.assertIn("#lab (2 members)", rows[-1 - INPUT_MAX_ROWS])
        self.assertIn("line 299", rows[-1])
        self.assertNotIn("line 0 ", "\n".join(rows))

    def test_paste_longer_than_a_message_is_refused(self):
        """A paste that would make the message longer than the server takes is refused
        whole, with the sizes, and the input is left as it was."""
        self.type("keep me")
        self.view.keypress(SIZE, Paste("y" * 60_000))
        self.assertEqual(self.view.input.edit_text, "keep me")
        self.assertTrue(any("paste refused: message too long: 60,007 bytes" in row
                            for row in self.screen()))

    def test_alt_enter_makes_multiline_input(self):
        """Alt+Enter starts a new line; Enter then sends both lines as one message."""
        self.type("one")
        self.press("meta enter")
        self.type("two")
        self.press("enter")
        self.assertEqual(self.rig.bob.texts(), [("alice", "one\ntwo")])

    def test_long_input_asks_first(self):
        """Enter on six lines asks; n keeps them in the input, y sends them."""
        self.view.input.set_edit_text("\n".join("abcdef"))
        self.press("enter")
        self.assertIn("send these 6 lines", "\n".join(self.screen()))
        self.press("n")
        self.assertEqual(self.rig.bob.texts(), [])
        self.assertEqual(self.view.input.edit_text.count("\n"), 5)
        self.press("enter", "y")
        self.assertEqual(self.rig.bob.texts(), [("alice", "\n".join("abcdef"))])
        self.assertEqual(self.view.input.edit_text, "")

    def test_room_switching_keys(self):
        """Alt+1 shows the status pane, Ctrl+N the next room, Ctrl+P the previous one."""
        self.press("meta 1")
        self.assertEqual(self.rig.model.current, STATUS_PANE)
        self.press("ctrl n")
        self.assertEqual(self.rig.model.current_room, "#lab")
        self.press("ctrl p")
        self.assertEqual(self.rig.model.current, STATUS_PANE)
        self.assertIn("[connected] securechat", self.screen()[-2])

    def test_unread_count_in_room_list(self):
        """A room with unread messages shows the count; reading it clears it."""
        self.press("meta 1")
        self.rig.bob_says("one")
        self.rig.bob_says("two")
        self.assertIn("2 #lab (2)", self.screen()[2])
        self.press("meta a")
        self.assertNotIn("(2)", self.screen()[2])
        self.assertTrue(any("unread" in row for row in self.screen()))

    def test_scrollback(self):
        """PgUp scrolls back and the status says how much is below; Alt+End returns."""
        for n in range(60):
            self.rig.bob.session.send_text("#lab", f"message {n}")
        self.rig.net.settle()
        self.assertIn("message 59", "\n".join(self.screen()))
        self.press("page up", "page up")
        rows = self.screen()
        self.assertNotIn("message 59", "\n".join(rows))
        self.assertIn("-MORE(", rows[-2])
        self.rig.bob_says("newest")
        self.assertNotIn("newest", "\n".join(self.screen()))
        self.press("meta end")
        self.assertIn("newest", "\n".join(self.screen()))

    def test_history_keys(self):
        """Up recalls the last input of this room; Down returns to the draft."""
        self.type("earlier")
        self.press("enter")
        self.type("draft")
        self.press("up")
        self.assertEqual(self.view.input.edit_text, "earlier")
        self.press("down")
        self.assertEqual(self.view.input.edit_text, "draft")

    def test_ctrl_r_searches_history(self):
        """Ctrl+R finds the newest earlier input containing what is typed."""
        for text in ("deploy now", "lunch", "deploy later"):
            self.type(text)
            self.press("enter")
        self.type("deploy")
        self.press("ctrl r")
        self.assertEqual(self.view.input.edit_text, "deploy later")
        self.press("ctrl r")
        self.assertEqual(self.view.input.edit_text, "deploy now")

    def test_tab_completes_nicks(self):
        """Tab completes a member's nick."""
        self.type("b")
        self.press("tab")
        self.assertEqual(self.view.input.edit_text, "bob: ")

    def test_f1_help_overlay(self):
        """F1 shows the keys from the keymap table; Esc closes it."""
        self.press("f1")
        text = "\n".join(self.screen())
        self.assertIn("Alt+Enter", text)
        self.assertIn("Alt+1..9", text)
        self.press("page down", "page down")
        self.assertIn("/msg NICK text", "\n".join(self.screen()))
        self.press("esc")
        self.assertNotIn("Alt+Enter", "\n".join(self.screen()))

    def test_ctrl_d_quits(self):
        """Ctrl+D asks to quit."""
        self.press("ctrl d")
        self.assertEqual(self.rig.quits, [True])

    def test_hostile_text_keeps_the_layout(self):
        """Control characters, bidi overrides, emoji and wide characters from a sender
        leave every row exactly as wide as the screen."""
        self.rig.bob_says("\x1b[2J\x1b]0;title\x07 \u202eevil\u202c thumbs 👍🏽 flag 🇺🇸 "
                          "family 👨‍👩‍👧 漢字 e\u0301")
        for size in (SIZE, (40, 12)):
            canvas = self.view.render(size, focus=True)
            for row in canvas.text:
                self.assertEqual(urwid.str_util.calc_width(row.decode("utf-8"), 0,
                                                           len(row.decode("utf-8"))), size[0])
        text = "\n".join(self.screen())
        self.assertNotIn("\x1b", text)
        self.assertIn("[US]", text)

    def test_resize(self):
        """The same view renders at any terminal size."""
        self.rig.bob_says("still here")
        for size in ((100, 30), (50, 8), (30, 5)):
            self.assertEqual(len(self.view.render(size, focus=True).text), size[1])

    def test_reconnect_countdown(self):
        """While reconnecting the status bar counts down to the next attempt, then says
        it is connecting (the app's one-second tick refreshes the view)."""
        self.rig.alice.session.emit("reconnecting", seconds=5.0, attempt=2, reason="refused")
        self.assertIn("[reconnecting in 5 s]", self.screen()[-2])
        self.rig.net.clock.advance(3)
        self.view.refresh()
        self.assertIn("[reconnecting in 2 s]", self.screen()[-2])
        self.rig.net.clock.advance(3)
        self.view.refresh()
        self.assertIn("[connecting]", self.screen()[-2])
