"""Tests for securechat.console.app: pastes, the client config file, and the
coalesced redraw that keeps the screen current after network events."""

import os
import subprocess
import sys

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from securechat.console.app import ConsoleConfigError, PasteFilter, Redrawer, load_settings
from securechat.console.keys import Paste
from tests.daemon import ROOT, environment


class PasteFilterTests(SynchronousTestCase):
    def test_bracketed_paste_is_one_event(self):
        """Everything between begin and end paste is one Paste, Enter a new line in it;
        Enter after it is a key again."""
        paste = PasteFilter()
        keys = paste(["begin paste", "a", "enter", "b", "enter", "end paste"], [])
        self.assertEqual(keys, [Paste("a\nb\n")])
        self.assertIsInstance(keys[0], Paste)
        self.assertEqual(paste(["enter"], []), ["enter"])

    def test_paste_split_over_reads(self):
        """A bracketed paste arriving in several reads is still one event, at its end."""
        paste = PasteFilter()
        self.assertEqual(paste(["begin paste", "a"], []), [])
        self.assertEqual(paste(["enter"], []), [])
        self.assertEqual(paste(["b", "end paste", "x"], []), [Paste("a\nb"), "x"])

    def test_pasted_tab_is_spaces_and_keys_are_not_text(self):
        """A tab inside a paste is spaces; named keys (from pasted escape sequences) are dropped."""
        paste = PasteFilter()
        self.assertEqual(paste(["begin paste", "tab", "x", "up", "end paste"], []),
                         [Paste("    x")])

    def test_unbracketed_paste_detected(self):
        """Without bracketing, a batch with Enter followed by more keys is a paste."""
        paste = PasteFilter()
        self.assertEqual(paste(["l", "1", "enter", "l", "2", "enter"], []), [Paste("l1\nl2\n")])
        self.assertEqual(paste(["x", "enter"], []), ["x", "enter"])


class SettingsTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_missing_file_is_defaults(self):
        """No config file means the default keys, bracketed paste and the bell."""
        settings = load_settings(self.mktemp())
        self.assertEqual(settings.keymap.action("ctrl d"), "quit")
        self.assertTrue(settings.bracketed_paste and settings.bell)

    def test_keys_and_options(self):
        """[keys] rebinds and [console] switches options."""
        settings = load_settings(self.write('[keys]\nquit = ["ctrl q"]\n'
                                            '[console]\nbell = false\n'))
        self.assertEqual(settings.keymap.action("ctrl q"), "quit")
        self.assertFalse(settings.bell)

    def test_errors_name_the_problem(self):
        """Broken TOML, unknown sections or options and bad keys are one clear error."""
        cases = {"[keys\n": "line 1",
                 "[colours]\n": "unknown section [colours]",
                 "[console]\nbeep = true\n": "unknown option [console] beep",
                 "[console]\nbell = 1\n": "bell must be true or false",
                 '[keys]\nhelp = ["ctrl d"]\n': "bound to both"}
        for text, expected in cases.items():
            error = self.assertRaises(ConsoleConfigError, load_settings, self.write(text))
            self.assertIn(expected, str(error))


class _Loop:
    def __init__(self, clock):
        self.clock = clock
        self.draws = 0
        self.screen = self
        self.written = []

    def set_alarm_in(self, seconds, callback):
        return self.clock.callLater(seconds, callback, self, None)

    def draw_screen(self):
        self.draws += 1

    def write(self, data):
        self.written.append(data)


class _View:
    refreshes = 0

    def refresh(self):
        self.refreshes += 1


class _Model:
    bells = 0


class RedrawerTests(SynchronousTestCase):
    def test_one_draw_per_burst(self):
        """Many changes in one reactor turn give one repaint, without a keypress."""
        clock = task.Clock()
        loop, view, model = _Loop(clock), _View(), _Model()
        redrawer = Redrawer(loop, view, model, bell=True)
        for _ in range(50):
            redrawer.request()
        clock.advance(0)
        self.assertEqual((loop.draws, view.refreshes), (1, 1))
        redrawer.request()
        clock.advance(0)
        self.assertEqual(loop.draws, 2)

    def test_bell_rings_once_per_new_alert(self):
        """The terminal bell rings when mentions or direct messages arrived."""
        clock = task.Clock()
        loop, model = _Loop(clock), _Model()
        redrawer = Redrawer(loop, _View(), model, bell=True)
        model.bells = 2
        redrawer.request()
        clock.advance(0)
        redrawer.request()
        clock.advance(0)
        self.assertEqual(loop.written, ["\a"])


class LayeringTests(SynchronousTestCase):
    def test_only_the_console_imports_urwid(self):
        """The client core, the server and the CLI load without urwid."""
        code = ("import sys, securechat.client.session, securechat.client.cli, "
                "securechat.client.batch, securechat.server.service, securechat.tap; "
                "print('urwid' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code], env=environment(), cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        self.assertEqual(out.strip(), "False")

    def test_console_modules_use_only_the_client_core(self):
        """No console module imports the server or the line protocol directly."""
        folder = os.path.join(ROOT, "securechat", "console")
        for name in os.listdir(folder):
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    source = f.read()
                for banned in ("securechat.server", "securechat.lineprotocol",
                               "securechat.crypto"):
                    self.assertNotIn(banned, source, name)


class ExampleConfigTests(SynchronousTestCase):
    def test_example_client_config_loads(self):
        """conf/client.toml, as shipped, is a valid client config."""
        settings = load_settings(os.path.join(ROOT, "conf", "client.toml"))
        self.assertTrue(settings.bracketed_paste)
