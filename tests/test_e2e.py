"""End to end: real daemons in subprocesses, real TLS on 127.0.0.1, the
client library and the securechat-client command."""

import json
import os
import sys

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from securechat.client.connector import Connector
from securechat.client.session import ClientSession
from securechat.client.trust import ServerTrust
from securechat.crypto.certificates import parse_fingerprint
from securechat.lineprotocol import tls_exporter
from tests.daemon import ROOT, Daemon, environment
from tests.identities import identity


class LiveClient:
    """A ClientSession connected to a daemon over TLS with the real reactor."""

    def __init__(self, name, daemon, state=None):
        self.name = name
        self.state = state or {}
        self.events = []
        self.session = ClientSession(identity(name), name, dict(self.state), reactor,
                                     self._save, tls_exporter)
        self.session.subscribe(self.events.append)
        trust = ServerTrust("127.0.0.1", fingerprint=parse_fingerprint(daemon.fingerprint))
        self.connector = Connector(reactor, self.session, "127.0.0.1", daemon.port, trust)
        self.connector.start()

    def _save(self, state):
        self.state = json.loads(json.dumps(state))

    def of(self, kind):
        return [e.fields for e in self.events if e.kind == kind]

    def stop(self):
        return self.connector.stop()


@defer.inlineCallbacks
def until(predicate, timeout=30.0, step=0.05, context=None):
    """Poll C{predicate} on the reactor until it holds (no fixed sleeps)."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            detail = f"; last events: {context()}" if context else ""
            raise AssertionError(f"condition not met within {timeout} s{detail}")
        yield task.deferLater(reactor, step, lambda: None)
        waited += step


class DaemonTestCase(TestCase):
    """Each test gets its own daemon on a fresh data dir, stopped afterwards."""

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.daemon = Daemon(os.path.abspath(self.mktemp()))
        yield self.daemon.start()
        self.addCleanup(self.daemon.stop)


class DurabilityTests(DaemonTestCase):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        self.clients = []
        self.addCleanup(self._clean)

    @defer.inlineCallbacks
    def _clean(self):
        for client in self.clients:
            yield client.stop()

    def client(self, name, state=None):
        client = LiveClient(name, self.daemon, state)
        self.clients.append(client)
        return client

    @defer.inlineCallbacks
    def test_sigkill_loses_no_acknowledged_message(self):
        """SIGKILL in the middle of a burst, restart: every acknowledged message is in
        history, none twice, and the client finishes the burst after reconnecting."""
        alice = self.client("alice")
        yield alice.session.when_live()
        yield alice.session.join("#lab")
        for n in range(400):
            alice.session.send_text("#lab", f"burst {n}")
        yield until(lambda: len(alice.of("sent")) >= 120)
        yield self.daemon.signal("KILL")
        acked_before_kill = len(alice.of("sent"))
        self.assertLess(acked_before_kill, 400)
        yield self.daemon.start()
        yield until(lambda: len(alice.of("sent")) == 400, timeout=90,
                    context=lambda: [(e.kind, e.fields.get("code"), e.fields.get("message"),
                                      e.fields.get("reason")) for e in alice.events
                                     if e.kind != "sent"][-12:])
        history = yield alice.session.history("#lab", 500)
        texts = [m["text"] for m in history]
        self.assertEqual(sorted(texts), sorted(f"burst {n}" for n in range(400)))
        self.assertEqual(len(texts), len(set(texts)))

    @defer.inlineCallbacks
    def test_data_dir_holds_no_plaintext(self):
        """After a conversation, no byte of what anyone typed is in the daemon's files."""
        alice, bob = self.client("alice"), self.client("bob")
        yield alice.session.when_live()
        yield bob.session.when_live()
        yield alice.session.join("#lab")
        yield bob.session.join("#lab")
        alice.session.send_text("#lab", "PLAINTEXT-CANARY-alpha")
        bob.session.send_text("#lab", "PLAINTEXT-CANARY-bravo")
        yield until(lambda: len(alice.of("message")) == 1 and len(bob.of("message")) == 1)
        yield self.daemon.stop()
        for directory, _, files in os.walk(self.daemon.data_dir):
            for name in files:
                with open(os.path.join(directory, name), "rb") as f:
                    self.assertNotIn(b"PLAINTEXT-CANARY", f.read(), name)
        self.assertNotIn("PLAINTEXT-CANARY", self.daemon.log)


