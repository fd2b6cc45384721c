"""The console's cost of a large paste: from the terminal's bracketed-paste
keys to the next screen, through the same paste filter, view and widgets the
console runs. Typed key by key, urwid laid out the whole input once per
character (20,000 characters took over ten minutes); as one event it is one
insert and one layout. Target: under 100 ms for 20,000 characters."""

import time

from twisted.internet import task

from securechat.client.session import ClientSession
from securechat.console.app import PasteFilter
from securechat.console.controller import Controller
from securechat.console.keys import Keymap
from securechat.console.model import ChatModel
from securechat.console.view import ChatView
from securechat.crypto.identity import PrivateIdentity

CHARACTERS = 20_000
TARGET = 0.100
ROUNDS = 5
SCREEN = (100, 30)


def _view() -> ChatView:
    """A console on a session that is not connected: what a paste costs is all
    on this side."""
    clock = task.Clock()
    session = ClientSession(PrivateIdentity.generate(), "bench", {}, clock,
                            lambda state: None, lambda transport: b"")
    model = ChatModel(session, clock)
    controller = Controller(session, model, clock, Keymap(), lambda: None)
    view = ChatView(model, controller, Keymap())
    model.listen(view.refresh)
    return view


def _paste_keys(characters: int) -> list[str]:
    """What urwid hands the input filter for a bracketed paste of lines of text."""
    line = "pasted log line, with some words in it " * 2
    keys, count = ["begin paste"], 0
    while count < characters:
        for char in line:
            keys.append(char)
        keys.append("enter")
        count += len(line) + 1
    return keys + ["end paste"]


def measure(characters: int = CHARACTERS) -> list[tuple[str, str, str]]:
    """(what, median time, target) of pasting C{characters} and drawing the screen."""
    keys = _paste_keys(characters)
    times = []
    for _ in range(ROUNDS):
        view = _view()
        started = time.perf_counter()
        for event in PasteFilter()(keys, []):
            view.keypress(SCREEN, event)
        view.render(SCREEN, focus=True)
        times.append(time.perf_counter() - started)
        assert len(view.input.edit_text) >= characters
    took = sorted(times)[len(times) // 2]
    started = time.perf_counter()
    for _ in range(ROUNDS):
        view.keypress(SCREEN, "x")
        view.render(SCREEN, focus=True)
    typed = (time.perf_counter() - started) / ROUNDS
    return [(f"paste {characters:,} characters, then draw", f"{took * 1000:.1f} ms",
             f"< {TARGET * 1000:.0f} ms: {'met' if took < TARGET else 'NOT met'}"),
            ("then type one key and draw", f"{typed * 1000:.1f} ms", "")]
