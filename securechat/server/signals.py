# -*- test-case-name: tests.test_server_signals -*-
"""SIGHUP means "reload": new TLS material (and, later, the log level).

The handler only schedules the work on the reactor thread; it never runs
reload code inside a signal handler, and it never stops the daemon.
"""

import signal

from twisted.application import service
from twisted.logger import Logger

log = Logger()


class ReloadOnHangup(service.Service):
    """Calls each reloader, in order, whenever the process receives SIGHUP."""

    def __init__(self, reactor, reloaders):
        self._reactor = reactor
        self._reloaders = list(reloaders)
        self._previous = None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._on_signal)

    def stopService(self) -> None:  # noqa: N802
        signal.signal(signal.SIGHUP, self._previous or signal.SIG_DFL)
        return super().stopService()

    def _on_signal(self, signum, frame) -> None:
        self._reactor.callFromThread(self.reload)

    def reload(self) -> None:
        log.info("SIGHUP: reloading")
        for reloader in self._reloaders:
            try:
                reloader()
            except Exception:
                log.failure("reload step {step!r} failed; the daemon keeps running",
                            step=reloader)
