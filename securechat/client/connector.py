# -*- test-case-name: tests.test_client_connector -*-
"""Keeping a session connected: TLS with the chosen trust, and reconnection
with exponential backoff and jitter (Twisted's ClientService).

A refusal that retrying cannot fix (the certificate is not the pinned one,
the login is refused) stops the retries and says why, once.
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


class _RecordingEndpoint:
    """Remembers why the last connection attempt failed, for the user."""

    def __init__(self, endpoint):
        self._endpoint = endpoint
        self.last_failure = ""

    def connect(self, factory):
        d = self._endpoint.connect(factory)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure):
        self.last_failure = failure.getErrorMessage()
        return failure


class Connector:
    def __init__(self, reactor, session, host: str, port: int, trust):
        self.session = session
        self.trust = trust
        self._reactor = reactor
        self._backoff = backoffPolicy(RECONNECT_INITIAL_DELAY, RECONNECT_MAX_DELAY,
                                      RECONNECT_FACTOR, jitter=random.random)
        self._endpoint = _RecordingEndpoint(
            wrapClientTLS(trust, HostnameEndpoint(reactor, host, port, timeout=15))
        )
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
        delay = self._backoff(attempt)
        self.session.emit("reconnecting", seconds=round(delay, 1), attempt=attempt,
                          reason=self._endpoint.last_failure or "the connection was lost")
        return delay

    def _on_event(self, event) -> None:
        if event.kind == "fatal":
            self._reactor.callLater(0, self.stop)
        elif event.kind == "disconnected" and self.trust.refusal and not self.stopped:
            self.session.emit("fatal", code="UNTRUSTED_SERVER", message=self.trust.refusal)
