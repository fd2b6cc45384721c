"""End to end: two console clients in tmux against a real daemon on loopback.

Keys go in with ``tmux send-keys`` and the screen comes back with
``capture-pane``; every wait polls the screen, none sleeps a fixed time.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import uuid

from twisted.internet import defer
from twisted.trial.unittest import SkipTest

from tests.daemon import ROOT
from tests.test_e2e import DaemonTestCase, until

PASSPHRASE = "correct horse battery staple"


class Terminal:
    """One tmux session running securechat-client, 100x30, on a private tmux server."""

    def __init__(self, socket: str, name: str, command: str):
        self.socket = socket
        self.name = name
        self.tmux("new-session", "-d", "-s", name, "-x", "100", "-y", "30", "-c", ROOT,
                  f"{command}; echo EXITED $?; sleep 600")
        self.tmux("set-option", "-t", name, "escape-time", "0")

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-u", "-L", self.socket, *args], check=True,
                              capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", self.name, "-l", text)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def line(self, text: str) -> None:
        self.type(text)
        self.keys("Enter")

    def paste(self, text: str) -> None:
        """Paste as a terminal does (bracketed), through a file: tmux refuses a
        command line as long as a big paste."""
        with tempfile.NamedTemporaryFile("w", suffix=".paste") as f:
            f.write(text)
            f.flush()
            self.tmux("load-buffer", "-b", "p", f.name)
        self.tmux("paste-buffer", "-p", "-b", "p", "-t", self.name)

    def shows(self, text: str, timeout: float = 30.0) -> defer.Deferred:
        return until(lambda: text in self.screen(), timeout=timeout,
                     context=lambda: "\n" + self.screen())


class ConsoleTests(DaemonTestCase):
    timeout = 180

    def setUp(self):
        if shutil.which("tmux") is None:
            raise SkipTest("tmux is not installed (.ci/run installs it)")
        self.socket = f"securechat-test-{uuid.uuid4().hex[:8]}"
        self.addCleanup(subprocess.run, ["tmux", "-L", self.socket, "kill-server"],
                        capture_output=True)
        return super().setUp()

    def client(self, name: str, *args: str, env: str = "") -> Terminal:
        home = os.path.abspath(self.mktemp())
        command = (f"env PYTHONPATH={ROOT} TERM=tmux-256color LANG=C.UTF-8 {env} "
                   f"{sys.executable} -m securechat.client.cli --home {home} "
                   f"--server 127.0.0.1:{self.daemon.port} {' '.join(args)} "
                   f"2>>{home}.stderr")
        return Terminal(self.socket, name, command)

    @defer.inlineCallbacks
    def test_two_people_talk(self):
        """Alice's guided first run, then alice and bob share a room: each sees the other's
        lines without pressing a key; a multi-line paste waits for Enter; rooms switch;
        Ctrl+D quits cleanly."""
        alice = self.client("alice")
        yield alice.shows("your nick:")
        alice.line("alice")
        yield alice.shows("passphrase for")
        alice.line(PASSPHRASE)
        yield alice.shows("again, to be sure")
        alice.line(PASSPHRASE)
        yield alice.shows("Trust this server?")
        self.assertIn(self.daemon.fingerprint, alice.screen())
        alice.line("y")
        yield alice.shows("[connected")

        bob = self.client("bob", "--nick", "bob", "--trust-fingerprint", self.daemon.fingerprint,
                          env=f"SECURECHAT_PASSPHRASE={PASSPHRASE.replace(' ', '-')}")
        yield bob.shows("[connected")

        alice.line("/join #lab")
        yield alice.shows("you joined #lab as owner")
        bob.line("/join #lab")
        yield bob.shows("you joined #lab as member")
        yield alice.shows("bob joined")

        alice.line("hello bob")
        yield bob.shows("<alice> hello bob")
        bob.line("hi alice")
        yield alice.shows("<bob> hi alice")
        yield alice.shows("#lab (2 members) [E2E epoch")

        alice.paste("first pasted line\nsecond pasted line")
        yield alice.shows("> first pasted line")
        self.assertNotIn("<alice> first pasted line", bob.screen())
        alice.keys("Enter")
        yield bob.shows("second pasted line")

        alice.keys("M-1")
        yield alice.shows("] securechat")
        bob.line("while you look away")
        yield alice.shows("2 #lab (1)")
        alice.keys("M-a")
        yield alice.shows("<bob> while you look away")

        alice.keys("C-d")
        yield alice.shows("EXITED 0")
        bob.line("/quit")
        yield bob.shows("EXITED 0")

    @defer.inlineCallbacks
    def test_huge_paste_stays_responsive(self):
        """A paste of 20,000 characters lands in the input at once, in a few rows under
        the status bar, and Ctrl+C still quits at once."""
        carol = self.client("carol", "--nick", "carol", "--trust-fingerprint",
                            self.daemon.fingerprint,
                            env=f"SECURECHAT_PASSPHRASE={PASSPHRASE.replace(' ', '-')}")
        yield carol.shows("[connected")
        carol.line("/join #big")
        yield carol.shows("you joined #big as owner")
        lines = [f"pasted line {n:03d} " + "x" * 60 for n in range(270)]
        carol.paste("\n".join(lines))
        yield carol.shows("pasted line 269", timeout=10)
        screen = carol.screen()
        self.assertIn("#big (1 members)", screen)
        self.assertNotIn("pasted line 000", screen)
        carol.keys("C-c")
        yield carol.shows("EXITED 0", timeout=10)
