"""Tests for securechat.server.redisbus against a real, private redis-server."""

import time

from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from securechat.server import redisbus
from securechat.server.redisbus import BusUnavailable, RedisBus
from tests.daemon import free_port
from tests.services import PrivateRedis

CHANNEL = "securechat-test"
POLL_SECONDS = 0.01
WAIT_SECONDS = 10
HOSTNAME_ENDPOINT_DELAY = 0.3


class Recorder:
    """A bus's callbacks, kept, with Deferreds for what the test waits for."""

    def __init__(self):
        self.notices, self.connects = [], []
        self._waiting = []

    def on_notice(self, data):
        self.notices.append(data)
        self._check()

    def on_connected(self, first):
        self.connects.append(first)
        self._check()

    def until(self, condition) -> defer.Deferred:
        d = defer.Deferred()
        self._waiting.append((condition, d))
        self._check()
        return d.addTimeout(WAIT_SECONDS, reactor)

    def _check(self):
        for waiter in list(self._waiting):
            condition, d = waiter
            if condition():
                self._waiting.remove(waiter)
                d.callback(None)


@defer.inlineCallbacks
def _poll(condition):
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {condition.__doc__}")
        yield task.deferLater(reactor, POLL_SECONDS, lambda: None)


class StartTests(TestCase):
    """What start() and the constructor refuse: no Redis needed."""

    @defer.inlineCallbacks
    def test_unreachable_redis_fails_start_naming_the_url(self):
        """start() against a port nobody listens on fails at once with one line naming the URL and the cause."""
        url = f"redis://127.0.0.1:{free_port()}/0"
        began = time.monotonic()
        error = yield self.assertFailure(RedisBus(url, CHANNEL, None, None).start(), BusUnavailable)
        self.assertLess(time.monotonic() - began, redisbus.TIMEOUT)
        self.assertEqual(str(error), f"redis at {url} is unreachable: Connection refused")

    @defer.inlineCallbacks
    def test_unreachable_message_masks_the_password(self):
        """The start error names the URL without the password in it."""
        url = f"redis://:s3cret@127.0.0.1:{free_port()}"
        error = yield self.assertFailure(RedisBus(url, CHANNEL, None, None).start(), BusUnavailable)
        self.assertIn(f"redis://:***@127.0.0.1:{url.rpartition(':')[2]} is unreachable", str(error))
        self.assertNotIn("s3cret", str(error))

    @defer.inlineCallbacks
    def test_silent_server_fails_start_after_the_deadline(self):
        """start() against a server that accepts but never answers fails once the deadline passes."""
        self.patch(redisbus, "TIMEOUT", 0.3)
        listening = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        url = f"redis://127.0.0.1:{listening.getHost().port}"
        error = yield self.assertFailure(RedisBus(url, CHANNEL, None, None).start(), BusUnavailable)
        self.assertEqual(str(error), f"redis at {url} is unreachable: no answer within 0.3 s")

    def test_other_schemes_are_refused(self):
        """A URL that is not redis://host[:port][/db] is refused with the form it should take."""
        for url in ("rediss://:s3cret@127.0.0.1", "http://127.0.0.1:6379", "redis:///0",
                    "redis://127.0.0.1/x", "redis://127.0.0.1:port"):
            with self.assertRaises(ValueError) as raised:
                RedisBus(url, CHANNEL, None, None)
            self.assertIn(redisbus.URL_FORM, str(raised.exception))
            self.assertNotIn("s3cret", str(raised.exception))