class BatchCommandTests(DaemonTestCase):
    """securechat-client --batch, as a script would run it."""

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        self.homes = os.path.abspath(self.mktemp())

    def batch(self, who, lines, *extra, nick=True):
        return run_batch(self.daemon, self.homes, who, lines, *extra, nick=nick)

    @defer.inlineCallbacks
    def test_three_clients_story(self):
        """alice creates #lab, bob joins and they talk, carol joins while alone and reads
        once alice is back, alice kicks carol and carol reads nothing after; after a
        SIGKILL and restart, /history shows every acknowledged message."""
        # Identities first (RSA key generation takes a moment), so that the timed part
        # below has wide margins: bob is in the room seconds before alice speaks to him.
        yield self.batch("alice", ["/join #lab"])
        yield self.batch("bob", ["/wait 0"])
        alice_run = self.batch("alice", ["/join #lab", "/wait 6", "hi bob"], "--linger", "2",
                               nick=False)
        yield task.deferLater(reactor, 1.0, lambda: None)
        bob, _, code = yield self.batch("bob", ["/join #lab", "hello alice", "/wait 8"],
                                        nick=False)
        alice, _, alice_code = yield alice_run
        self.assertEqual((code, alice_code), (0, 0))
        self.assertIn(("alice", "hi bob"), [(e["from"], e["text"]) for e in bob if e["event"] == "message"])
        self.assertIn(("bob", "hello alice"), [(e["from"], e["text"]) for e in alice if e["event"] == "message"])
        carol, _, _ = yield self.batch("carol", ["/join #lab", "/wait 1"])
        self.assertTrue([e for e in carol if e["event"] == "key_pending"])
        yield self.batch("alice", ["/join #lab", "welcome carol", "/wait 1"], nick=False)
        carol, _, _ = yield self.batch("carol", ["/wait 1"], nick=False)
        self.assertIn("welcome carol", [e["text"] for e in carol if e["event"] == "message"])
        yield self.batch("alice", ["/join #lab", "/kick carol", "carol is out", "/wait 1"],
                         nick=False)
        bob, _, _ = yield self.batch("bob", ["/wait 1"], nick=False)
        self.assertIn("carol is out", [e["text"] for e in bob if e["event"] == "message"])
        carol, _, _ = yield self.batch("carol", ["/wait 1"], nick=False)
        self.assertNotIn("carol is out", [e.get("text") for e in carol])
        self.assertEqual([e["event"] for e in carol if e["event"] == "left"], ["left"])

        # SIGKILL in the middle of a burst, restart: /history has every acknowledged line.
        burst = self.batch("alice", ["/join #lab", *(f"burst {n}" for n in range(200))],
                           "--connect-timeout", "60", nick=False)
        yield task.deferLater(reactor, 2.5, lambda: None)
        yield self.daemon.signal("KILL")
        yield self.daemon.start()
        alice, _, code = yield burst
        self.assertEqual(code, 0)
        acknowledged = {e["text"] for e in alice if e["event"] == "sent"}
        self.assertEqual(len(acknowledged), 200)
        bob, _, _ = yield self.batch("bob", ["/join #lab", "/history 400"], nick=False)
        history = {e["text"] for e in bob if e["event"] == "message" and e.get("history")}
        self.assertEqual(acknowledged - history, set())

    @defer.inlineCallbacks
    def test_wrong_pin_refused(self):
        """A daemon whose certificate is not the pinned one is refused: exit 2, and the
        reason names both fingerprints; nothing is sent to it."""
        events, _, code = yield self.batch("eve", ["/join #lab", "secret"], "--trust-fingerprint",
                                           "AB" * 32)
        self.assertEqual(code, 2)
        [fatal] = [e for e in events if e["event"] == "fatal"]
        self.assertEqual(fatal["code"], "UNTRUSTED_SERVER")
        self.assertIn("does not match the pinned AB:AB", fatal["message"])

    @defer.inlineCallbacks
    def test_one_line_errors(self):
        """Misuse gives one line on stderr and exit code 2, never a traceback."""
        _, err, code = yield self.batch("dora", ["x"], nick=False)
        self.assertEqual(code, 2)
        self.assertEqual(len(err.strip().splitlines()), 1)
        self.assertIn("--nick", err)
        yield self.batch("dora", ["/join #lab"])
        env_home = os.path.join(self.homes, "dora")
        out, err, code = yield _run(
            ["-m", "securechat.client.cli", "--batch", "--home", env_home],
            {**environment(), "SECURECHAT_PASSPHRASE": "wrong"}, ["x"])
        self.assertEqual((code, err.decode().strip()), (2, f"securechat-client: {env_home}: wrong passphrase"))


