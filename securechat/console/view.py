# -*- test-case-name: tests.test_console_widgets -*-
"""The whole screen, and what each bound key does.

Keys go through the L{securechat.console.keys.Keymap} first; what it does
not bind goes to the input line. Pastes arrive between "begin paste" and
"end paste" (see L{securechat.console.app}), where Enter is a new line.
"""

import urwid

from securechat.console.controller import Controller
from securechat.console.keys import ROOM_SHORTCUTS, Keymap, Paste
from securechat.console.model import ChatModel
from securechat.console.widgets import (
    ROOM_LIST_WIDTH,
    HelpPanel,
    InputBox,
    InputLine,
    MessagePane,
    RoomList,
    StatusBar,
)


class ChatView(urwid.WidgetWrap):
    def __init__(self, model: ChatModel, controller: Controller, keymap: Keymap,
                 clear_screen=None):
        """@param clear_screen: repaints the terminal from scratch (Ctrl+L)."""
        self.model = model
        self._clear_screen = clear_screen
        self._width = 80
        self.controller = controller
        self.keymap = keymap
        self.rooms = RoomList(model)
        self.messages = MessagePane(model)
        self.status = StatusBar(model, self.messages)
        self.input = InputLine()
        self._history = None
        self._search: str | None = None
        self.help = HelpPanel(keymap, controller.commands)
        body = urwid.Columns([(ROOM_LIST_WIDTH, self.rooms), self.messages])
        self.frame = urwid.Frame(body, footer=urwid.Pile([self.status, InputBox(self.input)]),
                                 focus_part="footer")
        self.overlay = urwid.Overlay(self.help, self.frame, "center", ("relative", 90),
                                     "middle", ("relative", 90))
        super().__init__(self.frame)
        self.refresh()

    def refresh(self) -> None:
        self.rooms.refresh()
        self.messages.refresh()
        self.status.refresh()

    # -- keys -----------------------------------------------------------------------

    @property
    def help_shown(self) -> bool:
        return self._w is self.overlay

    def keypress(self, size, key):
        self._width = size[0]
        if isinstance(key, Paste):
            self._paste(key.text)
            return None
        if self.controller.awaiting_confirmation is not None:
            return self._confirm(key)
        action = self.keymap.action(key) if isinstance(key, str) else None
        if self.help_shown and (action == "help" or key == "esc"):
            self._w = self.frame
            return None
        if self.help_shown:
            return self.help.listbox.keypress(self.help.listbox.size, key)
        if action != "search_history" and self._search is not None:
            self._search = None
            self.status.prompt = ""
            self.status.refresh()
        if action != "complete":
            self.controller.completer.reset()
        if action not in ("history_prev", "history_next", "search_history"):
            self._history = None
        if action is not None:
            handler = getattr(self, "_do_" + action, None)
            if handler is None and action.startswith("room_"):
                number = int(action[len("room_"):])
                if 1 <= number <= ROOM_SHORTCUTS:
                    self.model.switch_to_number(number)
                    return None
            if handler is not None:
                handler()
                return None
        return self.frame.keypress(size, key)

    def _paste(self, text: str) -> None:
        """Insert a paste in one step; one that would make the message longer
        than the server takes is refused whole, and says so."""
        if self.controller.awaiting_confirmation is not None or self.help_shown:
            return
        edit = self.input
        combined = edit.edit_text[:edit.edit_pos] + text + edit.edit_text[edit.edit_pos:]
        problem = self.controller.message_problem(combined)
        if problem is not None:
            self.model.notice(self.model.current_room, f"paste refused: {problem}", error=True)
        else:
            edit.insert_text(text)
        self.refresh()

    def _confirm(self, key: str):
        if key in ("y", "Y"):
            self.input.take()
            self.controller.submit(self.controller.awaiting_confirmation, confirmed=True)
        elif key in ("n", "N", "esc"):
            self.controller.awaiting_confirmation = None
            self.model.notice(self.model.current_room, "not sent; it is back in the input")
        self.refresh()
        return None

    def _do_send(self) -> None:
        text = self.input.edit_text
        if self.controller.submit(text):
            self.input.take()
            self.messages.to_end()
        self.refresh()

    def _do_newline(self) -> None:
        self.input.insert_text("\n")

    def _do_history_prev(self) -> None:
        if not self.input.on_first_line and self._history is None:
            self.input.keypress((self._width,), "up")
            return
        self._history = self._history or self.controller.history()
        text = self._history.older(self.input.edit_text)
        if text is not None:
            self.input.replace(text)

    def _do_history_next(self) -> None:
        if self._history is None:
            if not self.input.on_last_line:
                self.input.keypress((self._width,), "down")
            return
        text = self._history.newer()
        if text is not None:
            self.input.replace(text)

    def _do_search_history(self) -> None:
        """Ctrl+R: what is typed is the query; again steps to older matches."""
        if self._search is None:
            self._search = self.input.edit_text
            self._history = self.controller.history()
        found = self._history.search(self._search) if self._search else None
        self.status.prompt = (f"history search {self._search!r}: "
                              + ("found" if found is not None else "no older match"))
        if found is not None:
            self.input.replace(found)
        self.status.refresh()

    def _do_complete(self) -> None:
        before = self.input.edit_text[: self.input.edit_pos]
        after = self.input.edit_text[self.input.edit_pos:]
        completed = self.controller.complete(before)
        self.input.set_edit_text(completed + after)
        self.input.set_edit_pos(len(completed))

    def _do_scroll_up(self) -> None:
        self.messages.scroll("page up")
        self.status.refresh()

    def _do_scroll_down(self) -> None:
        self.messages.scroll("page down")
        self.status.refresh()

    def _do_scroll_end(self) -> None:
        self.messages.to_end()
        self.status.refresh()

    def _do_next_room(self) -> None:
        self.model.switch_by(1)

    def _do_prev_room(self) -> None:
        self.model.switch_by(-1)

    def _do_next_active(self) -> None:
        self.model.next_active()

    def _do_help(self) -> None:
        self._w = self.overlay

    def _do_redraw(self) -> None:
        if self._clear_screen is not None:
            self._clear_screen()
        self.refresh()

    def _do_quit(self) -> None:
        self.controller.quit()
