"""Tests for securechat.console.keys: the key table and its overrides."""

from twisted.trial.unittest import SynchronousTestCase

from securechat.console.keys import DEFAULT_BINDINGS, Keymap, KeymapError


class KeymapTests(SynchronousTestCase):
    def test_defaults(self):
        """The issue's keys are bound by default, each key to one action."""
        keymap = Keymap()
        expected = {"enter": "send", "meta enter": "newline", "up": "history_prev",
                    "tab": "complete", "page up": "scroll_up", "meta 3": "room_3",
                    "ctrl n": "next_room", "ctrl p": "prev_room", "meta a": "next_active",
                    "ctrl r": "search_history", "ctrl d": "quit", "f1": "help"}
        for key, action in expected.items():
            self.assertEqual(keymap.action(key), action, key)
        self.assertEqual(len({b.action for b in DEFAULT_BINDINGS}), len(DEFAULT_BINDINGS))

    def test_override(self):
        """A [keys] entry rebinds an action; the old key is free again."""
        keymap = Keymap(overrides={"quit": ["ctrl q"]})
        self.assertEqual(keymap.action("ctrl q"), "quit")
        self.assertIsNone(keymap.action("ctrl d"))
        self.assertIn(("Ctrl+Q", "quit cleanly (or /quit)"), keymap.describe())

    def test_single_key_string(self):
        """A single key may be given as a plain string."""
        self.assertEqual(Keymap(overrides={"help": "f2"}).action("f2"), "help")

    def test_unknown_action(self):
        """An unknown action is refused, naming the known ones."""
        error = self.assertRaises(KeymapError, Keymap, overrides={"explode": ["x"]})
        self.assertIn("no such action", str(error))
        self.assertIn("next_active", str(error))

    def test_conflict(self):
        """Binding a key already in use is refused, naming both actions."""
        error = self.assertRaises(KeymapError, Keymap, overrides={"help": ["ctrl d"]})
        self.assertIn("'ctrl d' is bound to both", str(error))

    def test_bad_value(self):
        """A value that is not a key name, or no key at all, is refused."""
        self.assertRaises(KeymapError, Keymap, overrides={"help": [3]})
        self.assertRaises(KeymapError, Keymap, overrides={"send": []})

    def test_help_rows(self):
        """Help rows use the names people know, and group Alt+1..9."""
        rows = dict(Keymap().describe())
        self.assertIn("Alt+Enter", rows)
        self.assertIn("Ctrl+N / Alt+Down", rows)
        self.assertIn("Alt+1..9", rows)
        self.assertIn("Page Up", rows)
