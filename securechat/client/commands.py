# -*- test-case-name: tests.test_client_commands -*-
"""Slash commands, as one table shared by ``--batch`` and the console.

A command is data: its name, usage, help and what its argument completes
to, plus a function run on a L{CommandContext}. Both front ends parse lines
the same way and differ only in how they show results (JSON events or lines
on the screen), so a command added here works in both, and /help and Tab
completion come from the same table.
"""

from dataclasses import dataclass
from typing import Callable, Protocol

from twisted.internet import defer, task

from securechat.names import fold
from securechat.wire import WireError

# What a command's argument completes to, for Tab in the console.
NICK, ROOM, NOTHING = "nick", "room", ""


class CommandContext(Protocol):
    """What a command may use: the session, the current room, a way to send
    a message, and a way to show results (who, rooms, history) to the user."""

    session: object
    clock: object
    room: str | None
    commands: "CommandTable"

    def say(self, room: str, text: str) -> None: ...

    def show(self, kind: str, **fields) -> None: ...


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    run: Callable[[CommandContext, str], object]
    completes: str = NOTHING


class CommandTable:
    def __init__(self, commands=()):
        self._commands: dict[str, Command] = {}
        for command in commands:
            self.add(command)

    def add(self, command: Command) -> None:
        if command.name in self._commands:
            raise ValueError(f"/{command.name} is defined twice")
        self._commands[command.name] = command

    def extended(self, commands) -> "CommandTable":
        """This table plus C{commands}: the console's own come on top of the shared ones."""
        return CommandTable([*self._commands.values(), *commands])

    def __iter__(self):
        return iter(sorted(self._commands.values(), key=lambda c: c.name))

    def names(self) -> list[str]:
        return sorted(self._commands)

    def get(self, name: str) -> Command | None:
        return self._commands.get(name.lower())

    def run(self, context: CommandContext, line: str):
        """Run one input line: a command, or (plain text) a message to the current
        room. A leading // sends a text starting with /. @return: a Deferred or None."""
        line = line.rstrip("\r\n")
        if not line.strip():
            return None
        if not line.startswith("/") or line.startswith("//"):
            context.say(current_room(context), line[1:] if line.startswith("//") else line)
            return None
        name, _, rest = line[1:].partition(" ")
        command = self.get(name)
        if command is None:
            raise WireError("UNKNOWN_COMMAND", f"unknown command /{name}; /help lists them")
        return command.run(context, rest.strip())


def current_room(context: CommandContext) -> str:
    if context.room is None:
        raise WireError("NO_ROOM", "no current room: /join one first")
    return context.room


def words(rest: str, count: int, usage: str) -> list[str]:
    """The first C{count} words of C{rest}, the last one taking the remainder."""
    found = rest.split(None, count - 1) if rest else []
    if len(found) < count:
        raise WireError("BAD_ARGUMENTS", f"usage: {usage}")
    return found


@defer.inlineCallbacks
def _join(context, rest):
    room, _, password = rest.partition(" ")
    if not room:
        raise WireError("BAD_ARGUMENTS", "usage: /join #room [password]")
    joined = yield context.session.join(room, password or None)
    context.room = joined.name


def _part(context, rest):
    room = rest or current_room(context)
    if context.room and fold(room) == fold(context.room):
        context.room = None
    return context.session.part(room)


def _invite(context, rest):
    return context.session.invite(current_room(context), words(rest, 1, "/invite NICK")[0])


def _kick(context, rest, ban=False):
    nick, _, reason = rest.partition(" ")
    words(nick, 1, f"/{'ban' if ban else 'kick'} NICK [reason]")
    return context.session.kick(current_room(context), nick, reason or None, ban=ban)


def _unban(context, rest):
    return context.session.unban(current_room(context), words(rest, 1, "/unban NICK")[0])


def _rotate(context, rest):
    return context.session.rotate(current_room(context), "requested by a member")


def _history_policy(context, rest):
    if rest not in ("joined", "shared"):
        raise WireError("BAD_ARGUMENTS", "usage: /history_policy joined|shared")
    return context.session.rotate(current_room(context), f"history policy now {rest}",
                                  history=rest)


def _topic(context, rest):
    return context.session.set_topic(current_room(context), rest)


_SET_USAGE = "/set invite_only on|off, /set password TEXT, or /set retention DAYS"


