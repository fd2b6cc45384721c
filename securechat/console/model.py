# -*- test-case-name: tests.test_console_model -*-
"""What the console shows, kept apart from how: panes of lines per room,
unread counts and activity, the connection state. No urwid here.

The model listens to the client core's events and tells its listeners
(the view) that something changed; the view redraws. Time comes from the
clock passed in, so tests see stable timestamps.
"""

import datetime
import hashlib
import re
from dataclasses import dataclass, field

from twisted.logger import Logger

from securechat.console.text import safe_line, safe_lines
from securechat.names import fold

log = Logger()

# Activity levels of a room the user is not looking at, lowest first (as WeeChat's hotlist).
QUIET, LOW, MESSAGE, PRIVATE, HIGHLIGHT = range(5)

# Lines kept per room on screen; older ones stay reachable through /history.
MAX_LINES_PER_PANE = 5000

# The pane for what belongs to no room: connection, errors, listings.
STATUS_PANE = "securechat"

# Direct messages are two-member invite-only rooms named #dm- and a hash of
# the two nicks: the same from both ends, within the room-name length, and
# unambiguous whatever the nicks contain (24 hex digits: 96 bits).
DIRECT_PREFIX = "#dm-"
DIRECT_HASH_CHARS = 24

ACTION_PREFIX = "/me "


def direct_room(me: str, other: str) -> str:
    """The room for a conversation between two nicks, the same from both ends."""
    first, second = sorted((fold(me), fold(other)))
    digest = hashlib.sha256(f"{first}\n{second}".encode()).hexdigest()
    return DIRECT_PREFIX + digest[:DIRECT_HASH_CHARS]


@dataclass
class Line:
    """One entry of a pane. C{text} may hold several lines, already made safe."""

    kind: str  # message, action, own, notice, error, pending, day
    text: str
    nick: str = ""
    time: float | None = None
    highlight: bool = False
    server_seq: int | None = None
    delivered: bool = True
    # For our own lines: the outbox entry's message id (hex), to mark it sent.
    entry_id: str | None = None
    version: int = 0

    def update(self, **changes) -> None:
        for name, value in changes.items():
            setattr(self, name, value)
        self.version += 1


@dataclass
class Pane:
    name: str
    lines: list[Line] = field(default_factory=list)
    unread: int = 0
    activity: int = QUIET
    marker: int | None = None  # index of the first line that arrived unseen
    members: dict = field(default_factory=dict)  # folded nick -> who entry
    input_history: list[str] = field(default_factory=list)
    peer: str | None = None  # the other side, in a direct-message room

    @property
    def direct(self) -> bool:
        return self.name.startswith(DIRECT_PREFIX)

    @property
    def label(self) -> str:
        """What the room list and status bar call it: @bob for a direct room."""
        return f"@{self.peer}" if self.direct and self.peer else self.name

    @property
    def key(self) -> str:
        return fold(self.name)


