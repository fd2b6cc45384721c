"""Tests for securechat.console.text: untrusted text made safe to display."""

from twisted.trial.unittest import SynchronousTestCase

from securechat.console.text import NICK_COLOURS, REPLACEMENT, nick_colour, safe_line, safe_lines


class SafeLineTests(SynchronousTestCase):
    def test_escape_sequences_neutralised(self):
        """ESC, BEL and other C0/C1 controls become a visible replacement character."""
        self.assertEqual(safe_line("a\x1b[31mb\x07c\x9bd"), f"a{REPLACEMENT}[31mb{REPLACEMENT}c"
                                                          f"{REPLACEMENT}d")

    def test_bidi_overrides_neutralised(self):
        """Bidi overrides cannot reorder what the reader sees."""
        self.assertEqual(safe_line("x\u202ey\u2066z"), f"x{REPLACEMENT}y{REPLACEMENT}z")

    def test_width_traps_removed(self):
        """Skin tones, VS16 and ZWJ are dropped; flags read as [US]."""
        self.assertEqual(safe_line("👍🏽 ❤️ 🇺🇸 🇺"), f"👍 ❤ [US] {REPLACEMENT}")

    def test_ordinary_text_untouched(self):
        """Accents, CJK and plain emoji pass through."""
        self.assertEqual(safe_line("café 漢字 👍"), "café 漢字 👍")

    def test_tabs_and_lines(self):
        """Tabs become spaces; text splits into lines on any newline convention."""
        self.assertEqual(safe_lines("a\tb\r\nc\nd"), ["a    b", "c", "d"])


class NickColourTests(SynchronousTestCase):
    def test_stable_and_case_blind(self):
        """A nick always gets the same colour, whatever its case."""
        self.assertEqual(nick_colour("Alice"), nick_colour("alice"))
        self.assertIn(nick_colour("bob"), NICK_COLOURS)
        self.assertGreater(len({nick_colour(f"user{n}") for n in range(40)}), 4)
