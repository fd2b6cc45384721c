# -*- test-case-name: tests.test_console_controller -*-
"""What the user's input does: commands and messages on the session, input
history, completion, pastes to confirm, lag probes. No urwid here; the view
calls these with plain strings.
"""

from twisted.internet import defer, task
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger

from securechat.client.commands import SHARED_COMMANDS, Command, NICK, current_room, words
from securechat.constants import PASTE_CONFIRM_LINES
from securechat.console.model import ACTION_PREFIX, STATUS_PANE, ChatModel, direct_room
from securechat.names import fold
from securechat.wire import WireError

log = Logger()

# How often the status bar's lag is measured.
LAG_PROBE_SECONDS = 30.0

# /search shows at most this many matches, newest last.
MAX_SEARCH_RESULTS = 50


def _me(context, rest):
    words(rest, 1, "/me ACTION")
    context.say(current_room(context), ACTION_PREFIX + rest)


@defer.inlineCallbacks
def _msg(context, rest):
    nick, text = words(rest, 2, "/msg NICK text")
    session = context.session
    if fold(nick) == fold(session.nick):
        raise WireError("BAD_ARGUMENTS", "that is you; /msg someone else")
    room = direct_room(session.nick, nick)
    if fold(room) not in session.rooms:
        yield session.join(room)
        state = session.logs.get(room).state
        if state.role(session.identity.fingerprint) == "owner" and len(state.members) <= 1:
            yield _make_private(session, room, nick)
    yield _check_private(session, room, nick)
    context.model.pane(room).peer = nick
    context.room = room
    context.say(room, text)


@defer.inlineCallbacks
def _make_private(session, room: str, nick: str):
    """A new direct room: invite-only, history shared with the one invited."""
    try:
        yield session.configure(room, "invite_only", "on")
        # Shared history: what is said before the other side joins is theirs to read.
        yield session.rotate(room, "direct messages", history="shared")
        yield session.invite(room, nick)
    except Exception:
        yield session.part(room)
        raise


@defer.inlineCallbacks
def _check_private(session, room: str, nick: str):
    """Refuse to send unless the room is invite-only and holds only the two of us:
    anyone can create a room of that name first, hoping to be written to."""
    members = yield session.who(room)
    others = {fold(m["nick"]) for m in members} - {fold(session.nick), fold(nick)}
    if others or not session.logs.get(room).state.invite_only:
        yield session.part(room)
        raise WireError("NOT_PRIVATE", f"{room} is not a private room for you and {nick} "
                                       f"(someone else made it or is in it); nothing was sent")


def _clear(context, rest):
    context.model.current_pane.lines.clear()
    context.model.current_pane.marker = None
    context.model.changed()


def _search(context, rest):
    query = words(rest, 1, "/search TEXT")[0].casefold()
    model = context.model
    found = [f"{pane.label} {model.clock_text(line.time) if line.time is not None else '--:--'} "
             + (f"* {line.nick} {line.text}" if line.kind == "action"
                else f"<{line.nick}> {line.text}")
             for pane in model.ordered() for line in pane.lines
             if line.kind in ("message", "action", "own") and query in line.text.casefold()]
    shown = found[-MAX_SEARCH_RESULTS:]
    header = f"{len(found)} match{'' if len(found) == 1 else 'es'} for {rest!r}" + (
        f" (the last {len(shown)} shown)" if len(shown) < len(found) else "")
    model.show("lines", lines=[header, *shown])


def _quit(context, rest):
    context.quit()


CONSOLE_COMMANDS = SHARED_COMMANDS.extended([
    Command("me", "/me ACTION", "say what you are doing: * alice waves", _me),
    Command("msg", "/msg NICK text", "a direct message, in a two-member invite-only room",
            _msg, NICK),
    Command("clear", "/clear", "clear the current room's screen (history stays)", _clear),
    Command("search", "/search TEXT", "search the messages on screen (decrypted here; the "
                                      "server cannot search)", _search),
    Command("quit", "/quit", "quit cleanly", _quit),
])