def _set(context, rest):
    setting, value = (words(rest, 2, _SET_USAGE) if " " in rest else (rest, ""))
    if setting not in ("invite_only", "password", "retention"):
        raise WireError("BAD_ARGUMENTS", f"usage: {_SET_USAGE}")
    return context.session.configure(current_room(context), setting, value or None)


@defer.inlineCallbacks
def _who(context, rest):
    room = rest or current_room(context)
    members = yield context.session.who(room)
    context.show("who", room=room, members=members)


@defer.inlineCallbacks
def _rooms(context, rest):
    rooms = yield context.session.list_rooms()
    context.show("rooms", rooms=rooms)


@defer.inlineCallbacks
def _history(context, rest):
    count = int(rest) if rest.isdigit() else 20
    room = current_room(context)
    for message in (yield context.session.history(room, count)):
        context.show("message", history=True, **message)


def _verify(context, rest):
    found = rest.split()
    if len(found) not in (1, 2) or (len(found) == 2 and found[1].lower() != "yes"):
        raise WireError("BAD_ARGUMENTS", "usage: /verify NICK, then /verify NICK yes if the "
                                         "numbers match")
    return context.session.verify(found[0], confirm=len(found) == 2)


def _role(context, rest):
    nick, role = words(rest, 2, "/role NICK owner|op|member")
    if role not in ("owner", "op", "member"):
        raise WireError("BAD_ARGUMENTS", "usage: /role NICK owner|op|member")
    return context.session.set_role(current_room(context), nick, role)


def _roomcode(context, rest):
    context.session.room_code(rest or current_room(context))


def _accept(context, rest):
    context.session.accept(words(rest, 1, "/accept NICK")[0])


def _wait(context, rest):
    try:
        seconds = float(rest)
    except ValueError:
        raise WireError("BAD_ARGUMENTS", "usage: /wait SECONDS") from None
    return task.deferLater(context.clock, max(0.0, seconds), lambda: None)


def _help(context, rest):
    context.show("help", commands=[{"usage": c.usage, "help": c.help} for c in context.commands])


SHARED_COMMANDS = CommandTable([
    Command("help", "/help", "list the commands (and, in the console, the keys)", _help),
    Command("join", "/join #room [password]", "join a room, creating it if it does not exist",
            _join, ROOM),
    Command("part", "/part [#room]", "leave a room (default: the current one)", _part, ROOM),
    Command("invite", "/invite NICK", "invite someone to the current room (signed by you)",
            _invite, NICK),
    Command("kick", "/kick NICK [reason]", "remove a member from the current room", _kick, NICK),
    Command("ban", "/ban NICK [reason]", "remove a member and keep them out",
            lambda c, r: _kick(c, r, ban=True), NICK),
    Command("unban", "/unban NICK", "let a banned user join again", _unban, NICK),
    Command("topic", "/topic TEXT", "set the current room's topic", _topic),
    Command("set", "/set invite_only on|off | /set password [TEXT] | /set retention DAYS",
            "owner: make the room invite-only, set or clear its join password, or keep its "
            "messages fewer days than the server does (0: as the server does)", _set),
    Command("rotate", "/rotate", "make a new room key now (after a member leaves, say)",
            _rotate),
    Command("history_policy", "/history_policy joined|shared",
            "whether newcomers may read what was said before they joined", _history_policy),
    Command("who", "/who [#room]", "members, their roles and whether they are online",
            _who, ROOM),
    Command("rooms", "/rooms", "the public rooms on this server", _rooms),
    Command("history", "/history [COUNT]", "show earlier messages of the current room",
            _history),
    Command("verify", "/verify NICK [yes]",
            "show the safety number to compare with NICK in person; with yes, record that "
            "it matched (NICK is then verified)", _verify, NICK),
    Command("role", "/role NICK owner|op|member",
            "owner: make a member an op (who may invite, kick and ban), or hand over the room",
            _role, NICK),
    Command("roomcode", "/roomcode [#room]",
            "the room's code: members who see the same code at the same entry are shown the "
            "same room", _roomcode, ROOM),
    Command("accept", "/accept NICK", "trust NICK's new identity key after checking it",
            _accept, NICK),
    Command("wait", "/wait SECONDS", "pause before the next command (for scripts)", _wait),
])
