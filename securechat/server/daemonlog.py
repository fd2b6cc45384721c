# -*- test-case-name: tests.test_daemonlog -*-
"""The daemon's log: text or JSON lines, at a level SIGHUP can change.

twistd builds its log observer before our service exists, from the name
given to its ``--logger`` option. Our Options set that name to
L{twistd_observer}, which builds the observer of the L{DaemonLog} they
configured, so the format and level from the config file apply from the
first line. What is logged is
chosen where it is logged: connection events with peer and nick, refusals
with their code; never message tokens, wraps or registration tokens.
"""

import datetime
import json
import sys

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    formatEvent,
    formatEventAsClassicLogText,
)
from twisted.python.logfile import LogFile

log = Logger()

# Event keys that are never copied into a JSON line, whatever a caller passes.
_NEVER_LOGGED = frozenset({"token", "wrap", "signature", "record", "password"})


def _json_line(event: dict) -> str:
    line = {
        "time": datetime.datetime.fromtimestamp(event.get("log_time", 0),
                                                datetime.timezone.utc).isoformat(),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _NEVER_LOGGED or key in line:
            continue
        if isinstance(value, (str, int, float, bool)) or value is None:
            line[key] = value
    failure = event.get("log_failure")
    if failure is not None:
        line["traceback"] = failure.getTraceback()
    return json.dumps(line, ensure_ascii=False) + "\n"


class DaemonLog:
    """The observer twistd installs, and the level SIGHUP may change."""

    def __init__(self, log_format: str, level: str, logfile: str | None = None,
                 read_level=None):
        """@param read_level: returns the level the config file now asks for, or
            raises an exception whose text says what is wrong with the file."""
        self.format = log_format
        self.logfile = logfile
        self.predicate = LogLevelFilterPredicate(LogLevel.levelWithName(level))
        self._read_level = read_level

    @property
    def level(self) -> str:
        return self.predicate.defaultLogLevel.name

    def set_level(self, level: str) -> None:
        self.predicate.defaultLogLevel = LogLevel.levelWithName(level)
        self.predicate.clearLogLevels()

    def reload(self) -> None:
        """SIGHUP: take the level from the config file again; keep it if the file is bad."""
        if self._read_level is None:
            return
        try:
            level = self._read_level()
        except Exception as error:
            log.error("log level not reloaded, still {current}: {error}", current=self.level,
                      error=str(error))
            return
        if level != self.level:
            self.set_level(level)
            # At warn, so that the change itself shows whatever the new level.
            log.warn("log level is now {current}", current=level)

    def _output(self):
        if not self.logfile or self.logfile == "-":
            return sys.stdout
        return LogFile.fromFullPath(self.logfile)

    def observer(self):
        """twistd's log observer factory (called once, with no arguments)."""
        formatter = _json_line if self.format == "json" else formatEventAsClassicLogText
        return FilteringLogObserver(FileLogObserver(self._output(), formatter), [self.predicate])


# The DaemonLog the securechat Options configured, for twistd's --logger hook,
# which accepts only an importable name.
_configured: DaemonLog | None = None


def install_for_twistd(twistd_options, daemon_log: DaemonLog) -> None:
    """Make twistd log through C{daemon_log}, unless the operator chose --logger."""
    global _configured
    if twistd_options.get("logger"):
        return
    _configured = daemon_log
    twistd_options["logger"] = f"{__name__}.twistd_observer"


def twistd_observer():
    return _configured.observer()