class Completer:
    """Tab cycles through the words that complete the one before the cursor."""

    def __init__(self):
        self._matches: list[str] = []
        self._index = 0
        self._last = None

    def complete(self, text: str, candidates) -> str:
        """C{text} with its last word completed (or the next match, on repeated Tab)."""
        if self._last is not None and text == self._last and self._matches:
            self._index = (self._index + 1) % len(self._matches)
            head = text[: len(text) - len(self._current)]
        else:
            cut = max(text.rfind(" "), text.rfind("\n")) + 1
            head, word = text[:cut], text[cut:]
            self._matches = sorted({c for c in candidates(head, word)
                                    if c.casefold().startswith(word.casefold())},
                                   key=str.casefold)
            self._index = 0
            if not self._matches:
                self._last = None
                return text
        first_word = not head.strip() and "\n" not in head
        suffix = ": " if first_word and not self._matches[self._index].startswith(("/", "#")) \
            else " "
        self._current = self._matches[self._index] + suffix
        self._last = head + self._current
        return self._last

    def reset(self) -> None:
        self._last = None


class HistoryCursor:
    """Up/Down through one room's sent inputs; Ctrl+R searches them."""

    def __init__(self, entries: list[str]):
        self.entries = entries
        self.index = len(entries)
        self.draft = ""

    def older(self, current: str) -> str | None:
        if self.index == len(self.entries):
            self.draft = current
        if self.index == 0:
            return None
        self.index -= 1
        return self.entries[self.index]

    def newer(self) -> str | None:
        if self.index >= len(self.entries):
            return None
        self.index += 1
        return self.draft if self.index == len(self.entries) else self.entries[self.index]

    def search(self, query: str) -> str | None:
        """The next older entry containing C{query}."""
        for index in range(min(self.index, len(self.entries)) - 1, -1, -1):
            if query.casefold() in self.entries[index].casefold():
                self.index = index
                return self.entries[index]
        return None


