# -*- test-case-name: tests.test_server_signals -*-
"""SIGHUP means "reload": new TLS material (and, later, the log level).
SIGTERM means "stop cleanly and exit 0".

The handlers only schedule work on the reactor thread; they never run
reload or shutdown code inside a signal handler, and SIGHUP never stops
the daemon.
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


class ExitZeroOnTerm(service.Service):
    """SIGTERM stops the reactor (so every service stops cleanly: commits
    finish, the database closes) and the process then exits 0.

    twistd's own handler re-raises SIGTERM once shut down, so the process
    dies by the signal; operators and supervisors read that as a crash.
    Ours is installed once the reactor runs, replacing twistd's.
    """

    def __init__(self, reactor):
        self._reactor = reactor
        self._stopping = False

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._reactor.callWhenRunning(signal.signal, signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self._reactor.callFromThread(self._stop)

    def _stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.info("SIGTERM: shutting down")
        if self._reactor.running:
            self._reactor.stop()