@defer.inlineCallbacks
def run_batch(daemon, homes, who, lines, *extra, nick=True):
    """securechat-client --batch as C{who} (home and passphrase of their own) against
    C{daemon}; fire with (JSON events, stderr, exit code)."""
    env = {**environment(), "SECURECHAT_PASSPHRASE": f"pass-{who}"}
    args = ["-m", "securechat.client.cli", "--batch", "--home", os.path.join(homes, who),
            "--server", f"127.0.0.1:{daemon.port}", "--trust-fingerprint", daemon.fingerprint,
            *extra]
    if nick:
        args += ["--nick", who]
    out, err, code = yield _run(args, env, lines)
    events = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return events, err.decode(), code


def _run(args, env, lines):
    """Run the client with stdin; fire with (stdout, stderr, exit code)."""
    from twisted.internet import protocol

    class Collector(protocol.ProcessProtocol):
        def __init__(self):
            self.out, self.err, self.done = b"", b"", defer.Deferred()

        def connectionMade(self):  # noqa: N802
            self.transport.write("\n".join(lines).encode() + b"\n")
            self.transport.closeStdin()

        def outReceived(self, data):  # noqa: N802
            self.out += data

        def errReceived(self, data):  # noqa: N802
            self.err += data

        def processEnded(self, reason):  # noqa: N802
            self.done.callback((self.out, self.err, reason.value.exitCode))

    collector = Collector()
    reactor.spawnProcess(collector, sys.executable, [sys.executable, *args], env=env, path=ROOT)
    return collector.done


class OperatorTests(DaemonTestCase):
    @defer.inlineCallbacks
    def test_ban_reaches_a_running_daemon(self):
        """securechat-admin user ban, run beside a live daemon, ends the user's session
        within seconds and the next login is refused: nothing to reload."""
        alice = LiveClient("alice", self.daemon)
        self.addCleanup(alice.stop)
        yield alice.session.when_live()
        out, err, code = yield _run(
            ["-m", "securechat.admin", "--data-dir", self.daemon.data_dir, "user", "ban",
             "alice"], environment(), [])
        self.assertEqual(code, 0, err)
        yield until(lambda: any(e.get("code") == "ACCOUNT_BANNED" for e in alice.of("fatal")),
                    timeout=20, context=lambda: alice.events[-5:])


class JsonLogTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_json_log_and_level_reload(self):
        """With format = "json" every line the daemon prints is a JSON object; after the
        config file's level changes to warn, SIGHUP applies it and info lines stop."""
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            f.write('[log]\nformat = "json"\nlevel = "info"\n')
        daemon = Daemon(os.path.abspath(self.mktemp()), None, "--config", config)
        yield daemon.start()
        self.addCleanup(daemon.stop)
        first = LiveClient("alice", daemon)
        yield first.session.when_live()
        yield first.stop()
        yield until(lambda: "logged in as alice" in daemon.log)
        with open(config, "w") as f:
            f.write('[log]\nformat = "json"\nlevel = "warn"\n')
        daemon.process.signalProcess("HUP")
        yield until(lambda: "log level is now warn" in daemon.log)
        second = LiveClient("bob", daemon)
        yield second.session.when_live()
        yield second.stop()
        records = [json.loads(line) for line in daemon.log.splitlines() if line.strip()]
        self.assertTrue(all({"time", "level", "message"} <= set(r) for r in records))
        self.assertNotIn("logged in as bob", daemon.log)


class MetricsEndpointTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_prometheus_scrape(self):
        """With --metrics-port, GET /metrics on 127.0.0.1 reports connections, rooms,
        messages and bytes in Prometheus' text format."""
        from twisted.web.client import Agent, readBody

        from tests.daemon import free_port

        port = free_port()
        daemon = Daemon(os.path.abspath(self.mktemp()), None, "--metrics-port", str(port))
        yield daemon.start()
        self.addCleanup(daemon.stop)
        client = LiveClient("alice", daemon)
        self.addCleanup(client.stop)
        yield client.session.when_live()
        yield client.session.join("#lab")
        client.session.send_text("#lab", "counted, never read")
        yield client.session.when_idle()
        response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/metrics".encode())
        body = (yield readBody(response)).decode()
        self.assertEqual(response.code, 200)
        for line in ("securechat_connections 1.0", "securechat_rooms 1.0",
                     "securechat_messages_relayed_total 1.0"):
            self.assertIn(line, body)
        self.assertIn("securechat_store_commit_seconds_bucket", body)
        self.assertNotIn("counted, never read", body)


class SignalTests(DaemonTestCase):
    """SIGTERM stops cleanly without losing acknowledged messages; SIGHUP reloads TLS."""

    @defer.inlineCallbacks
    def test_sigterm_mid_burst(self):
        """SIGTERM in the middle of sends exits 0, and after a restart every acknowledged
        message is in history; the client then finishes the rest."""
        alice = LiveClient("alice", self.daemon)
        self.addCleanup(alice.stop)
        yield alice.session.when_live()
        yield alice.session.join("#lab")
        for n in range(300):
            alice.session.send_text("#lab", f"term {n}")
        yield until(lambda: len(alice.of("sent")) >= 80)
        code, signal = yield self.daemon.signal("TERM")
        self.assertIn("Server Shut Down", self.daemon.log)
        self.assertEqual((code, signal), (0, None))
        yield self.daemon.start()
        yield until(lambda: len(alice.of("sent")) == 300, timeout=90,
                    context=lambda: [(e.kind, e.fields) for e in alice.events[-8:]])
        history = yield alice.session.history("#lab", 400)
        self.assertEqual(sorted(m["text"] for m in history), sorted(f"term {n}" for n in range(300)))

    @defer.inlineCallbacks
    def test_sighup_reloads_certificate(self):
        """After SIGHUP a new certificate serves the next handshake; a broken one is refused
        and the old certificate keeps serving. The daemon never exits."""
        from securechat.crypto.certificates import generate_self_signed
        from securechat.server.tls import SELF_SIGNED_CERT, SELF_SIGNED_KEY
        import datetime

        old = self.daemon.fingerprint
        cert_pem, key_pem = generate_self_signed(
            ["127.0.0.1", "localhost"], datetime.datetime.now(datetime.timezone.utc))
        for name, data in ((SELF_SIGNED_KEY, key_pem), (SELF_SIGNED_CERT, cert_pem)):
            with open(os.path.join(self.daemon.data_dir, name), "wb") as f:
                f.write(data)
        self.daemon.process.signalProcess("HUP")
        yield until(lambda: "TLS certificate reloaded" in self.daemon.log)
        new = self.daemon.log.rsplit("TLS certificate reloaded: sha256 Fingerprint=", 1)[1][:95]
        self.assertNotEqual(new, old)
        client = LiveClient("alice", _Pinned(self.daemon, new))
        self.addCleanup(client.stop)
        yield client.session.when_live()
        with open(os.path.join(self.daemon.data_dir, SELF_SIGNED_CERT), "w") as f:
            f.write("garbage")
        self.daemon.process.signalProcess("HUP")
        yield until(lambda: "TLS reload failed" in self.daemon.log)
        second = LiveClient("bob", _Pinned(self.daemon, new))
        self.addCleanup(second.stop)
        yield second.session.when_live()
        self.assertFalse(self.daemon.watcher.ended.called)


class _Pinned:
    """A daemon as seen by a client that pins another fingerprint."""

    def __init__(self, daemon, fingerprint):
        self.port, self.fingerprint = daemon.port, fingerprint
