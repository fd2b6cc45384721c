# -*- test-case-name: tests.test_console_keys -*-
"""The console's key bindings, as data.

F1 and /help are generated from this table, and the [keys] section of the
client config file overrides it (``quit = ["ctrl q"]``). Key names are
urwid's: "enter", "meta enter", "ctrl n", "page up", "f1".
"""

from dataclasses import dataclass

ROOM_SHORTCUTS = 9


class Paste(str):
    """A whole paste, as one input event: inserted in one step, however long,
    never typed key by key (urwid re-lays out the input after every key, so a
    paste of n characters typed would cost n layouts of up to n characters).
    A str, as urwid requires of input, but the view never takes it for a key."""

    __slots__ = ()

    @property
    def text(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"Paste({str(self)!r})"


@dataclass(frozen=True)
class Binding:
    action: str
    keys: tuple[str, ...]
    help: str


DEFAULT_BINDINGS = (
    Binding("send", ("enter",), "send the input (a command or a message)"),
    Binding("newline", ("meta enter",), "start a new line in the input"),
    Binding("history_prev", ("up",), "previous input in this room (on the first input line)"),
    Binding("history_next", ("down",), "next input in this room (on the last input line)"),
    Binding("complete", ("tab",), "complete a nick, a command or a room name"),
    Binding("scroll_up", ("page up",), "scroll the messages back"),
    Binding("scroll_down", ("page down",), "scroll the messages forward"),
    Binding("scroll_end", ("meta end",), "jump to the newest message"),
    Binding("next_room", ("ctrl n", "meta down"), "next room"),
    Binding("prev_room", ("ctrl p", "meta up"), "previous room"),
    *(Binding(f"room_{n}", (f"meta {n}",), f"room {n} of the list")
      for n in range(1, ROOM_SHORTCUTS + 1)),
    Binding("next_active", ("meta a",), "next room with activity, mentions first"),
    Binding("search_history", ("ctrl r",), "search the input history (again: older match)"),
    Binding("help", ("f1",), "show or hide this help"),
    Binding("redraw", ("ctrl l",), "redraw the screen"),
    Binding("quit", ("ctrl d",), "quit cleanly (or /quit)"),
)


_DEFAULTS = {b.action: b for b in DEFAULT_BINDINGS}


class KeymapError(ValueError):
    """A [keys] override that cannot work; the message names it and the fix."""


class Keymap:
    def __init__(self, bindings=DEFAULT_BINDINGS, overrides: dict | None = None):
        by_action = {b.action: b for b in bindings}
        for action, keys in (overrides or {}).items():
            if action not in by_action:
                raise KeymapError(f"[keys] {action}: no such action; known actions are "
                                  f"{', '.join(sorted(by_action))}")
            if isinstance(keys, str):
                keys = [keys]
            if not isinstance(keys, list) or not keys \
                    or not all(isinstance(k, str) and k for k in keys):
                raise KeymapError(f'[keys] {action}: give a key name or a list, e.g. ["ctrl q"]')
            by_action[action] = Binding(action, tuple(keys), by_action[action].help)
        self.bindings = tuple(by_action.values())
        self._actions: dict[str, str] = {}
        for binding in self.bindings:
            for key in binding.keys:
                if key in self._actions:
                    raise KeymapError(f"[keys] {key!r} is bound to both {self._actions[key]} "
                                      f"and {binding.action}; give one of them another key")
                self._actions[key] = binding.action

    def action(self, key: str) -> str | None:
        return self._actions.get(key)

    def keys_of(self, action: str) -> tuple[str, ...]:
        return next(b.keys for b in self.bindings if b.action == action)

    def describe(self) -> list[tuple[str, str]]:
        """(keys, help) rows for the help screen; Alt+1..9 in one row while unchanged."""
        rows = []
        for binding in self.bindings:
            if binding.action.startswith("room_") and binding == _DEFAULTS[binding.action]:
                if binding.action == "room_1":
                    rows.append((f"Alt+1..{ROOM_SHORTCUTS}", "room 1 to 9 of the list"))
                continue
            rows.append((" / ".join(_display(k) for k in binding.keys), binding.help))
        return rows


def _display(key: str) -> str:
    """urwid's names as people write them: "meta enter" as Alt+Enter."""
    parts = key.split(" ")
    names = {"meta": "Alt", "ctrl": "Ctrl", "shift": "Shift"}
    modifiers = [names[p] for p in parts[:-1] if p in names]
    if len(modifiers) != len(parts) - 1:
        return key.title()
    return "+".join([*modifiers, parts[-1].title() if len(parts[-1]) > 1 else parts[-1].upper()])
