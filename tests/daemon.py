"""A real ``twistd securechat`` in a subprocess, for end-to-end tests.

It runs from this checkout (the plugin and package are found on
PYTHONPATH), listens on 127.0.0.1 only, and is told when to die.
"""

import os
import re
import socket
import sys

from twisted.internet import defer, protocol, reactor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LISTENING = re.compile(rb"securechat listening on 127\.0\.0\.1:(\d+)")
_FINGERPRINT = re.compile(rb"sha256 Fingerprint=([0-9A-F:]{95})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


class _Watcher(protocol.ProcessProtocol):
    def __init__(self):
        self.output = b""
        self.ready = defer.Deferred()
        self.ended = defer.Deferred()

    def outReceived(self, data):  # noqa: N802
        self.output += data
        match = _LISTENING.search(self.output)
        if match and _FINGERPRINT.search(self.output) and not self.ready.called:
            self.ready.callback(int(match.group(1)))

    errReceived = outReceived

    def processEnded(self, reason):  # noqa: N802
        if not self.ready.called:
            self.ready.errback(RuntimeError("daemon exited early:\n" + self.output.decode()))
        self.ended.callback((reason.value.exitCode, reason.value.signal))


class Daemon:
    """One daemon process; start() and kill() may be repeated on the same data dir."""

    def __init__(self, data_dir: str, port: int | None = None, *extra: str):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra = extra
        self.watcher = None

    @property
    def fingerprint(self) -> str:
        return _FINGERPRINT.search(self.watcher.output).group(1).decode()

    @property
    def log(self) -> str:
        return self.watcher.output.decode("utf-8", "replace")

    def start(self) -> defer.Deferred:
        self.watcher = _Watcher()
        args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "--nodaemon", "--pidfile=", "securechat", "--interface", "127.0.0.1",
                "--port", str(self.port), "--data-dir", self.data_dir, *self.extra]
        self.process = reactor.spawnProcess(self.watcher, sys.executable, args,
                                            env=environment(), path=ROOT)
        return self.watcher.ready

    def signal(self, name: str) -> defer.Deferred:
        self.process.signalProcess(name)
        return self.watcher.ended

    def stop(self) -> defer.Deferred:
        if self.watcher is None or self.watcher.ended.called:
            return defer.succeed(None)
        return self.signal("TERM")