class Controller:
    """The L{securechat.client.commands.CommandContext} of the console."""

    commands = CONSOLE_COMMANDS

    def __init__(self, session, model: ChatModel, clock, keymap, quit):
        self.session = session
        self.model = model
        self.clock = clock
        self.keymap = keymap
        self.quit = quit
        self.completer = Completer()
        self.awaiting_confirmation: str | None = None
        self._lag_probe = task.LoopingCall(self._probe_lag)
        self._lag_probe.clock = clock
        session.subscribe(self._on_event)

    # -- CommandContext ----------------------------------------------------------

    @property
    def room(self) -> str | None:
        return self.model.current_room

    @room.setter
    def room(self, name: str | None) -> None:
        if name is None:
            self.model.switch(STATUS_PANE)
        else:
            self.model.pane(name)
            self.model.switch(name)

    def show(self, kind: str, **fields) -> None:
        if kind == "help":
            rows = [f"{c['usage']:<42} {c['help']}" for c in fields["commands"]]
            keys = [f"{k:<42} {h}" for k, h in self.keymap.describe()]
            self.model.show("lines", lines=["commands:", *rows, "keys:", *keys])
        else:
            self.model.show(kind, **fields)

    def say(self, room: str, text: str) -> None:
        entry = self.session.send_text(room, text)
        self.model.own_message(room, text, entry.message_id.hex())

    def message_problem(self, text: str) -> str | None:
        """Why C{text} could not be sent as a message (too long), or None."""
        return self.session.limits.check_message(text)

    # -- input -------------------------------------------------------------------

    def submit(self, text: str, confirmed: bool = False) -> bool:
        """Run what the user entered. @return: False if it waits for a confirmation
        (a send of many lines), True once it ran."""
        if not text.strip():
            return True
        lines = text.split("\n")
        if len(lines) > PASTE_CONFIRM_LINES and not confirmed:
            self.awaiting_confirmation = text
            self.model.notice(self.room, f"send these {len(lines)} lines as one message? "
                                         f"y sends, n goes back to editing")
            return False
        self.awaiting_confirmation = None
        self.model.current_pane.input_history.append(text)
        if len(lines) > 1:
            # Several lines are always a message, even if the first starts with /.
            self._run_safely(lambda: self.say(current_room(self), text))
        else:
            self._run_safely(lambda: self.commands.run(self, text))
        return True

    def _run_safely(self, action) -> None:
        d = defer.maybeDeferred(action)
        d.addErrback(self._failed)

    def _failed(self, failure) -> None:
        if failure.check(WireError):
            self.model.notice(self.room, f"{failure.value.code}: {failure.value.text}",
                              error=True)
        elif failure.check(ConnectionLost):
            self.model.notice(self.room, "not connected; try again once reconnected",
                              error=True)
        else:
            log.failure("console command failed", failure)
            self.model.notice(self.room, f"that failed: {failure.getErrorMessage()} "
                                         f"(details in the log file)", error=True)

    def complete(self, text: str) -> str:
        return self.completer.complete(text, self._candidates)

    def _candidates(self, head: str, word: str):
        if not head and word.startswith("/"):
            return ["/" + name for name in self.commands.names()]
        if word.startswith("#"):
            return [p.name for p in self.model.ordered()[1:]] + \
                   [r.name for r in self.session.rooms.values()]
        command = self.commands.get(head.split(" ", 1)[0][1:]) if head.startswith("/") else None
        if command is not None and command.completes == "room":
            return [p.name for p in self.model.ordered()[1:]]
        pane = self.model.current_pane
        speakers = {line.nick for line in pane.lines[-500:] if line.nick}
        return {m["nick"] for m in pane.members.values()} | speakers - {""}

    def history(self) -> HistoryCursor:
        return HistoryCursor(self.model.current_pane.input_history)

    # -- background ------------------------------------------------------------------

    def start(self) -> None:
        self._lag_probe.start(LAG_PROBE_SECONDS, now=False)

    def stop(self) -> None:
        if self._lag_probe.running:
            self._lag_probe.stop()

    def _probe_lag(self) -> None:
        if not self.session.live:
            return
        d = self.session.measure_lag()
        d.addCallback(self._lag_measured)
        d.addErrback(lambda f: f.trap(WireError, ConnectionLost))

    def _lag_measured(self, seconds: float) -> None:
        self.model.lag = seconds
        self.model.changed()

    def _on_event(self, event) -> None:
        if event.kind == "synced":
            self._probe_lag()
            for room in self.session.rooms.values():
                self.refresh_members(room.name)
        elif event.kind == "invited":
            room, by = event.fields["room"], event.fields["by"]
            if fold(room) == fold(direct_room(self.session.nick, by)):
                # A direct message from someone: open it, as a private query.
                self._run_safely(lambda: self._join_direct(room, by))
        elif event.kind == "joined":
            self.model.pane(event.fields["room"])
            self.refresh_members(event.fields["room"])

    @defer.inlineCallbacks
    def _join_direct(self, room: str, peer: str):
        yield self.session.join(room)
        yield _check_private(self.session, room, peer)
        self.model.pane(room).peer = peer
        self.model.changed()

    def refresh_members(self, room: str) -> None:
        """Who is in C{room}, for completion and the status bar's verified count."""
        def store(members):
            pane = self.model.pane(room)
            pane.members = {fold(m["nick"]): m for m in members}
            others = [m["nick"] for m in members if fold(m["nick"]) != fold(self.session.nick)]
            if pane.direct and len(others) == 1:
                pane.peer = others[0]
            self.model.changed()

        d = self.session.who(room)
        d.addCallback(store)
        d.addErrback(lambda f: f.trap(WireError, ConnectionLost))
