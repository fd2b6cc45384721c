# -*- test-case-name: tests.test_redisbus -*-
"""The channel between daemons: short notices over Redis pub/sub.

Redis pub/sub is at-most-once: whatever is published while a daemon is
cut off is lost to it. So the bus drops what it cannot send at once instead
of queueing it, and says each time its subscription is back, for the caller
to read what it missed from the database. txredisapi speaks Redis from
within the reactor, so nothing here ever blocks it.

txredisapi imports the global reactor when it is imported: import this
module only where a bus is built, once twistd has chosen its reactor.
"""

import os
import socket
from urllib.parse import unquote, urlsplit

import txredisapi
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from securechat.constants import (
    REDIS_RECONNECT_FIRST_DELAY as RECONNECT_FIRST_DELAY,
    REDIS_RECONNECT_MAX_DELAY as RECONNECT_MAX_DELAY,
    REDIS_TIMEOUT_SECONDS as TIMEOUT,
)

URL_FORM = "redis://[[user]:password@]host[:port][/db]"
DEFAULT_PORT = 6379
#: A random tag, one per bus, leads every notice so that a bus can skip its own.
SENDER_BYTES = 8


class BusUnavailable(Exception):
    """Redis could not be reached at start; the message is one line naming the URL."""


def _shown(url: str) -> str:
    """The URL as it may be printed: a password in it is masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def _reason(failure) -> str:
    error = failure.value
    if isinstance(error, ConnectError) and isinstance(error.osError, int):
        return os.strerror(error.osError)
    return failure.getErrorMessage().rstrip(".")


def _parse(url: str) -> tuple:
    """@return: host, port, user and password; @raise ValueError: for anything else than L{URL_FORM}."""
    parts = urlsplit(url)
    db = parts.path.lstrip("/")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        port = None
    if parts.scheme != "redis" or not parts.hostname or port is None or (db and not db.isdigit()):
        raise ValueError(f"unsupported Redis URL {_shown(url)!r}: expected {URL_FORM}")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return parts.hostname, port, username, password


def _command(*words: bytes) -> bytes:
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


def check_reachable(url: str) -> None:
    """Connect, authenticate if asked, and PING once, blocking: for the daemon's
    start, before it serves anyone, so that a wrong URL is one line at once.

    @raise BusUnavailable: naming the URL (password masked) and why."""
    try:
        host, port, username, password = _parse(url)
    except ValueError as error:
        raise BusUnavailable(str(error)) from None
    request = b""
    if password is not None:
        request += _command(b"AUTH", *([username.encode()] if username else []), password.encode())
    request += _command(b"PING")
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as conn:
            conn.sendall(request)
            replies = conn.makefile("rb")
            answers = [replies.readline().strip() for _ in range(request.count(b"*"))]
    except OSError as error:
        raise BusUnavailable(f"redis at {_shown(url)} is unreachable: "
                             f"{error.strerror or error}") from None
    refused = [a for a in answers if not a.startswith((b"+OK", b"+PONG"))]
    if refused:
        raise BusUnavailable(f"redis at {_shown(url)} refused us: "
                             f"{refused[0].decode(errors='replace').lstrip('-')}")


@implementer(IStreamClientEndpoint)
class _Reporting:
    """An endpoint that tells of each failed connection attempt: with
    reconnection on, txredisapi retries without a word, and start() wants the
    first refusal rather than its own deadline."""

    def __init__(self, endpoint, shown, failed):
        self._endpoint, self._shown, self._failed = endpoint, shown, failed

    def __repr__(self):
        # ClientService names the endpoint when it logs a retry.
        return self._shown

    def connect(self, factory):
        return self._endpoint.connect(factory).addErrback(self._report)

    def _report(self, failure):
        self._failed(failure)
        return failure


class _Publisher(txredisapi.RedisProtocol):
    """Authenticates itself: given the password, txredisapi would stop
    reconnecting for good when AUTH fails in any way, even by a connection
    lost before the answer. Without it the connection is ready at once;
    AUTH still goes first on the wire."""

    def connectionMade(self):
        super().connectionMade()
        self.factory.bus._authenticate(self)


class _Subscriber(txredisapi.SubscriberProtocol):
    """Authenticates and subscribes on every connection; hands each message to the bus."""

    def connectionMade(self):
        super().connectionMade()
        self.factory.bus._authenticate(self)
        self.factory.bus._subscribe(self)

    def messageReceived(self, pattern, channel, message):
        self.factory.bus._received(message)


class RedisBus:
    """One daemon's connection to the cross-daemon channel.

    Two connections: pub/sub takes a subscribed connection for itself. The
    database number in the URL is accepted but unused: channels span all of
    a server's databases, so C{channel} is what separates deployments.
    C{reactor} connects and times start(); txredisapi's own timers always
    use the global reactor.
    """

    _log = Logger()

    def __init__(self, url: str, channel: str, on_notice, on_connected, reactor=None):
        self._host, self._port, self._username, self._password = _parse(url)
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._shown = _shown(url)
        self._channel = channel
        self._on_notice, self._on_connected = on_notice, on_connected
        self._sender = os.urandom(SENDER_BYTES)
        self._publisher = self._subscriber = self._live = None
        self._starting = self._deadline = self._why = None
        self._stopped = False
        #: Notices Redis did not confirm: dropped while it was unreachable, or
        #: lost with a connection before their reply.
        self.dropped = 0

    @property
    def connected(self) -> bool:
        """Whether the subscription is up."""
        return self._live is not None

    def start(self) -> Deferred:
        """Fires once both connections are up, after C{on_connected(True)};
        fails with L{BusUnavailable} at the first refused attempt, or after
        L{TIMEOUT}."""
        self._starting = Deferred()
        self._deadline = self._reactor.callLater(TIMEOUT, self._give_up)
        self._publisher, self._subscriber = self._connect(_Publisher), self._connect(_Subscriber)
        return self._starting

    def publish(self, data: bytes) -> None:
        """Send a notice to the other daemons, now or never."""
        pool = self._publisher.pool if self._publisher is not None else ()
        if not pool:
            self.dropped += 1
            return
        pool[0].publish(self._channel, self._sender + data).addErrback(self._unconfirmed)

    def stop(self) -> Deferred:
        """Close both connections for good; fires once they are closed."""
        self._stopped = True
        self._live = None
        if self._starting is not None:
            self._deadline.cancel()
            starting, self._starting = self._starting, None
            starting.errback(CancelledError("the bus was stopped while starting"))
        factories = [f for f in (self._publisher, self._subscriber) if f is not None]
        return gatherResults([f.disconnect() for f in factories],
                             consumeErrors=True).addCallback(lambda _: None)

    def _connect(self, protocol):
        # No password nor database for txredisapi: see _Publisher. SUBSCRIBE
        # is the one command the reply timeout leaves alone.
        factory = txredisapi.RedisFactory(self._shown, None, 1, isLazy=True, charset=None,
                                          convertNumbers=False, replyTimeout=TIMEOUT)
        factory.protocol = protocol
        factory.bus = self
        factory.initialDelay, factory.maxDelay = RECONNECT_FIRST_DELAY, RECONNECT_MAX_DELAY
        # Fires once, when the first connection joins the factory's pool.
        factory.deferred.addCallback(lambda _: self._check_started())
        endpoint = HostnameEndpoint(self._reactor, self._host, self._port, timeout=TIMEOUT)
        factory.startConnecting(_Reporting(endpoint, self._shown, self._start_failed))
        return factory

    def _authenticate(self, protocol):
        if self._password is not None:
            protocol.auth(self._password, self._username).addErrback(self._refused, protocol)

    def _refused(self, failure, protocol):
        if self._starting is not None:
            self._start_failed(failure)
        elif not failure.check(txredisapi.ConnectionError):
            self._log.error("redis at {url} refused AUTH: {reason}", url=self._shown,
                            reason=_reason(failure))
            protocol.transport.loseConnection()

    def _subscribe(self, protocol):
        protocol.whenDisconnected().addCallback(self._lost)
        protocol.subscribe(self._channel).addCallbacks(
            lambda _: self._subscribed(protocol), self._start_failed)

    def _subscribed(self, protocol):
        if self._stopped:
            return
        self._live = protocol
        if self._starting is not None:
            self._check_started()
        else:
            self._call(self._on_connected, False)

    def _lost(self, protocol):
        if self._live is protocol:
            self._live = None

    def _check_started(self):
        if (self._starting is None or self._why is not None or self._live is None
                or not self._publisher.pool):
            return
        self._deadline.cancel()
        starting, self._starting = self._starting, None
        self._call(self._on_connected, True)
        starting.callback(None)

    def _start_failed(self, failure):
        """Give up starting, for the first reason given, at once but out of
        the caller's stack (it may be in the middle of connecting); once
        started, the connections retry alone."""
        if self._starting is not None and self._why is None and not failure.check(CancelledError):
            self._why = _reason(failure)
            self._deadline.reset(0)

    def _give_up(self):
        starting, self._starting = self._starting, None
        why = " ".join((self._why or f"no answer within {TIMEOUT:g} s").split())
        error = BusUnavailable(f"redis at {self._shown} is unreachable: {why}")
        self.stop().addCallback(lambda _: starting.errback(error))

    def _received(self, message: bytes):
        if not self._stopped and message[:SENDER_BYTES] != self._sender:
            self._call(self._on_notice, message[SENDER_BYTES:])

    def _unconfirmed(self, failure):
        self.dropped += 1

    def _call(self, callback, *args):
        # An exception must not reach txredisapi: it would drop the connection.
        try:
            callback(*args)
        except Exception:
            self._log.failure("the Redis bus's {callback!r} failed", callback=callback)
