"""Tests for securechat.server.daemonlog: text or JSON lines, and the level."""

import io
import json

from twisted.logger import LogLevel, Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from securechat.server.daemonlog import DaemonLog


class _Log(DaemonLog):
    """Writes to a string instead of stdout."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.out = io.StringIO()

    def _output(self):
        return self.out


def emit(observer, level=LogLevel.info, **fields):
    Logger(namespace="securechat.test", observer=observer).emit(level, **fields)


class DaemonLogTests(SynchronousTestCase):
    def test_json_lines(self):
        """JSON format writes one object per line with time, level, namespace, the
        formatted message and the event's plain fields."""
        log = _Log("json", "info")
        emit(log.observer(), format="{peer} logged in as {nick}", peer="10.0.0.1:5", nick="bob")
        [line] = log.out.getvalue().splitlines()
        record = json.loads(line)
        self.assertEqual(record["message"], "10.0.0.1:5 logged in as bob")
        self.assertEqual((record["level"], record["namespace"], record["nick"]),
                         ("info", "securechat.test", "bob"))
        self.assertIn("T", record["time"])

    def test_json_never_copies_secret_fields(self):
        """Fields named like tokens, wraps or signatures never reach a JSON line."""
        log = _Log("json", "info")
        emit(log.observer(), format="refused", token="s3cret", wrap="w", code="BAD_TOKEN")
        record = json.loads(log.out.getvalue())
        self.assertNotIn("s3cret", log.out.getvalue())
        self.assertEqual(record["code"], "BAD_TOKEN")

    def test_json_failure_has_traceback(self):
        """A logged failure carries its traceback in one JSON line."""
        log = _Log("json", "info")
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        emit(log.observer(), LogLevel.critical, format="boom", log_failure=failure)
        record = json.loads(log.out.getvalue())
        self.assertIn("ZeroDivisionError", record["traceback"])

    def test_text_format(self):
        """Text format is twistd's classic line."""
        log = _Log("text", "info")
        emit(log.observer(), format="hello {who}", who="world")
        self.assertIn("[securechat.test#info] hello world", log.out.getvalue())

    def test_level_filters_and_changes(self):
        """Lines below the level are dropped; set_level takes effect at once."""
        log = _Log("text", "warn")
        observer = log.observer()
        emit(observer, format="quiet")
        self.assertEqual(log.out.getvalue(), "")
        log.set_level("debug")
        emit(observer, LogLevel.debug, format="loud")
        self.assertIn("loud", log.out.getvalue())

    def test_reload_reads_the_level_again(self):
        """reload() applies the level the config file now names."""
        levels = ["error"]
        log = _Log("text", "info", read_level=lambda: levels[0])
        log.reload()
        self.assertEqual(log.level, "error")

    def test_reload_with_a_broken_file_keeps_the_level(self):
        """A config file that no longer parses leaves the level alone and says why."""
        def broken():
            raise ValueError("bad.toml: not valid TOML")

        log = _Log("text", "info", read_level=broken)
        log.reload()
        self.assertEqual(log.level, "info")
