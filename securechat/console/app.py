# -*- test-case-name: tests.test_console_app -*-
"""Running the console: urwid on Twisted's reactor, redraws after network
events, safe pastes, the client config file, and a clean quit.

urwid's Twisted loop repaints only after keys and alarms, not after data
arrives on a Twisted protocol, so every model change asks for one coalesced
redraw here (L{Redrawer}).
"""

import logging
import os
import signal
import tomllib
from dataclasses import dataclass

import urwid
from twisted.internet import task

from securechat.client.connector import Connector
from securechat.client.run import build_session, start_logging
from securechat.console.controller import Controller
from securechat.console.keys import Keymap, KeymapError, Paste
from securechat.console.model import ChatModel
from securechat.console.view import ChatView
from securechat.console.widgets import PALETTE

CONFIG_FILE = "client.toml"

# The status bar's reconnect countdown ticks this often.
STATUS_TICK_SECONDS = 1.0

# Quitting waits this long at most for the connection to close politely.
QUIT_TIMEOUT_SECONDS = 3.0


class ConsoleConfigError(ValueError):
    """The client config file cannot be used; the message names the problem."""


@dataclass(frozen=True)
class ConsoleSettings:
    keymap: Keymap
    bracketed_paste: bool = True
    bell: bool = True


def load_settings(path: str) -> ConsoleSettings:
    """[keys] overrides and [console] options from the client config file, if any."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return ConsoleSettings(Keymap())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConsoleConfigError(f"{path}: {error}") from None
    unknown = set(data) - {"keys", "console"}
    if unknown:
        raise ConsoleConfigError(f"{path}: unknown section [{sorted(unknown)[0]}]; "
                                 f"the sections are [keys] and [console]")
    console = data.get("console", {})
    options = {}
    for name in ("bracketed_paste", "bell"):
        if name in console:
            if not isinstance(console[name], bool):
                raise ConsoleConfigError(f"{path}: [console] {name} must be true or false")
            options[name] = console.pop(name)
    if console:
        raise ConsoleConfigError(f"{path}: unknown option [console] {sorted(console)[0]}; "
                                 f"known: bracketed_paste, bell")
    try:
        keymap = Keymap(overrides=data.get("keys", {}))
    except KeymapError as error:
        raise ConsoleConfigError(f"{path}: {error}") from None
    return ConsoleSettings(keymap, **options)


# A pasted tab becomes this many spaces (Tab itself would complete a word).
PASTED_TAB_WIDTH = 4


class PasteFilter:
    """Turns a paste into one L{Paste} event: the keys between "begin paste"
    and "end paste" (which may come over several reads), where Enter is a new
    line, never a send, Tab is spaces, and other named keys (a cursor key
    in pasted escape sequences) are not text. Terminals that do not bracket
    pastes still deliver a paste as one batch of keys with Enter followed by
    more keys, which is taken as a paste too."""

    def __init__(self):
        self.pasting = False
        self._held: list[str] = []

    def __call__(self, keys, raw):
        unbracketed = not self.pasting and "enter" in keys[:-1] and "begin paste" not in keys
        out = []
        for key in keys:
            if key == "begin paste":
                self.pasting, self._held = True, []
            elif key == "end paste" and self.pasting:
                self.pasting = False
                out.append(Paste("".join(self._held)))
            elif self.pasting or unbracketed:
                self._held.append(_pasted_text(key))
            else:
                out.append(key)
        if unbracketed:
            out.append(Paste("".join(self._held)))
            self._held = []
        return out


def _pasted_text(key) -> str:
    if key == "enter":
        return "\n"
    if key == "tab":
        return " " * PASTED_TAB_WIDTH
    return key if isinstance(key, str) and len(key) == 1 else ""


class Redrawer:
    """One repaint per burst of model changes, as soon as the reactor is free."""

    def __init__(self, loop: urwid.MainLoop, view: ChatView, model: ChatModel, bell: bool):
        self.loop = loop
        self.view = view
        self.model = model
        self.bell = bell
        self._scheduled = False
        self._bells_rung = model.bells

    def request(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.set_alarm_in(0, self._draw)

    def _draw(self, *_) -> None:
        self._scheduled = False
        if self.bell and self.model.bells > self._bells_rung:
            self.loop.screen.write("\a")
        self._bells_rung = self.model.bells
        self.view.refresh()
        self.loop.draw_screen()


def run_console(options, home, identity, keys, state, host, port, server, trust) -> int:
    from twisted.internet import reactor

    settings = load_settings(os.path.join(home.path, CONFIG_FILE))
    start_logging(home.log_path)
    # urwid reports through the standard library's logging: to the file too.
    logging.basicConfig(filename=home.log_path, level=logging.WARNING,
                        format="%(asctime)s [%(name)s] %(message)s")
    session = build_session(reactor, options, home, identity, keys, state, server)
    connector = Connector(reactor, session, host, port, trust)
    model = ChatModel(session, reactor)
    controller = Controller(session, model, reactor, settings.keymap, reactor.stop)
    screen = urwid.display.raw.Screen(bracketed_paste_mode=settings.bracketed_paste)
    view = ChatView(model, controller, settings.keymap, clear_screen=screen.clear)
    loop = urwid.MainLoop(
        view, PALETTE, screen=screen, handle_mouse=False,
        event_loop=urwid.TwistedEventLoop(reactor=reactor, manage_reactor=False),
        input_filter=PasteFilter(),
    )
    redrawer = Redrawer(loop, view, model, settings.bell)
    model.listen(redrawer.request)

    def tick() -> None:
        if model.connection == "reconnecting":
            redrawer.request()

    ticker = task.LoopingCall(tick)
    ticker.clock = reactor

    def shutting_down():
        """However the reactor stops (/quit, Ctrl+D, SIGINT, SIGTERM, SIGHUP): save
        and say goodbye to the server, for a few seconds at most."""
        controller.stop()
        if ticker.running:
            ticker.stop()
        session.save_now()
        d = connector.stop()
        if d is not None:
            return d.addTimeout(QUIT_TIMEOUT_SECONDS, reactor).addErrback(lambda _: None)
        return None

    reactor.addSystemEventTrigger("before", "shutdown", shutting_down)
    # tmux kill-session and a closed terminal send SIGHUP: quit as /quit does.
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(reactor.stop))
    model.notice(None, f"securechat {session.nick} — F1 or /help for keys and commands; "
                       f"/join #room to start")
    loop.start()
    try:
        ticker.start(STATUS_TICK_SECONDS, now=False)
        controller.start()
        connector.start()
        reactor.run()
    finally:
        try:
            loop.stop()
        except OSError:
            pass  # the terminal is already gone (SIGHUP): nothing to restore
    return 0