class ChatModel:
    def __init__(self, session, clock, tz: datetime.tzinfo | None = None):
        self.session = session
        self.clock = clock
        self.tz = tz
        self.panes: dict[str, Pane] = {fold(STATUS_PANE): Pane(STATUS_PANE)}
        self.current = fold(STATUS_PANE)
        self.connection = "connected" if session.live else "connecting"
        self.retry_at: float | None = None
        self.lag: float | None = None
        self.bells = 0
        self._listeners = []
        for room in session.rooms.values():
            self.pane(room.name)
        for entry in session.outbox:
            self.own_message(entry.room, entry.text, entry.message_id.hex())
        session.subscribe(self.on_event)

    # -- listening ---------------------------------------------------------------

    def listen(self, callback) -> None:
        self._listeners.append(callback)

    def changed(self) -> None:
        for callback in list(self._listeners):
            callback()

    # -- panes --------------------------------------------------------------------

    @property
    def nick(self) -> str:
        return self.session.nick

    def pane(self, name: str) -> Pane:
        key = fold(name)
        if key not in self.panes:
            self.panes[key] = Pane(name)
        return self.panes[key]

    def ordered(self) -> list[Pane]:
        """The status pane first, then rooms by name: what Alt+N counts."""
        status = self.panes[fold(STATUS_PANE)]
        return [status, *sorted((p for p in self.panes.values() if p is not status),
                                key=lambda p: p.key)]

    @property
    def current_pane(self) -> Pane:
        return self.panes[self.current]

    @property
    def current_room(self) -> str | None:
        """The current pane's room, or None on the status pane."""
        return None if self.current == fold(STATUS_PANE) else self.current_pane.name

    def switch(self, name: str) -> None:
        key = fold(name)
        if key not in self.panes or key == self.current:
            return
        # The unread marker clears when the user leaves the room they read.
        self.current_pane.marker = None
        self.current = key
        pane = self.current_pane
        pane.unread, pane.activity = 0, QUIET
        self.changed()

    def switch_by(self, step: int) -> None:
        ordered = self.ordered()
        index = ordered.index(self.current_pane)
        self.switch(ordered[(index + step) % len(ordered)].name)

    def switch_to_number(self, number: int) -> None:
        ordered = self.ordered()
        if 1 <= number <= len(ordered):
            self.switch(ordered[number - 1].name)

    def next_active(self) -> None:
        """The most urgent room with activity (mentions first); ties by list order."""
        waiting = [p for p in self.ordered() if p.activity > QUIET and p.key != self.current]
        if waiting:
            self.switch(max(waiting, key=lambda p: p.activity).name)

    def drop(self, name: str) -> None:
        key = fold(name)
        if key == fold(STATUS_PANE) or key not in self.panes:
            return
        if key == self.current:
            self.current = fold(STATUS_PANE)
        del self.panes[key]

    # -- adding lines ---------------------------------------------------------------

    def add(self, room: str | None, line: Line, activity: int = LOW) -> Line:
        pane = self.pane(room) if room else self.panes[fold(STATUS_PANE)]
        if line.time is not None:
            self._day_separator(pane, line.time)
        if pane.key != self.current:
            if activity >= MESSAGE:
                if pane.marker is None:
                    pane.marker = len(pane.lines)
                pane.unread += 1
            pane.activity = max(pane.activity, activity)
        pane.lines.append(line)
        if len(pane.lines) > MAX_LINES_PER_PANE:
            cut = len(pane.lines) - MAX_LINES_PER_PANE
            del pane.lines[:cut]
            pane.marker = None if pane.marker is None else max(0, pane.marker - cut)
        self.changed()
        return line

    def notice(self, room: str | None, text: str, activity: int = LOW, error: bool = False):
        return self.add(room, Line("error" if error else "notice", "\n".join(safe_lines(text)),
                                   time=self.clock.seconds()), activity)

    def _moment(self, when) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(when, self.tz)

    def _day(self, when: float) -> datetime.date:
        return self._moment(when).date()

    def checked_time(self, when) -> float:
        """A sender's timestamp if it is a real moment, else now: any member can put
        any number in an envelope, and it must not break the screen."""
        try:
            self._moment(when)
            return float(when)
        except (TypeError, ValueError, OverflowError, OSError):
            return self.clock.seconds()

    def _day_separator(self, pane: Pane, when: float) -> None:
        previous = next((line.time for line in reversed(pane.lines) if line.time is not None),
                        None)
        day = self._day(when)
        if previous is not None and self._day(previous) == day:
            return
        pane.lines.append(Line("day", day.strftime("%A %d %B %Y")))

    def clock_text(self, when: float) -> str:
        return self._moment(when).strftime("%H:%M")

    def mentions_me(self, text: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(self.nick)}(?![\w-])", text,
                         re.IGNORECASE) is not None

    def own_message(self, room: str, text: str, entry_id: str) -> Line:
        """What the user just sent, shown at once and marked delivered on its ack."""
        line = self._line(self.nick, text, self.clock.seconds(), None, own=True)
        line.entry_id = entry_id
        return self.add(room, line, QUIET)

    def _line(self, nick: str, text: str, when, server_seq, own: bool = False) -> Line:
        action = text.startswith(ACTION_PREFIX)
        body = "\n".join(safe_lines(text[len(ACTION_PREFIX):] if action else text))
        kind = "action" if action else ("own" if own else "message")
        return Line(kind, body, safe_line(nick), self.checked_time(when),
                    not own and self.mentions_me(body), server_seq, delivered=not own)

    def _message(self, room: str, nick: str, text: str, when, server_seq) -> Line:
        line = self._line(nick, text, when, server_seq)
        pane = self.pane(room)
        activity = HIGHLIGHT if line.highlight else (PRIVATE if pane.direct else MESSAGE)
        if line.highlight or pane.direct:
            self.bells += 1
        pending = self._pending_line(pane, server_seq)
        if pending is None:
            return self.add(room, line, activity)
        pending.update(kind=line.kind, text=line.text, highlight=line.highlight)
        if pane.key != self.current:
            pane.activity = max(pane.activity, activity)
        self.changed()
        return pending

    def _pending_line(self, pane: Pane, server_seq) -> Line | None:
        if server_seq is None:
            return None
        return next((line for line in reversed(pane.lines)
                     if line.kind == "pending" and line.server_seq == server_seq), None)

    # -- client events ----------------------------------------------------------------

    def on_event(self, event) -> None:
        """Show one event. A failure here is a bug in the console: it is logged and
        said, and the session goes on."""
        try:
            handler = getattr(self, "_on_" + event.kind, None)
            if handler is not None:
                handler(**event.fields)
            elif "message" in event.fields:
                self.notice(self._known(event.fields.get("room")), event.fields["message"])
        except Exception:
            log.failure("showing the {kind} event failed", kind=event.kind)
            self.notice(None, f"could not show a {event.kind} event (details in the log)",
                        error=True)

    def _known(self, room: str | None) -> str | None:
        """C{room} if it has a pane, else None (the status pane): never a ghost pane."""
        return room if room and fold(room) in self.panes else None

    def _on_connecting(self):
        self.connection, self.retry_at = "connecting", None
        self.changed()

    def _on_connected(self, nick, server):
        self.connection, self.retry_at = "connected", None
        self.notice(None, f"connected to {server} as {nick}")

    def _on_disconnected(self, reason):
        self.connection = "disconnected"
        self.lag = None
        self.notice(None, f"disconnected: {reason}", error=True)

    def _on_reconnecting(self, seconds, attempt, reason):
        self.connection, self.retry_at = "reconnecting", self.clock.seconds() + seconds
        self.notice(None, f"reconnecting in {seconds:g} s (attempt {attempt}): {reason}")

    def _on_fatal(self, code, message):
        self.connection = "stopped"
        self.notice(None, f"{code}: {message}", error=True)
        if self.current_room:
            self.notice(self.current_room, f"{code}: {message}", error=True)

    def _on_synced(self, rooms):
        for room in rooms:
            self.pane(room)
        self.changed()

    def _on_joined(self, room, role, epoch, history, topic):
        self.notice(room, f"you joined {room} as {role}"
                          + (f"; topic: {topic}" if topic else "")
                          + ("; newcomers read earlier messages" if history == "shared" else ""))

    def _on_left(self, room, how, by, reason):
        self.drop(room)
        why = f" by {by}" if by else ""
        self.notice(None, f"you left {room} ({how}{why}{': ' + reason if reason else ''})")

    def _on_room_deleted(self, room, by):
        self.drop(room)
        self.notice(None, f"{room} was deleted by {by}")

    def _on_member_joined(self, room, nick, role):
        self.pane(room).members[fold(nick)] = {"nick": nick, "role": role, "online": True}
        self.notice(room, f"{nick} joined")

    def _on_member_left(self, room, nick, how, by, reason):
        self.pane(room).members.pop(fold(nick), None)
        self.notice(room, f"{nick} left ({how}{' by ' + by if by else ''}"
                          f"{': ' + reason if reason else ''})")

    def _on_message(self, room, server_seq, text, time, epoch, **fields):
        self._message(room, fields["from"], text, time, server_seq)

    def _on_message_pending(self, room, server_seq, nick, epoch, message):
        self.add(room, Line("pending", f"[waiting for the key of epoch {epoch}]",
                            safe_line(nick), self.clock.seconds(), server_seq=server_seq),
                 MESSAGE)

    def _unreadable(self, room=None, server_seq=None, nick="", message="", **fields):
        room = self._known(room)
        text = f"[{safe_line(message)}]"
        pending = self._pending_line(self.pane(room), server_seq) if room else None
        if pending is not None:
            pending.update(kind="error", text=text)
            self.changed()
        else:
            self.add(room, Line("error", text, safe_line(nick), self.clock.seconds(),
                                server_seq=server_seq), MESSAGE)

    _on_undecryptable = _unreadable

    def _on_verification_failed(self, nick="", reason="", **fields):
        self._unreadable(nick=nick, message=fields.pop("message", reason), **fields)

    def _own_line(self, room: str | None, entry_id: str | None) -> Line | None:
        if not room or fold(room) not in self.panes or entry_id is None:
            return None
        return next((line for line in self.panes[fold(room)].lines
                     if line.entry_id == entry_id), None)

    def _on_sent(self, room, text, server_seq, seq, id=None):
        line = self._own_line(room, id)
        if line is not None:
            line.update(delivered=True, server_seq=server_seq)
            self.changed()

    def _on_error(self, code, message, room=None, id=None, **fields):
        line = self._own_line(room, id)
        if line is not None:
            line.update(kind="error", text=f"[not sent: {line.text}]", delivered=True)
        self.notice(self._known(room) or self.current_room, f"{code}: {message}", error=True)

    def _on_topic(self, room, by, topic):
        self.notice(room, f"{by} set the topic: {topic}")

    def _on_invited(self, room, by):
        self.notice(None, f"{by} invited you to {room}: /join {room}", activity=HIGHLIGHT)
        self.bells += 1

    def _on_rotated(self, room, epoch, reason, members):
        self.notice(room, f"new room key, epoch {epoch}, for {members} members ({reason})")

    def _on_rotation(self, room, epoch, by, reason):
        self.notice(room, f"{by} made a new room key, epoch {epoch} ({reason})")

    def _on_key_received(self, room, epoch, by):
        self.notice(room, f"received the key of epoch {epoch} from {by}")

    def _on_key_shared(self, room, nick, epoch):
        self.notice(room, f"gave {nick} the key of epoch {epoch}")

    def _on_role(self, room, nick, role, by):
        self.notice(room, f"{by} made {nick} {role}")

    def _on_settings(self, room, by, flags):
        self.notice(room, f"{by} changed the room settings: {flags or 'open'}")

    def _on_safety_number(self, nick, number, previous="", **fields):
        text = f"safety number with {nick}: {number}"
        if previous:
            text += f"\n(new key; the number was {previous})"
        self.notice(self.current_room, f"{text}\ncompare it with {nick} in person; if it "
                                       f"matches, /verify {nick} yes")

    def _on_identity_changed(self, nick, message, room="", **fields):
        """Prominent: a peer's key changed (an operator reset, or an attack)."""
        self.notice(self._known(room) or self.current_room, message, activity=HIGHLIGHT,
                    error=True)
        self.bells += 1

    def _on_room_forked(self, room, message):
        self.notice(self._known(room) or self.current_room, message, activity=HIGHLIGHT,
                    error=True)
        self.bells += 1

    # -- results of commands ------------------------------------------------------------

    def _history_line(self, room, text, server_seq, history=True, reason="", **fields):
        """An earlier message fetched with /history: shown, never counted as new."""
        nick = fields["from"]
        if text is None:
            line = Line("error", f"[cannot be read: {safe_line(reason)}]", safe_line(nick),
                        None, server_seq=server_seq)
        else:
            line = self._line(nick, text, fields.get("time"), server_seq)
            line.highlight = False
        self.add(room, line, QUIET)

    def show(self, kind: str, **fields) -> None:
        if kind == "who":
            pane = self.pane(fields["room"])
            pane.members = {fold(m["nick"]): m for m in fields["members"]}
            rows = [f"{m['nick']} ({m['role']}{', online' if m['online'] else ''}"
                    f"{', verified' if m.get('verified') else ''})" for m in fields["members"]]
            self.notice(fields["room"], f"members of {fields['room']}: " + ", ".join(rows))
        elif kind == "rooms":
            rows = [f"{r['room']} ({r['members']}){': ' + r['topic'] if r['topic'] else ''}"
                    for r in fields["rooms"]]
            self.notice(self.current_room, "public rooms: " + ("; ".join(rows) or "none"))
        elif kind == "message":
            self._history_line(**fields)
        elif kind == "lines":
            self.notice(self.current_room, "\n".join(fields["lines"]))
