# -*- test-case-name: tests.test_client_batch -*-
"""``securechat-client --batch``: commands from standard input, one JSON
event per line on standard output. For notifications, bots and tests.

Lines run one after another; a plain line is a message to the current room
and does not wait for its acknowledgement (the outbox paces it). At the end
of input the runner waits until every message is acknowledged, lingers if
asked, and exits 0, or 1 if any command or message failed.
"""

import json

from twisted.internet import defer, task
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger

from securechat.client.commands import SHARED_COMMANDS
from securechat.wire import WireError

log = Logger()

EXIT_OK, EXIT_FAILED, EXIT_FATAL = 0, 1, 2


class BatchRunner:
    def __init__(self, session, clock, write, linger: float = 0.0,
                 connect_timeout: float = 30.0):
        self.session = session
        self.clock = clock
        self._write = write
        self.linger = linger
        self.connect_timeout = connect_timeout
        self._offline_call = None
        self.room = None
        self.failures = 0
        self.done = defer.Deferred()
        self._lines: list[str] = []
        self._eof = False
        self._busy = False
        self._looping = False
        self._started = False
        session.subscribe(self._print_event)

    # -- output ----------------------------------------------------------------

    def emit(self, kind: str, **fields) -> None:
        self._write(json.dumps({"event": kind, **fields}, ensure_ascii=False))

    def _print_event(self, event) -> None:
        self._write(event.to_json())
        if event.kind == "fatal" and not self.done.called:
            self.done.callback(EXIT_FATAL)
        elif event.kind in ("connecting", "disconnected") and self._offline_call is None:
            self._offline_call = self.clock.callLater(self.connect_timeout, self._offline_too_long)
        elif event.kind == "synced" and self._offline_call is not None:
            self._offline_call.cancel()
            self._offline_call = None

    def _offline_too_long(self) -> None:
        """A script must not hang on a server that is down: give up, and say so."""
        self._offline_call = None
        self.session.emit("fatal", code="UNREACHABLE",
                          message=f"no working connection to the server for "
                                  f"{self.connect_timeout:g} s; unsent messages stay in the "
                                  f"outbox for the next run")

    # -- input -----------------------------------------------------------------

    def start(self) -> None:
        self.session.when_live().addCallback(self._live)

    def _live(self, _):
        self._started = True
        self._next()

    def line_received(self, line: str) -> None:
        self._lines.append(line)
        self._next()

    def end_of_input(self) -> None:
        self._eof = True
        self._next()

    def _next(self) -> None:
        """Run lines one after another. A loop, not recursion: a plain line
        completes at once, and a thousand of them must not grow the stack."""
        if self._looping:
            return
        self._looping = True
        try:
            while not self._busy and self._started and not self.done.called:
                if self._lines:
                    self._busy = True
                    line = self._lines.pop(0)
                    d = defer.maybeDeferred(self.execute, line)
                    d.addErrback(self._command_failed, line)
                    d.addBoth(self._finished_line)
                elif self._eof:
                    self._busy = True
                    self._finish()
                else:
                    break
        finally:
            self._looping = False

    def _finished_line(self, _) -> None:
        self._busy = False
        self._next()

    def _command_failed(self, failure, line: str) -> None:
        self.failures += 1
        if failure.check(WireError):
            self.emit("error", code=str(failure.value.code), message=failure.value.text,
                      command=line)
        elif failure.check(ConnectionLost):
            self.emit("error", code="DISCONNECTED", message="the connection dropped",
                      command=line)
        else:
            log.failure("batch command {line!r}", failure, line=line)
            self.emit("error", code="CLIENT", message=failure.getErrorMessage(), command=line)

    @defer.inlineCallbacks
    def _finish(self):
        yield self.session.when_idle()
        if self.linger:
            yield task.deferLater(self.clock, self.linger, lambda: None)
        failed = self.failures or self.session.failed_sends
        if self._offline_call is not None:
            self._offline_call.cancel()
            self._offline_call = None
        if not self.done.called:
            self.done.callback(EXIT_FAILED if failed else EXIT_OK)

    # -- commands --------------------------------------------------------------

    commands = SHARED_COMMANDS

    def execute(self, line: str):
        return self.commands.run(self, line)

    def say(self, room: str, text: str) -> None:
        self.session.send_text(room, text)

    show = emit