class RedisBusTests(TestCase):
    def setUp(self):
        self.redis = PrivateRedis()
        self.redis.start()
        self.addCleanup(self.redis.stop)

    @defer.inlineCallbacks
    def _bus(self, url=None):
        recorder = Recorder()
        bus = RedisBus(url or self.redis.url, CHANNEL, recorder.on_notice, recorder.on_connected)
        yield bus.start()
        self.addCleanup(bus.stop)
        return bus, recorder

    @defer.inlineCallbacks
    def _publish_until_received(self, bus, recorder, data):
        # After a restart the publishing connection may come back after the
        # subscription: what it is handed before then is dropped, by design.
        sending = task.LoopingCall(bus.publish, data)
        sending.start(0.05)
        try:
            yield recorder.until(lambda: data in recorder.notices)
        finally:
            sending.stop()

    @defer.inlineCallbacks
    def test_notices_cross_in_order_but_not_back(self):
        """Two buses get each other's notices in the order sent, and never their own."""
        (a, got_a), (b, got_b) = (yield self._bus()), (yield self._bus())
        self.assertEqual((got_a.connects, got_b.connects, a.connected), ([True], [True], True))
        from_a = [b"a%d" % n for n in range(100)]
        for notice in from_a:
            a.publish(notice)
        yield got_b.until(lambda: len(got_b.notices) == len(from_a))
        # b answers only now; Redis delivers in order, so any of a's own
        # notices sent back to it would have reached it before these.
        for notice in (b"b1", b"b2"):
            b.publish(notice)
        yield got_a.until(lambda: len(got_a.notices) == 2)
        self.assertEqual((got_b.notices, got_a.notices), (from_a, [b"b1", b"b2"]))
        self.assertEqual((a.dropped, b.dropped), (0, 0))

    @defer.inlineCallbacks
    def test_payloads_arrive_byte_for_byte(self):
        """Payloads reach the other bus as the same bytes: not decoded, not taken for numbers, not split on CRLF."""
        (a, _), (b, got) = (yield self._bus()), (yield self._bus())
        # The worst case for txredisapi's conversions: tags that are digits,
        # so that a tagged payload can pass for a number or for UTF-8 text.
        a._sender, b._sender = b"0" * redisbus.SENDER_BYTES, b"1" * redisbus.SENDER_BYTES
        payloads = [bytes(range(256)), b"\xff\xfe not UTF-8", "caf\u00e9".encode(), b"12345",
                    b"1.5", b"", b"$3\r\nabc\r\n*1\r\n", b'{"room": "#lab", "seq": 7}']
        for payload in payloads:
            a.publish(payload)
        yield got.until(lambda: len(got.notices) == len(payloads))
        self.assertEqual(got.notices, payloads)
        self.assertEqual({type(notice) for notice in got.notices}, {bytes})

    @defer.inlineCallbacks
    def test_restarted_redis_reconnects_both_buses(self):
        """After Redis is killed and started again, both buses resubscribe, say so with on_connected(False), and notices flow again."""
        (a, got_a), (b, got_b) = (yield self._bus()), (yield self._bus())
        self.redis.restart()
        began = time.monotonic()
        yield got_a.until(lambda: got_a.connects == [True, False])
        yield got_b.until(lambda: got_b.connects == [True, False])
        self.assertLess(time.monotonic() - began, redisbus.RECONNECT_MAX_DELAY + HOSTNAME_ENDPOINT_DELAY)
        self.assertTrue(a.connected and b.connected)
        yield self._publish_until_received(a, got_b, b"to b")
        yield self._publish_until_received(b, got_a, b"to a")

    @defer.inlineCallbacks
    def test_publish_while_down_is_dropped_and_counted(self):
        """With Redis down, publish() returns at once without raising, counts the notice dropped, and never sends it later."""
        (a, _), (b, got_b) = (yield self._bus()), (yield self._bus())
        self.redis.stop()

        def down():
            """disconnected"""
            return not (a.connected or b.connected)
        yield _poll(down)
        began = time.monotonic()
        for n in range(3):
            self.assertIsNone(a.publish(b"lost %d" % n))
        self.assertLess(time.monotonic() - began, 0.1)

        def counted():
            """all dropped"""
            return a.dropped == 3
        yield _poll(counted)
        self.redis.start()
        yield got_b.until(lambda: got_b.connects == [True, False])
        yield self._publish_until_received(a, got_b, b"after")
        self.assertEqual(set(got_b.notices), {b"after"})

    @defer.inlineCallbacks
    def test_password_is_sent_and_a_wrong_one_fails_start(self):
        """The URL's user and password authenticate both connections; refused ones fail start() with Redis's reason."""
        self.assertEqual(self.redis.command("ACL", "SETUSER", "bus", "on", ">s3cret", "+@all", "&*"), b"+OK")
        self.assertEqual(self.redis.command("CONFIG", "SET", "requirepass", "p%w"), b"+OK")
        port = self.redis.port
        a, _ = yield self._bus(f"redis://:p%25w@127.0.0.1:{port}")
        _, got = yield self._bus(f"redis://bus:s3cret@127.0.0.1:{port}/0")
        a.publish(b"authenticated")
        yield got.until(lambda: got.notices == [b"authenticated"])
        url = f"redis://bus:wrong@127.0.0.1:{port}"
        error = yield self.assertFailure(RedisBus(url, CHANNEL, None, None).start(), BusUnavailable)
        self.assertIn(f"redis at redis://bus:***@127.0.0.1:{port} is unreachable: ", str(error))
        self.assertIn("WRONGPASS", str(error))

    @defer.inlineCallbacks
    def test_connection_lost_during_auth_is_retried(self):
        """A connection lost before AUTH is answered is retried like any other (txredisapi alone would stop for good)."""
        self.assertEqual(self.redis.command("CONFIG", "SET", "requirepass", "pw"), b"+OK")
        _, got = yield self._bus(f"redis://:pw@127.0.0.1:{self.redis.port}")
        self.redis.stop()
        hung_up = []

        class HangUp(Protocol):
            def connectionMade(self):
                hung_up.append(self)
                self.transport.loseConnection()
        impostor = reactor.listenTCP(self.redis.port, Factory.forProtocol(HangUp), interface="127.0.0.1")

        def both_hung_up():
            """both connections hung up on"""
            return len(hung_up) >= 2
        yield _poll(both_hung_up)
        yield impostor.stopListening()
        self.redis.start("--requirepass", "pw")
        yield got.until(lambda: got.connects == [True, False])

    @defer.inlineCallbacks
    def test_refused_auth_after_start_is_logged_and_retried(self):
        """When a restarted Redis refuses the password, the bus logs it and keeps retrying until it is accepted."""
        self.assertEqual(self.redis.command("CONFIG", "SET", "requirepass", "pw"), b"+OK")
        _, got = yield self._bus(f"redis://:pw@127.0.0.1:{self.redis.port}")
        refusals = []

        def observe(event):
            if "refused AUTH" in event.get("log_format", ""):
                refusals.append(formatEvent(event))
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.redis.restart("--requirepass", "changed")

        def retried():
            """refused twice on each connection"""
            return len(refusals) >= 4
        yield _poll(retried)
        self.assertIn(f"redis at redis://:***@127.0.0.1:{self.redis.port} refused AUTH: WRONGPASS",
                      refusals[0])
        self.assertEqual(got.connects, [True])
        self.redis.restart("--requirepass", "pw")
        yield got.until(lambda: got.connects == [True, False])

    @defer.inlineCallbacks
    def test_failing_callback_does_not_stop_delivery(self):
        """An exception in on_notice is logged, and the next notice is still delivered."""
        a, _ = yield self._bus()
        got = Recorder()

        def on_notice(data):
            got.on_notice(data)
            if data == b"bad":
                raise ZeroDivisionError(data)
        b = RedisBus(self.redis.url, CHANNEL, on_notice, got.on_connected)
        yield b.start()
        self.addCleanup(b.stop)
        a.publish(b"bad")
        a.publish(b"good")
        yield got.until(lambda: got.notices == [b"bad", b"good"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertTrue(b.connected)

    @defer.inlineCallbacks
    def test_stop_while_reconnecting_leaves_nothing_pending(self):
        """stop() while Redis is down closes everything and cancels the pending retries (trial fails on a dirty reactor)."""
        recorder = Recorder()
        bus = RedisBus(self.redis.url, CHANNEL, recorder.on_notice, recorder.on_connected)
        yield bus.start()
        self.redis.stop()

        def down():
            """disconnected"""
            return not bus.connected
        yield _poll(down)
        yield bus.stop()
        self.assertFalse(bus.connected)
        bus.publish(b"after stop")
        self.assertEqual(bus.dropped, 1)

    @defer.inlineCallbacks
    def test_long_outage_still_reconnects_within_the_max_delay(self):
        """However long Redis was down, the bus is back soon after it returns: the retry delay stops growing at RECONNECT_MAX_DELAY."""
        # Scaled down: the delays grow 0.05, 0.14, 0.37, 1.0, 2.7 s uncapped,
        # so after this outage an uncapped bus would wait about a second more.
        self.patch(redisbus, "RECONNECT_FIRST_DELAY", 0.05)
        self.patch(redisbus, "RECONNECT_MAX_DELAY", 0.1)
        _, got = yield self._bus()
        self.redis.stop()
        yield task.deferLater(reactor, 1.5, lambda: None)
        self.redis.start()
        began = time.monotonic()
        yield got.until(lambda: got.connects == [True, False])
        # Twisted's HostnameEndpoint reports a refused attempt only after its
        # 0.3 s attempt delay: one may be under way as Redis returns.
        self.assertLess(time.monotonic() - began, 0.1 + HOSTNAME_ENDPOINT_DELAY + 0.2)


class ReachableTests(TestCase):
    def test_running_redis_passes_the_start_check(self):
        """The daemon's blocking start check passes against a running Redis, with or without a password."""
        redis = PrivateRedis()
        redis.start("--requirepass", "s3cret")
        self.addCleanup(redis.stop)
        redisbus.check_reachable(f"redis://:s3cret@127.0.0.1:{redis.port}/0")
        error = self.assertRaises(BusUnavailable, redisbus.check_reachable,
                                  f"redis://:wrong@127.0.0.1:{redis.port}/0")
        self.assertIn(f"redis at redis://:***@127.0.0.1:{redis.port}/0 refused us", str(error))

    def test_unreachable_redis_is_one_line_naming_it(self):
        """Nothing listening: one line naming the URL and the reason."""
        url = f"redis://127.0.0.1:{free_port()}/0"
        error = self.assertRaises(BusUnavailable, redisbus.check_reachable, url)
        self.assertEqual(str(error), f"redis at {url} is unreachable: Connection refused")
