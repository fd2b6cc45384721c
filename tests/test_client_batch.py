"""Tests for securechat.client.batch: commands in, JSON events out."""

import json

from twisted.trial.unittest import SynchronousTestCase

from securechat.client.batch import EXIT_FAILED, EXIT_FATAL, EXIT_OK, BatchRunner
from tests.clientharness import Network


class BatchTests(SynchronousTestCase):
    def setUp(self):
        self.net = Network()

    def runner(self, name, **options):
        rig = self.net.client(name, connect=False)
        output = []
        runner = BatchRunner(rig.session, self.net.clock, output.append, **options)
        runner.start()
        self.net.connect(rig)
        return rig, runner, output

    def feed(self, runner, *lines, eof=True):
        for line in lines:
            runner.line_received(line)
        if eof:
            runner.end_of_input()
        self.net.settle()

    def events(self, output, kind):
        return [e for e in map(json.loads, output) if e["event"] == kind]

    def test_join_and_send(self):
        """Lines after /join are messages to that room; the run ends 0 once all are acked."""
        _, runner, output = self.runner("alice")
        self.feed(runner, "/join #lab", "hello", "// not a command")
        self.assertEqual([e["text"] for e in self.events(output, "sent")],
                         ["hello", "/ not a command"])
        self.assertEqual(self.successResultOf(runner.done), EXIT_OK)

    def test_thousand_piped_lines(self):
        """A thousand piped lines are paced to the announced limits: all acknowledged, none
        refused for flooding, and the stack never overflows."""
        _, runner, output = self.runner("alice")
        self.feed(runner, "/join #lab", *(f"line {n}" for n in range(1000)))
        self.assertEqual(len(self.events(output, "sent")), 1000)
        self.assertEqual(self.events(output, "error"), [])
        self.assertEqual(self.successResultOf(runner.done), EXIT_OK)

    def test_errors_are_events_and_fail_the_run(self):
        """A bad command or a message with no room is an error event, and the exit code is 1."""
        _, runner, output = self.runner("alice")
        self.feed(runner, "no room yet", "/frobnicate", "/wait soon")
        codes = [e["code"] for e in self.events(output, "error")]
        self.assertEqual(codes, ["NO_ROOM", "UNKNOWN_COMMAND", "BAD_ARGUMENTS"])
        self.assertEqual(self.successResultOf(runner.done), EXIT_FAILED)

    def test_server_refusal_fails_the_run(self):
        """A command the server refuses (joining a banned room) fails the run."""
        _, runner, output = self.runner("bob")
        _, owner, _ = self.runner("alice")
        self.feed(owner, "/join #lab", "/ban bob", eof=False)
        self.feed(runner, "/join #lab")
        self.assertEqual(self.events(output, "error")[0]["code"], "BANNED")
        self.assertEqual(self.successResultOf(runner.done), EXIT_FAILED)

    def test_wait_and_linger(self):
        """/wait keeps receiving before the next line; --linger keeps receiving at the end."""
        _, alice, alice_out = self.runner("alice")
        self.feed(alice, "/join #lab", "/wait 5", eof=False)
        _, bob, _ = self.runner("bob")
        self.feed(bob, "/join #lab", "hi alice")
        self.assertEqual([e["text"] for e in self.events(alice_out, "message")], ["hi alice"])

    def test_history_and_who(self):
        """/history prints messages as message events; /who lists members."""
        _, runner, output = self.runner("alice")
        self.feed(runner, "/join #lab", "one", "two", "/wait 1", "/history 5", "/who")
        history = [e for e in self.events(output, "message") if e.get("history")]
        self.assertEqual([e["text"] for e in history], ["one", "two"])
        [who] = self.events(output, "who")
        self.assertEqual([m["nick"] for m in who["members"]], ["alice"])

    def test_fatal_login_exits_2(self):
        """A refused login ends the run with exit code 2 and says why."""
        _, first, _ = self.runner("alice")
        self.feed(first, "/join #lab")
        rig = self.net.client("mallory", connect=False)
        rig.session.nick = "alice"
        output = []
        runner = BatchRunner(rig.session, self.net.clock, output.append)
        runner.start()
        self.net.connect(rig)
        self.assertEqual(self.successResultOf(runner.done), EXIT_FATAL)
        self.assertEqual(self.events(output, "fatal")[0]["code"], "NICK_TAKEN")

    def test_unreachable_server_gives_up(self):
        """Without a connection for connect_timeout seconds, the run ends with exit 2."""
        rig = self.net.client("alice", connect=False)
        output = []
        runner = BatchRunner(rig.session, self.net.clock, output.append, connect_timeout=30)
        runner.start()
        rig.session.emit("connecting")
        self.net.clock.advance(30)
        self.assertEqual(self.successResultOf(runner.done), EXIT_FATAL)
        self.assertEqual(self.events(output, "fatal")[0]["code"], "UNREACHABLE")
