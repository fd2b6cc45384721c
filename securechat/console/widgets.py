# -*- test-case-name: tests.test_console_widgets -*-
"""The console's widgets: room list, message pane, status bar, input line,
and the view that lays them out and turns keys into actions.

Widgets only read the model and call the controller; they never talk to
the network and never decrypt.
"""

import urwid

from securechat.console.model import HIGHLIGHT, LOW, MESSAGE, PRIVATE, ChatModel, Line
from securechat.console.text import NICK_COLOURS, nick_colour
from securechat.names import fold

ROOM_LIST_WIDTH = 22

PALETTE = [
    ("room", "light gray", ""),
    ("room_current", "black", "light gray"),
    ("room_low", "dark cyan", ""),
    ("room_message", "white", ""),
    ("room_private", "light magenta,bold", ""),
    ("room_highlight", "yellow,bold", ""),
    ("time", "dark gray", ""),
    ("notice", "dark cyan", ""),
    ("error", "light red", ""),
    ("pending", "dark gray", ""),
    ("day", "brown", ""),
    ("marker", "light red", ""),
    ("highlight", "yellow,bold", ""),
    ("action", "light magenta", ""),
    ("status", "white", "dark blue"),
    ("status_bad", "yellow,bold", "dark blue"),
    ("input", "", ""),
    *((name, colour, "") for name, colour in zip(NICK_COLOURS, (
        "light green", "light cyan", "light magenta", "yellow", "light blue", "light red",
        "dark green", "brown"))),
]

_ACTIVITY_STYLE = {LOW: "room_low", MESSAGE: "room_message", PRIVATE: "room_private",
                   HIGHLIGHT: "room_highlight"}


def line_markup(model: ChatModel, line: Line) -> tuple[list, list]:
    """How one pane line reads, as (prefix, body): C{HH:MM <nick> } and the
    text, which wraps under itself rather than under the time."""
    stamp = [("time", model.clock_text(line.time) + " ")] if line.time is not None else []
    if line.kind == "action":
        return [*stamp, ("action", "* ")], [("action", f"{line.nick} {line.text}")]
    if line.kind in ("notice", "error") and not line.nick:
        return [*stamp, (line.kind, "-- " if line.kind == "notice" else "!! ")], \
            [(line.kind, line.text)]
    prefix = [*stamp, (nick_colour(line.nick), f"<{line.nick}> ")]
    if line.kind in ("pending", "error"):
        return prefix, [(line.kind, line.text)]
    if line.kind == "own" and not line.delivered:
        return prefix, [("pending", line.text)]
    return prefix, [("highlight" if line.highlight else "input", line.text)]


def line_widget(model: ChatModel, line: Line) -> urwid.Widget:
    if line.kind == "day":
        return urwid.Text(("day", f"──── {line.text} ────"))
    prefix, body = line_markup(model, line)
    return urwid.Columns([("pack", urwid.Text(prefix)), urwid.Text(body)])


class RoomList(urwid.WidgetWrap):
    def __init__(self, model: ChatModel):
        self.model = model
        self._walker = urwid.SimpleFocusListWalker([])
        super().__init__(urwid.LineBox(urwid.ListBox(self._walker), title="rooms"))

    def refresh(self) -> None:
        rows = []
        for number, pane in enumerate(self.model.ordered(), 1):
            count = f" ({pane.unread})" if pane.unread else ""
            style = "room_current" if pane.key == self.model.current else \
                _ACTIVITY_STYLE.get(pane.activity, "room")
            rows.append(urwid.Text((style, f"{number} {pane.label}{count}"), wrap="ellipsis"))
        self._walker[:] = rows


class _SizedListBox(urwid.ListBox):
    """Remembers its size, so that PgUp/PgDn can be forwarded from anywhere."""

    size = (80, 20)

    def render(self, size, focus=False):
        self.size = size
        return super().render(size, focus)


class MessagePane(urwid.WidgetWrap):
    """The current room's lines, following the newest unless scrolled back."""

    def __init__(self, model: ChatModel):
        self.model = model
        self._walker = urwid.SimpleFocusListWalker([])
        self.listbox = _SizedListBox(self._walker)
        self._cache: dict[int, tuple[Line, int, urwid.Widget]] = {}
        self._shown = None
        self.following = True
        super().__init__(self.listbox)

    def _widget(self, line: Line) -> urwid.Widget:
        cached = self._cache.get(id(line))
        if cached is None or cached[0] is not line or cached[1] != line.version:
            cached = (line, line.version, line_widget(self.model, line))
            self._cache[id(line)] = cached
        return cached[2]

    def refresh(self) -> None:
        pane = self.model.current_pane
        if self._shown != pane.key:
            self._shown, self.following, self._cache = pane.key, True, {}
        elif self._walker:
            self.following = self._walker.focus == len(self._walker) - 1
        rows = [self._widget(line) for line in pane.lines]
        if len(self._cache) > len(rows):
            live = {id(line) for line in pane.lines}
            self._cache = {k: v for k, v in self._cache.items() if k in live}
        if pane.marker is not None and pane.marker < len(rows):
            rows.insert(pane.marker, urwid.Text(("marker", "──── unread ────"), align="center"))
        focus = self._walker.focus if self._walker else 0
        self._walker[:] = rows
        if rows:
            self._walker.set_focus(len(rows) - 1 if self.following else min(focus, len(rows) - 1))

    @property
    def more(self) -> int:
        """Lines below the view when scrolled back (WeeChat's -MORE(n)-)."""
        if not self._walker or self.following:
            return 0
        return len(self._walker) - 1 - self._walker.focus

    def scroll(self, key: str) -> None:
        self.listbox.keypress(self.listbox.size, key)
        self.following = self._walker.focus == len(self._walker) - 1 if self._walker else True

    def to_end(self) -> None:
        if self._walker:
            self._walker.set_focus(len(self._walker) - 1)
        self.following = True


