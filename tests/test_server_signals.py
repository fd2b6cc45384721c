"""Tests for securechat.server.signals."""

import signal

from twisted.internet.error import ReactorNotRunning
from twisted.trial.unittest import SynchronousTestCase

from securechat.server.signals import ExitZeroOnTerm, ReloadOnHangup


class ImmediateReactor:
    """Runs callFromThread work at once, as the reactor would on its next turn."""

    running = True
    stopped = False

    def callFromThread(self, f, *args):  # noqa: N802
        f(*args)

    callWhenRunning = callFromThread

    def stop(self):
        if self.stopped:
            raise ReactorNotRunning("Can't stop reactor that isn't running.")
        self.stopped = True


class ReloadOnHangupTests(SynchronousTestCase):
    def test_sighup_runs_reloaders_in_order(self):
        """SIGHUP runs every reloader, even after one of them fails."""
        calls = []

        def broken():
            calls.append("broken")
            raise OSError("disk gone")

        service = ReloadOnHangup(ImmediateReactor(), [broken, lambda: calls.append("tls")])
        service.startService()
        self.addCleanup(service.stopService)
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        self.assertEqual(calls, ["broken", "tls"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_handler_restored_on_stop(self):
        """Stopping the service puts back the previous SIGHUP handler."""
        previous = signal.getsignal(signal.SIGHUP)
        service = ReloadOnHangup(ImmediateReactor(), [])
        service.startService()
        self.assertNotEqual(signal.getsignal(signal.SIGHUP), previous)
        service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)


class ExitZeroOnTermTests(SynchronousTestCase):
    def test_sigterm_stops_the_reactor_without_re_raising(self):
        """Once running, SIGTERM is ours: it stops the reactor (a clean shutdown) and
        leaves no signal for twistd to re-raise, so the exit status is 0."""
        previous = signal.getsignal(signal.SIGTERM)
        self.addCleanup(signal.signal, signal.SIGTERM, previous)
        reactor = ImmediateReactor()
        ExitZeroOnTerm(reactor).startService()
        handler = signal.getsignal(signal.SIGTERM)
        self.assertNotEqual(handler, previous)
        handler(signal.SIGTERM, None)
        self.assertTrue(reactor.stopped)
        self.assertFalse(hasattr(reactor, "_exitSignal"))

    def test_second_sigterm_while_stopping_is_quiet(self):
        """A second SIGTERM during shutdown (a supervisor and a terminal both
        sending one) changes nothing and raises nothing."""
        previous = signal.getsignal(signal.SIGTERM)
        self.addCleanup(signal.signal, signal.SIGTERM, previous)
        reactor = ImmediateReactor()
        ExitZeroOnTerm(reactor).startService()
        handler = signal.getsignal(signal.SIGTERM)
        handler(signal.SIGTERM, None)
        handler(signal.SIGTERM, None)
        self.assertTrue(reactor.stopped)
