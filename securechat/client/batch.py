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

    def execute(self, line: str):
        line = line.rstrip("\r\n")
        if not line.strip():
            return None
        if not line.startswith("/") or line.startswith("//"):
            return self._say(line[1:] if line.startswith("//") else line)
        name, _, rest = line[1:].partition(" ")
        command = getattr(self, "cmd_" + name.lower(), None)
        if command is None:
            raise WireError("UNKNOWN_COMMAND", f"unknown command /{name}; see --help")
        return command(rest.strip())

    def _current(self) -> str:
        if self.room is None:
            raise WireError("NO_ROOM", "no current room: /join one first")
        return self.room

    def _say(self, text: str):
        self.session.send_text(self._current(), text)

    def _words(self, rest: str, count: int, usage: str) -> list[str]:
        words = rest.split(None, count - 1) if rest else []
        if len(words) < count:
            raise WireError("BAD_ARGUMENTS", f"usage: {usage}")
        return words

    @defer.inlineCallbacks
    def cmd_join(self, rest: str):
        room, _, password = rest.partition(" ")
        if not room:
            raise WireError("BAD_ARGUMENTS", "usage: /join #room [password]")
        joined = yield self.session.join(room, password or None)
        self.room = joined.name

    def cmd_part(self, rest: str):
        room = rest or self._current()
        if self.room and room.casefold() == self.room.casefold():
            self.room = None
        return self.session.part(room)

    def cmd_invite(self, rest: str):
        return self.session.invite(self._current(), self._words(rest, 1, "/invite NICK")[0])

    def cmd_kick(self, rest: str):
        nick, _, reason = rest.partition(" ")
        self._words(nick, 1, "/kick NICK [reason]")
        return self.session.kick(self._current(), nick, reason or None)

    def cmd_ban(self, rest: str):
        nick, _, reason = rest.partition(" ")
        self._words(nick, 1, "/ban NICK [reason]")
        return self.session.kick(self._current(), nick, reason or None, ban=True)

    def cmd_unban(self, rest: str):
        return self.session.unban(self._current(), self._words(rest, 1, "/unban NICK")[0])

    def cmd_rotate(self, rest: str):
        return self.session.rotate(self._current(), "requested by a member")

    def cmd_history_policy(self, rest: str):
        if rest not in ("joined", "shared"):
            raise WireError("BAD_ARGUMENTS", "usage: /history_policy joined|shared")
        return self.session.rotate(self._current(), f"history policy now {rest}", history=rest)

    def cmd_topic(self, rest: str):
        return self.session.set_topic(self._current(), rest)

    @defer.inlineCallbacks
    def cmd_who(self, rest: str):
        room = rest or self._current()
        members = yield self.session.who(room)
        self.emit("who", room=room, members=members)

    @defer.inlineCallbacks
    def cmd_rooms(self, rest: str):
        rooms = yield self.session.list_rooms()
        self.emit("rooms", rooms=rooms)

    @defer.inlineCallbacks
    def cmd_history(self, rest: str):
        count = int(rest) if rest.isdigit() else 20
        for message in (yield self.session.history(self._current(), count)):
            self.emit("message", history=True, **message)

    def cmd_verify(self, rest: str):
        return self.session.verify(self._words(rest, 1, "/verify NICK")[0])

    def cmd_accept(self, rest: str):
        self.session.accept(self._words(rest, 1, "/accept NICK")[0])

    def cmd_wait(self, rest: str):
        try:
            seconds = float(rest)
        except ValueError:
            raise WireError("BAD_ARGUMENTS", "usage: /wait SECONDS") from None
        return task.deferLater(self.clock, max(0.0, seconds), lambda: None)
