"""End to end, over real TLS on 127.0.0.1: the limits both ends keep to.

Every message the server accepts, of any size up to the announced maximum,
reaches every member intact, live or catching up after a reconnect; the
lockout of issue 14 (a 3,000-character message shutting a member out) is
gone; a second client on one home and a daemon that cannot listen are
refused in one line.
"""

import os
import socket
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, threads
from twisted.internet.threads import blockingCallFromThread
from twisted.trial.unittest import TestCase

from securechat.crypto.envelope import MAX_MESSAGE_BYTES
from tests.daemon import ROOT, Daemon, environment
from tests.test_e2e import DaemonTestCase, LiveClient, run_batch, until

# The property test stores a few MiB quickly: a budget that never paces it.
GENEROUS_BUDGET = ("--store-bytes-per-second", str(64 << 20), "--store-burst-bytes",
                   str(256 << 20))

# Text a user may send: any Unicode scalar value (surrogates are not text).
CHARACTERS = st.characters(codec="utf-8")


def text_of_size(chunk: str, size: int) -> str:
    """C{chunk} repeated to exactly C{size} UTF-8 bytes (topped up with ASCII)."""
    text = chunk * (size // max(1, len(chunk.encode())) + 1)
    data = text.encode()[:size].decode("utf-8", "ignore")
    return data + "a" * (size - len(data.encode()))


class DeliveryPropertyTests(TestCase):
    timeout = 600

    @defer.inlineCallbacks
    def setUp(self):
        self.daemon = Daemon(os.path.abspath(self.mktemp()), None, *GENEROUS_BUDGET)
        yield self.daemon.start()
        self.addCleanup(self.daemon.stop)
        self.alice = LiveClient("alice", self.daemon)
        self.bob = LiveClient("bob", self.daemon)
        self.addCleanup(lambda: self.alice.stop())
        self.addCleanup(lambda: self.bob.stop())
        for client in (self.alice, self.bob):
            yield client.session.when_live()
            yield client.session.join("#prop")

    @defer.inlineCallbacks
    def deliver(self, text: str, offline: bool):
        """Send C{text} from alice; bob reads it live, or after reconnecting."""
        if offline:
            yield self.bob.stop()
            yield until(lambda: not self.bob.session.live)
        sent = len(self.alice.of("sent"))
        self.alice.session.send_text("#prop", text)
        yield until(lambda: len(self.alice.of("sent")) > sent,
                    context=lambda: self.alice.events[-4:])
        server_seq = self.alice.of("sent")[-1]["server_seq"]
        if offline:
            self.bob = LiveClient("bob", self.daemon, self.bob.state)
        yield until(lambda: any(m["server_seq"] == server_seq for m in self.bob.of("message")),
                    context=lambda: [e.kind for e in self.bob.events[-6:]])
        [received] = [m["text"] for m in self.bob.of("message") if m["server_seq"] == server_seq]
        return received

    def test_every_accepted_message_reaches_every_member_intact(self):
        """Hypothesis draws texts of any size up to the announced maximum (the
        maximum itself included) and of any characters; each is sent by alice and
        must reach bob byte for byte, live or when he catches up after reconnecting.
        The drawing runs on a thread and each example on the reactor, so that
        Hypothesis can shrink a failure over the real connection."""
        maximum = self.alice.session.limits.max_message_bytes
        sizes = st.one_of(st.just(maximum), st.integers(1, maximum), st.integers(1, 300))

        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(chunk=st.text(CHARACTERS, min_size=1, max_size=40), size=sizes,
               offline=st.booleans())
        def every_message(chunk, size, offline):
            text = text_of_size(chunk, size)
            received = blockingCallFromThread(reactor, self.deliver, text, offline)
            assert received == text, (len(received.encode()), len(text.encode()))

        return threads.deferToThread(every_message)


class LockoutTests(DaemonTestCase):
    """The story of issue 14, with the real securechat-client --batch."""

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        self.homes = os.path.abspath(self.mktemp())

    def batch(self, who, lines, *extra):
        return run_batch(self.daemon, self.homes, who, lines, *extra)

    @staticmethod
    def texts(events):
        return [e["text"] for e in events if e["event"] == "message"]

    @defer.inlineCallbacks
    def test_long_message_no_longer_locks_anyone_out(self):
        """bob joins; alice sends 3,000 characters, then exactly the announced maximum,
        then one byte more; bob comes back and reads the first two, and the third was
        refused at alice's end with the sizes, nothing sent."""
        yield self.batch("bob", ["/join #long", "/wait 2"])
        maximum = MAX_MESSAGE_BYTES
        alice, _, code = yield self.batch("alice", [
            "/join #long", "x" * 3000, "m" * maximum, "o" * (maximum + 1)])
        self.assertEqual(code, 1)
        [error] = [e for e in alice if e["event"] == "error"]
        self.assertEqual((error["code"], error["message"]), (
            "MESSAGE_TOO_LONG", f"message too long: {maximum + 1:,} bytes, at most "
                                f"{maximum:,}; split it or shorten it"))
        self.assertEqual(len([e for e in alice if e["event"] == "sent"]), 2)
        bob, _, code = yield self.batch("bob", ["/join #long", "/wait 5"])
        self.assertEqual(code, 0)
        self.assertEqual(self.texts(bob), ["x" * 3000, "m" * maximum])
        self.assertEqual([e for e in bob if e["event"] in ("reconnecting", "fatal")], [])

    @defer.inlineCallbacks
    def test_second_client_on_one_home_is_refused(self):
        """While a client runs on a home, a second one on it exits 2 with one line naming
        the first; once the first has ended, the home is free again."""
        yield self.batch("carol", ["/wait 0"])
        lock = os.path.join(self.homes, "carol", "client.lock")
        before = open(lock, "rb").read()
        first = self.batch("carol", ["/join #lab", "/wait 4"])
        yield until(lambda: open(lock, "rb").read() != before)
        _, err, code = yield self.batch("carol", ["/wait 0"])
        self.assertEqual(code, 2)
        self.assertEqual(len(err.strip().splitlines()), 1)
        self.assertIn("is in use by securechat-client --batch (pid ", err)
        _, _, first_code = yield first
        self.assertEqual(first_code, 0)
        _, _, code = yield self.batch("carol", ["/wait 0"])
        self.assertEqual(code, 0)


class ListenFailureTests(TestCase):
    def test_port_in_use_exits_non_zero_in_one_line(self):
        """A daemon whose port is taken exits 1 at once, saying which address and why;
        it never runs on without listening."""
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "--nodaemon", "--pidfile=", "--logfile=-", "securechat", "--interface",
             "127.0.0.1", "--port", str(port), "--data-dir", os.path.abspath(self.mktemp())],
            env=environment(), cwd=ROOT, capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 1)
        lines = [line for line in (result.stdout + result.stderr).splitlines()
                 if "cannot listen" in line]
        self.assertEqual(len(lines), 1)
        self.assertIn(f"securechat: cannot listen on 127.0.0.1:{port}: address already in use",
                      lines[0])
