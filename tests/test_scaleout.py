"""End to end, scaled out: two real daemons on different ports sharing one
private PostgreSQL database and one private Redis, with real clients over TLS.

Each test gets a fresh database and a fresh pair of daemons. Both daemons use
the same certificate and server name, as they would behind one DNS name.
"""

import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from securechat.server.tls import SELF_SIGNED_CERT, SELF_SIGNED_KEY
from tests.daemon import Daemon
from tests.services import PrivateRedis, postgres_database
from tests.test_e2e import LiveClient, until

SERVER_NAME = "chat.test"


class ScaleOutTests(TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = PrivateRedis()
        self.redis.start()
        self.addCleanup(self.redis.stop)
        shared = ("--database", postgres_database(self), "--redis", self.redis.url,
                  "--server-name", SERVER_NAME)
        first_dir = os.path.abspath(self.mktemp())
        self.a = Daemon(first_dir, None, *shared)
        yield self.a.start()
        self.addCleanup(self.a.stop)
        self.b = Daemon(os.path.abspath(self.mktemp()), None, *shared,
                        "--tls-cert", os.path.join(first_dir, SELF_SIGNED_CERT),
                        "--tls-key", os.path.join(first_dir, SELF_SIGNED_KEY))
        yield self.b.start()
        self.addCleanup(self.b.stop)
        self.clients = []
        self.addCleanup(self._stop_clients)

    @defer.inlineCallbacks
    def _stop_clients(self):
        for client in self.clients:
            yield client.stop()

    def client(self, name, daemon, state=None):
        client = LiveClient(name, daemon, state)
        self.clients.append(client)
        return client

    @defer.inlineCallbacks
    def pair(self):
        """alice on daemon A and bob on daemon B, both in #lab."""
        alice, bob = self.client("alice", self.a), self.client("bob", self.b)
        for client in (alice, bob):
            yield client.session.when_live()
            yield client.session.join("#lab")
        return alice, bob

    def texts(self, client):
        return [m["text"] for m in client.of("message")]

    @defer.inlineCallbacks
    def test_members_on_two_daemons_talk_and_a_newcomer_gets_the_key(self):
        """alice on A and bob on B read each other; carol, joining later on B,
        reads what alice sends next with a key only a holder on A could give."""
        alice, bob = yield self.pair()
        alice.session.send_text("#lab", "from a")
        yield until(lambda: self.texts(bob) == ["from a"], context=lambda: (bob.events[-6:], self.b.log[-2500:], self.a.log[-2500:]))
        bob.session.send_text("#lab", "from b")
        yield until(lambda: self.texts(alice) == ["from b"], context=lambda: (alice.events[-6:], self.b.log[-3000:], self.a.log[-3000:]))
        carol = self.client("carol", self.b)
        yield carol.session.when_live()
        yield carol.session.join("#lab")
        alice.session.send_text("#lab", "welcome carol")
        yield until(lambda: self.texts(carol) == ["welcome carol"], context=lambda: carol.events[-8:])
        self.assertEqual(carol.of("undecryptable"), [])

    @defer.inlineCallbacks
    def test_daemon_killed_mid_burst_loses_nothing(self):
        """SIGKILL daemon A in the middle of alice's burst: alice carries on through
        daemon B, and bob gets every message exactly once."""
        alice, bob = yield self.pair()
        for n in range(200):
            alice.session.send_text("#lab", f"burst {n}")
        yield until(lambda: len(alice.of("sent")) >= 60)
        yield self.a.signal("KILL")
        yield alice.stop()
        moved = self.client("alice", self.b, alice.state)
        yield until(lambda: len(set(self.texts(bob))) == 200, timeout=90,
                    context=lambda: (len(moved.of("sent")), moved.events[-5:],
                                     [n for n in range(200)
                                      if f"burst {n}" not in self.texts(bob)],
                                     [e for e in bob.events if e.kind != "message"][-12:],
                                     self.b.log[-3000:]))
        self.assertEqual(sorted(self.texts(bob)), sorted(f"burst {n}" for n in range(200)))
        history = yield bob.session.history("#lab", 500)
        self.assertEqual(len(history), 200)

    @defer.inlineCallbacks
    def test_redis_restart_loses_nothing(self):
        """Messages sent while Redis is down reach the other daemon's member once it is back."""
        alice, bob = yield self.pair()
        alice.session.send_text("#lab", "before")
        yield until(lambda: self.texts(bob) == ["before"],
                    context=lambda: (bob.events[-12:], alice.events[-12:]))
        self.redis.stop()
        for n in range(3):
            alice.session.send_text("#lab", f"while down {n}")
        yield until(lambda: len(alice.of("sent")) == 4,
                    context=lambda: (alice.events[-12:], self.a.log[-3000:]))
        self.redis.start()
        yield until(lambda: len(self.texts(bob)) == 4, timeout=60,
                    context=lambda: (self.texts(bob), bob.events[-12:], alice.events[-8:],
                                     self.a.log[-4000:], self.b.log[-4000:]))
        self.assertEqual(self.texts(bob), ["before", *(f"while down {n}" for n in range(3))])


class UnreachableServiceTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def check_refused(self, *options, expected):
        daemon = Daemon(os.path.abspath(self.mktemp()), None, *options)
        failure = yield self.assertFailure(daemon.start(), RuntimeError)
        self.assertIn(expected, str(failure))
        self.assertNotIn("Traceback", daemon.log)

    def test_unreachable_postgres_is_named(self):
        """A daemon whose PostgreSQL is not there exits with one line that names it."""
        return self.check_refused("--database", "postgresql://chat@127.0.0.1:1/chat",
                                  expected="securechat: PostgreSQL at 127.0.0.1:1 is unreachable")

    def test_unreachable_redis_is_named(self):
        """A daemon whose Redis is not there exits with one line that names it."""
        return self.check_refused("--database", postgres_database(self),
                                  "--redis", "redis://127.0.0.1:1/0",
                                  expected="securechat: redis at redis://127.0.0.1:1/0 is unreachable")
