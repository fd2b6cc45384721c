# -*- test-case-name: tests.test_client_connector -*-
"""Keeping a session connected: TLS with the chosen trust, and reconnection
with exponential backoff and jitter (Twisted's ClientService).

A connection that is cut before it has worked for a while counts as a
failure like one that never connected: the same failure repeated backs off
further each time, and each retry says why, so that a server that drops a
client right after its login cannot make it reconnect every second for
ever. A refusal that retrying cannot fix (the certificate is not the pinned
one, the login is refused) stops the retries and says why, once.
"""

import random

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory

from securechat.client.protocol import ClientProtocol

# Backoff between reconnection attempts: 1 s at first, growing by half each
# time, never above a minute; jitter spreads clients after a server restart.
RECONNECT_INITIAL_DELAY = 1.0
RECONNECT_FACTOR = 1.5
RECONNECT_MAX_DELAY = 60.0

# A connection that stayed up this long after catching up was working: the
# next loss starts the backoff afresh. One lost sooner is another failure.
STABLE_CONNECTION_SECONDS = 30.0


class ReconnectPolicy:
    """Counts failures in a row and says how long to wait, and why. Pure:
    the time is passed in, the delays come from C{backoff(attempt)}."""

    def __init__(self, backoff):
        self._backoff = backoff
        self.failures = 0
        self._synced_at: float | None = None
        self._last_words = ""
        self.reason = ""

    def synced(self, now: float) -> None:
        self._synced_at = now

    def server_said(self, code: str, message: str) -> None:
        """An error the server sent unprompted: often why it is about to close."""
        self._last_words = f"{code}: {message}"

    def lost(self, now: float, why: str) -> None:
        """The connection closed (or never opened) for C{why}."""
        worked = self._synced_at is not None and now - self._synced_at >= STABLE_CONNECTION_SECONDS
        self.failures = 0 if worked else self.failures + 1
        if self._synced_at is None and not worked and why:
            why = f"{why} (before the client had caught up)"
        self.reason = why + (f"; the server said {self._last_words}" if self._last_words else "")
        self._synced_at, self._last_words = None, ""

    def delay(self, attempt: int) -> tuple[float, int]:
        """The wait before the next try, and which try in a row it is."""
        attempt = max(attempt, self.failures)
        return self._backoff(attempt), attempt


class _RecordingEndpoint:
    """Remembers why the last connection attempt failed, for the user."""

    def __init__(self, endpoint, policy: ReconnectPolicy, clock):
        self._endpoint = endpoint
        self._policy = policy
        self._clock = clock

    def connect(self, factory):
        d = self._endpoint.connect(factory)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure):
        self._policy.lost(self._clock.seconds(), failure.getErrorMessage())
        return failure


class Connector:
    def __init__(self, reactor, session, host: str, port: int, trust):
        self.session = session
        self.trust = trust
        self._reactor = reactor
        self.policy = ReconnectPolicy(backoffPolicy(RECONNECT_INITIAL_DELAY, RECONNECT_MAX_DELAY,
                                                    RECONNECT_FACTOR, jitter=random.random))
        self._endpoint = _RecordingEndpoint(
            wrapClientTLS(trust, HostnameEndpoint(reactor, host, port, timeout=15)),
            self.policy, reactor)
        factory = Factory.forProtocol(lambda: ClientProtocol(session, reactor))
        self.service = ClientService(self._endpoint, factory, retryPolicy=self._retry_delay,
                                     clock=reactor)
        self.stopped = False
        session.subscribe(self._on_event)

    def start(self) -> None:
        self.session.emit("connecting")
        self.service.startService()

    def stop(self):
        if self.stopped:
            return None
        self.stopped = True
        return self.service.stopService()

    def _retry_delay(self, attempt: int) -> float:
        if self.trust.refusal:
            self.session.emit("fatal", code="UNTRUSTED_SERVER", message=self.trust.refusal)
            return RECONNECT_MAX_DELAY
        delay, attempt = self.policy.delay(attempt)
        self.session.emit("reconnecting", seconds=round(delay, 1), attempt=attempt,
                          reason=self.policy.reason or "the connection was lost")
        return delay

    def _on_event(self, event) -> None:
        if event.kind == "fatal":
            self._reactor.callLater(0, self.stop)
        elif event.kind == "synced":
            self.policy.synced(self._reactor.seconds())
        elif event.kind == "error" and event.fields.get("unprompted"):
            self.policy.server_said(event.fields["code"], event.fields["message"])
        elif event.kind == "disconnected":
            self.policy.lost(self._reactor.seconds(), event.fields.get("reason", ""))
            if self.trust.refusal and not self.stopped:
                self.session.emit("fatal", code="UNTRUSTED_SERVER", message=self.trust.refusal)