class StatusBar(urwid.WidgetWrap):
    def __init__(self, model: ChatModel, pane: MessagePane):
        self.model = model
        self.pane = pane
        self.prompt = ""
        self._text = urwid.Text("", wrap="ellipsis")
        super().__init__(urwid.AttrMap(self._text, "status"))

    def connection(self) -> tuple[str, bool]:
        model = self.model
        if model.connection == "reconnecting" and model.retry_at is not None:
            wait = round(model.retry_at - model.clock.seconds())
            return (f"reconnecting in {wait} s" if wait > 0 else "connecting"), True
        if model.connection == "connected":
            lag = f", lag {model.lag:.2f} s" if model.lag is not None else ""
            return f"connected{lag}", False
        return model.connection, True

    def encryption(self) -> tuple[str, bool]:
        """The room's encryption state: its key epoch, key pending, members verified."""
        room = self.model.current_room
        session = self.model.session
        local = session.rooms.get(fold(room)) if room else None
        if local is None:
            return "", False
        if local.epoch < 1:
            return "no key yet", False
        if session.keys.key(local.name, local.epoch) is None:
            return f"key epoch {local.epoch} pending", True
        log = session.logs.get(local.name)
        others = [m.nick for fp, m in log.state.members.items()
                  if fp != session.identity.fingerprint] if log is not None else []
        verified = sum(1 for nick in others if session.pins.verified(nick))
        trust = f", {verified}/{len(others)} verified" if others else ""
        return f"E2E epoch {local.epoch}{trust}", bool(others) and verified < len(others)

    def refresh(self) -> None:
        model = self.model
        state, bad = self.connection()
        parts = [(("status_bad" if bad else "status"), f"[{state}]")]
        room = model.current_room
        if room:
            local = model.session.rooms.get(fold(room))
            members = f" ({local.members} members)" if local is not None else ""
            parts.append(("status", f" {model.current_pane.label}{members}"))
            crypto, warn = self.encryption()
            if crypto:
                parts.append((("status_bad" if warn else "status"), f" [{crypto}]"))
        else:
            parts.append(("status", f" {model.current_pane.name}"))
        if self.pane.more:
            parts.append(("status_bad", f" -MORE({self.pane.more})-"))
        if self.prompt:
            parts.append(("status_bad", f"  {self.prompt}"))
        self._text.set_text(parts)


# The input shows at most this many rows and scrolls within them, so a long
# paste never pushes the status bar or the messages off the screen.
INPUT_MAX_ROWS = 5


class InputBox(urwid.WidgetWrap):
    """The input line, at most L{INPUT_MAX_ROWS} rows high: the rows around
    the cursor are shown, the rest scroll out of view."""

    def __init__(self, edit: "InputLine", max_rows: int = INPUT_MAX_ROWS):
        self.edit = edit
        self.max_rows = max_rows
        super().__init__(edit)

    def rows(self, size, focus=False) -> int:
        return min(self.edit.rows(size, focus), self.max_rows)

    def _top(self, size, rows: int) -> int:
        """The first row shown: the cursor's row is always in view."""
        if rows <= self.max_rows:
            return 0
        cursor = self.edit.get_cursor_coords(size)
        row = cursor[1] if cursor is not None else rows - 1
        return min(max(0, row - self.max_rows + 1), rows - self.max_rows)

    def render(self, size, focus=False):
        canvas = self.edit.render(size, focus)
        rows = canvas.rows()
        if rows <= self.max_rows:
            return canvas
        canvas = urwid.CompositeCanvas(canvas)
        canvas.trim(self._top(size, rows), self.max_rows)
        return canvas

    def get_cursor_coords(self, size):
        cursor = self.edit.get_cursor_coords(size)
        if cursor is None:
            return None
        return cursor[0], cursor[1] - self._top(size, self.edit.rows(size, True))

    def move_cursor_to_coords(self, size, col, row):
        return self.edit.move_cursor_to_coords(size, col, row + self._top(
            size, self.edit.rows(size, True)))


class InputLine(urwid.Edit):
    """The input: several lines allowed (Alt+Enter, pastes); Enter is the view's."""

    def __init__(self):
        super().__init__("> ", multiline=True)

    def take(self) -> str:
        text = self.edit_text
        self.set_edit_text("")
        return text

    def replace(self, text: str) -> None:
        self.set_edit_text(text)
        self.set_edit_pos(len(text))

    @property
    def on_first_line(self) -> bool:
        return "\n" not in self.edit_text[: self.edit_pos]

    @property
    def on_last_line(self) -> bool:
        return "\n" not in self.edit_text[self.edit_pos:]


class HelpPanel(urwid.WidgetWrap):
    """F1: every key and command, from the same tables that run them."""

    def __init__(self, keymap, commands):
        rows = [urwid.Text(("day", "keys (F1 or Esc closes this)"))]
        rows += [self._row(keys, text) for keys, text in keymap.describe()]
        rows += [urwid.Divider(), urwid.Text(("day", "commands"))]
        rows += [self._row(c.usage, c.help) for c in commands]
        self.listbox = _SizedListBox(urwid.SimpleFocusListWalker(rows))
        super().__init__(urwid.LineBox(self.listbox, title="help"))

    @staticmethod
    def _row(left: str, right: str) -> urwid.Widget:
        return urwid.Columns([(24, urwid.Text(("time", left))), urwid.Text(right)], dividechars=1)
